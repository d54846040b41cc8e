//! Transcribes a WAV file (any rate, mono) with Whisper:
//! `cargo run -p engines --example transcribe -- <ggml model> <file.wav>`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, wav] = &args[..] else {
        return Err("usage: transcribe <ggml model> <file.wav>".into());
    };
    let stt = engines::whisper::WhisperStt::load(std::path::Path::new(model), Default::default())?;
    let mut reader = hound::WavReader::open(wav)?;
    let rate = reader.spec().sample_rate;
    let samples: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
    let wide = media::resample::resample(&samples, rate, media::ENGINE_RATE)?;
    let t = stt.transcribe_blocking(&wide)?;
    println!("{}", t.text);
    eprintln!(
        "{:.2} s of audio in {:.2} s",
        t.audio_seconds, t.decode_seconds
    );
    Ok(())
}

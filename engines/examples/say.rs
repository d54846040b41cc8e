//! Speaks text with a Piper voice into a WAV file:
//! `cargo run -p engines --example say -- <models dir> "text" out.wav`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, models, text, out] = &args[..] else {
        return Err("usage: say <models dir> <text> <out.wav>".into());
    };
    let models = std::path::Path::new(models);
    let voice = engines::models::ModelId::PiperJoe.path(models);
    let tts = engines::piper::PiperTts::load(&voice, models, 1)?;
    let chunks = tts.synthesize_blocking(text)?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: agent::engine::TextToSpeech::sample_rate(&tts),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(out, spec)?;
    for c in &chunks {
        eprintln!(
            "chunk: {} samples in {:.3} s",
            c.audio.len(),
            c.synth_seconds
        );
        for s in &c.audio {
            w.write_sample(*s)?;
        }
    }
    w.finalize()?;
    Ok(())
}

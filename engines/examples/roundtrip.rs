//! Speaks each argument with Piper, passes it through the phone channel (8 kHz μ-law) and
//! transcribes it back with Whisper: `cargo run -p engines --example roundtrip -- <models> "text" …`
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let models = std::path::Path::new(&a[1]);
    let tts =
        engines::piper::PiperTts::load(&models.join("piper/en_US-joe-medium.onnx"), models, 1)
            .unwrap();
    let stt = engines::whisper::WhisperStt::load(
        &models.join("whisper/ggml-base.bin"),
        Default::default(),
    )
    .unwrap();
    for text in &a[2..] {
        let chunks = tts.synthesize_blocking(text).unwrap();
        let audio: Vec<i16> = chunks.into_iter().flat_map(|c| c.audio).collect();
        let phone = media::resample::resample(&audio, 22050, 8000).unwrap();
        let phone: Vec<i16> = phone
            .iter()
            .map(|&s| media::mulaw::decode(media::mulaw::encode(s)))
            .collect();
        let wide = media::resample::resample(&phone, 8000, 16000).unwrap();
        println!("{:?}", stt.transcribe_blocking(&wide));
    }
}

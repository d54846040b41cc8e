fn main() {
    let a: Vec<String> = std::env::args().collect();
    let models = std::path::Path::new(&a[1]);
    let tts =
        engines::piper::PiperTts::load(&models.join("piper/en_US-joe-medium.onnx"), models, 1)
            .unwrap();
    let t = std::time::Instant::now();
    let chunks = tts.synthesize_blocking(&a[2]).unwrap();
    let mut w = hound::WavWriter::create(
        &a[3],
        hound::WavSpec {
            channels: 1,
            sample_rate: 22050,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .unwrap();
    for c in &chunks {
        println!("chunk {} samples {:.3}s", c.audio.len(), c.synth_seconds);
        for s in &c.audio {
            w.write_sample(*s).unwrap();
        }
    }
    w.finalize().unwrap();
    println!("total {:?}", t.elapsed());
}

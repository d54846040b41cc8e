fn main() {
    let a: Vec<String> = std::env::args().collect();
    let stt = engines::whisper::WhisperStt::load(std::path::Path::new(&a[1]), Default::default())
        .unwrap();
    let mut r = hound::WavReader::open(&a[2]).unwrap();
    let spec = r.spec();
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    assert_eq!(spec.sample_rate, 16000);
    let t = stt.transcribe_blocking(&s).unwrap();
    println!("{t:?}");
}

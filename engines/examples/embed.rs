//! Measures all-MiniLM-L6-v2 embedding time per short sentence on one thread:
//! `cargo run --release -p engines --example embed -- <models dir> [embeddings.tsv]`
//! With a second argument, each sentence and its embedding are written there (tab-separated)
//! for comparison with another implementation.
use std::io::Write;
use std::time::Instant;

const SENTENCES: &[&str] = &[
    "Is there parking?",
    "What time do you open tomorrow?",
    "Do you take Blue Cross insurance?",
    "I'd like to book a check-up.",
    "Can I reschedule my appointment?",
    "Where is the clinic?",
    "My tooth hurts, can I come in today?",
    "Are you open on Saturdays?",
    "How much does a cleaning cost?",
    "I need a refill of my prescription.",
    "Can I speak to a nurse?",
    "Do you see children?",
    "Is Dr. Patel in on Monday?",
    "I want to cancel my appointment.",
    "Do you accept new patients?",
    "What should I bring to my first visit?",
    "Can I pay by credit card?",
    "Is the building wheelchair accessible?",
    "How long is the wait for an appointment?",
    "I think I have the flu.",
    "Do you do blood tests here?",
    "Can I get my test results over the phone?",
    "What is your fax number?",
    "Do you offer telehealth visits?",
    "My son has a fever, what should I do?",
    "Is there a bus stop nearby?",
    "Do you do vaccinations?",
    "Can I get a flu shot without an appointment?",
    "How early should I arrive?",
    "Can my husband come with me?",
    "I lost my insurance card.",
    "Do you have evening hours?",
    "Who is the doctor on call tonight?",
    "Can you send my records to another clinic?",
    "I need a sick note for work.",
    "Is there a cancellation fee?",
    "Do you treat allergies?",
    "Can I bring my dog?",
    "Where do I park my bike?",
    "Is the clinic closed on public holidays?",
    "How do I use the patient portal?",
    "Do you speak Spanish?",
    "I'm running ten minutes late.",
    "Can I book for my whole family?",
    "What's the address again?",
    "Do I need a referral?",
    "Can I get a physical for school?",
    "Is there a pharmacy in the building?",
    "How do I pay my bill?",
    "Thanks, that's all I needed.",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (models, dump) = match &args[..] {
        [_, models] => (models, None),
        [_, models, dump] => (models, Some(dump)),
        _ => return Err("usage: embed <models dir> [embeddings.tsv]".into()),
    };
    let models = std::path::Path::new(models);
    let started = Instant::now();
    let model = engines::minilm::MiniLm::load_default(models, 1)?;
    eprintln!(
        "loaded {} in {:.0} ms",
        model.model_version(),
        started.elapsed().as_secs_f64() * 1e3
    );
    // Warm-up: the first run allocates ONNX Runtime's buffers.
    model.embed("warm up")?;
    let mut times = Vec::new();
    let mut embeddings = Vec::new();
    for _round in 0..3 {
        for s in SENTENCES {
            let t = Instant::now();
            let e = model.embed(s)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            embeddings.push(e);
        }
    }
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "embed: {} sentences x3, median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        SENTENCES.len(),
        q(0.5),
        q(0.9),
        q(1.0)
    );
    let t = Instant::now();
    model.embed_batch(SENTENCES)?;
    println!(
        "embed_batch: {} sentences in {:.1} ms ({:.2} ms each)",
        SENTENCES.len(),
        t.elapsed().as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3 / SENTENCES.len() as f64
    );
    if let Some(path) = dump {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (s, e) in SENTENCES.iter().zip(&embeddings) {
            let values: Vec<String> = e.iter().map(|v| v.to_string()).collect();
            writeln!(f, "{s}\t{}", values.join(" "))?;
        }
    }
    Ok(())
}

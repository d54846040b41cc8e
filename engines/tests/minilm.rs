//! all-MiniLM-L6-v2 with the fetched model: the tokenizer agrees with the reference tokenizer
//! on the real vocabulary, embeddings match the reference runtime's, and clinic questions land
//! nearest the FAQ entry that answers them.
//!
//! Needs the model files: `scripts/test.sh` fetches them (`voxanne models fetch`) into
//! `VOXANNE_MODELS_DIR` (default `~/.cache/voxanne/models`). Like the other model tests, these
//! do not skip: a missing model is a failure naming the command that fetches it.

use std::path::PathBuf;
use std::sync::OnceLock;

use engines::minilm::{MINILM_DIMS, MINILM_MODEL_VERSION, MiniLm, cosine};

fn models_dir() -> PathBuf {
    std::env::var_os("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/voxanne/models")
        })
}

fn model() -> &'static MiniLm {
    static MODEL: OnceLock<MiniLm> = OnceLock::new();
    MODEL.get_or_init(|| {
        MiniLm::load_default(&models_dir(), 2).unwrap_or_else(|e| {
            panic!(
                "{e}: run `cargo run -p api -- models fetch` with VOXANNE_MODELS_DIR={} (scripts/test.sh does)",
                models_dir().display()
            )
        })
    })
}

/// Tokenisations by Hugging Face `tokenizers` with all-MiniLM-L6-v2's own `tokenizer.json`
/// (pieces between `[CLS]` and `[SEP]`).
const REFERENCE_TOKENS: &[(&str, &[&str])] = &[
    (
        "I'd like a check-up.",
        &["i", "'", "d", "like", "a", "check", "-", "up", "."],
    ),
    (
        "Can I reschedule my appointment with Dr. O'Neill?",
        &[
            "can",
            "i",
            "res",
            "##ched",
            "##ule",
            "my",
            "appointment",
            "with",
            "dr",
            ".",
            "o",
            "'",
            "neill",
            "?",
        ],
    ),
    (
        "Is the orthodontist available for Invisalign consultations?",
        &[
            "is",
            "the",
            "or",
            "##th",
            "##odon",
            "##tist",
            "available",
            "for",
            "in",
            "##vis",
            "##ali",
            "##gn",
            "consultation",
            "##s",
            "?",
        ],
    ),
    (
        "My prescription for amoxicillin ran out",
        &[
            "my",
            "prescription",
            "for",
            "am",
            "##ox",
            "##ici",
            "##llin",
            "ran",
            "out",
        ],
    ),
    (
        "Do you take Blue Cross/Blue Shield?",
        &[
            "do", "you", "take", "blue", "cross", "/", "blue", "shield", "?",
        ],
    ),
    (
        "It costs $45.50 — is that okay?",
        &[
            "it", "costs", "$", "45", ".", "50", "—", "is", "that", "okay", "?",
        ],
    ),
    (
        "Café déjà vu, naïve façade",
        &["cafe", "de", "##ja", "vu", ",", "naive", "facade"],
    ),
    (
        "Xylophone-shaped periodontitis",
        &[
            "x", "##yl", "##ophone", "-", "shaped", "period", "##ont", "##itis",
        ],
    ),
    (
        "emails: jane.doe@example.com",
        &[
            "emails", ":", "jane", ".", "doe", "@", "example", ".", "com",
        ],
    ),
    ("👍 thanks!!", &["[UNK]", "thanks", "!", "!"]),
];

#[test]
fn the_tokenizer_matches_the_reference_on_the_real_vocabulary() {
    let tok = model().tokenizer();
    assert_eq!(tok.len(), 30_522);
    for (text, expected) in REFERENCE_TOKENS {
        assert_eq!(tok.tokenize(text), *expected, "{text}");
    }
}

#[test]
fn embeddings_match_the_reference_runtime() {
    // The first values of "Is there parking?" from onnxruntime's Python API on the same file
    // (mean pooling, L2 norm); a runtime or pooling mistake moves them by far more than 1e-3.
    let reference = [
        0.06743f32, 0.04638, -0.00061, -0.0291, 0.01047, 0.07244, 0.06693, -0.03091,
    ];
    let e = model().embed("Is there parking?").unwrap();
    for (i, (got, want)) in e.iter().zip(reference).enumerate() {
        assert!((got - want).abs() < 1e-3, "dim {i}: {got} vs {want}");
    }
    assert_eq!(model().model_version(), MINILM_MODEL_VERSION);
}

#[test]
fn embeddings_have_unit_norm_and_the_model_width() {
    let long = "The clinic is open on weekdays. ".repeat(60); // ~360 tokens: truncated
    for text in ["Is there parking?", "", "?!", long.as_str()] {
        let e = model().embed(text).unwrap();
        assert_eq!(e.len(), MINILM_DIMS);
        let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
    }
}

#[test]
fn a_batch_gives_the_same_embeddings_as_one_at_a_time() {
    let texts = [
        "Is there parking?",
        "My tooth hurts really badly, can I come in today?",
        "Hi",
    ];
    let batch = model().embed_batch(&texts).unwrap();
    assert_eq!(batch.len(), texts.len());
    for (text, b) in texts.iter().zip(&batch) {
        let one = model().embed(text).unwrap();
        assert!(cosine(&one, b) > 0.9999, "{text}: {}", cosine(&one, b));
    }
    assert!(model().embed_batch(&[]).unwrap().is_empty());
}

/// A clinic's FAQ answers.
const FAQ: &[&str] = &[
    "There is free parking behind the building.",
    "We are open Monday to Friday, 8am to 6pm.",
    "We accept most major insurance plans, including Blue Cross and Aetna.",
    "The clinic is at 42 Harbour Street, next to the pharmacy.",
    "Please give us 24 hours notice to cancel or reschedule an appointment.",
    "We are accepting new patients; bring photo ID and your insurance card.",
    "Prescription refills can be requested through the patient portal.",
    "We take cash, credit cards and HSA cards.",
];

#[test]
fn clinic_questions_are_nearest_the_answer_that_answers_them() {
    // (caller's question, index of the FAQ answer)
    let questions: &[(&str, usize)] = &[
        ("Is there parking?", 0),
        ("Where can I leave my car?", 0),
        ("What time do you close?", 1),
        ("Are you open on weekends?", 1),
        ("Do you take my insurance?", 2),
        ("Where are you located?", 3),
        ("I need to cancel my appointment", 4),
        ("Are you taking new patients?", 5),
        ("I need a refill of my medication", 6),
        ("Can I pay by card?", 7),
    ];
    let answers = model().embed_batch(FAQ).unwrap();
    let mut misses = Vec::new();
    for &(question, right) in questions {
        let q = model().embed(question).unwrap();
        let scores: Vec<f32> = answers.iter().map(|a| cosine(&q, a)).collect();
        let best = (0..scores.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap();
        if best != right {
            misses.push(format!(
                "{question:?} → {:?} ({:.2}), not {:?} ({:.2})",
                FAQ[best], scores[best], FAQ[right], scores[right]
            ));
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
}

#[test]
fn parking_is_closer_to_parking_than_to_opening_hours() {
    let m = model();
    let q = m.embed("Is there parking?").unwrap();
    let parking = m
        .embed("There is free parking behind the building")
        .unwrap();
    let hours = m.embed("We are open Monday to Friday").unwrap();
    assert!(cosine(&q, &parking) > cosine(&q, &hours) + 0.1);
}

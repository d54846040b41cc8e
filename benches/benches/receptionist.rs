//! The receptionist's own latency per turn (understanding + policy + slot search), next to
//! which speech takes seconds: one caller turn from a fresh call state, over the in-memory tools
//! (the store's own cost is measured by `storage`'s throughput example).

use std::hint::black_box;

use chrono::{NaiveDate, NaiveDateTime};
use criterion::{Criterion, criterion_group, criterion_main};

use receptionist::dialogue::{CallContext, Dialogue, State};
use receptionist::testing::{MemoryTools, example_clinic};

fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 12, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

fn turns(c: &mut Criterion) {
    let clinic = example_clinic();
    let tools = MemoryTools::new(&clinic);
    let context = CallContext {
        call_id: "CAbench".into(),
        caller: Some("+447700900123".into()),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let d = Dialogue {
        clinic: &clinic,
        context: &context,
        tools: &tools,
        now: now(),
    };
    let mut g = c.benchmark_group("receptionist_turn");
    for (name, said) in [
        (
            "booking_with_slot_search",
            "Um, yeah, could I book a cleaning next Tuesday afternoon, it's for my son",
        ),
        ("exact_time", "Can I book a filling for tomorrow at 2?"),
        ("hours_question", "What are your opening hours?"),
        (
            "medical_escalation",
            "My tooth is killing me, what painkillers can I take?",
        ),
        ("knowledge_question", "Is there parking?"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut state = State::default();
                rt.block_on(d.respond(&mut state, None, black_box(said)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, turns);
criterion_main!(benches);

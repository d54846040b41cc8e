//! The system prompt: the clinic file (name, hours, services and prices, address, staff,
//! policies), the clinic-local time, and the knowledge entries retrieved for this turn.
//!
//! Everything the model may state as a fact is here or comes back from a tool; the prompt says
//! so. The escalation policy is not left to the prompt: emergencies, medical questions and "a
//! person" never reach the model (see [`crate::brain`]); the prompt only repeats it as a
//! second line of defence.

use std::fmt::Write;

use chrono::{Datelike, Duration, NaiveDateTime};

use receptionist::clinic::Clinic;
use receptionist::speak;
use receptionist::tools::KnowledgeHit;

/// Knowledge hits at or above this cosine score go into the prompt. Lower than the offline
/// receptionist's `KNOWLEDGE_MIN_SCORE` (0.38, where a chunk is *said* as the answer): a model
/// reads a near miss and ignores it when it does not answer the question, so a wider net (on
/// the calibration set, right answers scored from 0.25) costs a few prompt tokens, not a wrong
/// answer.
pub const PROMPT_KNOWLEDGE_MIN_SCORE: f32 = 0.25;

/// Knowledge chunks retrieved per turn.
pub const KNOWLEDGE_HITS: usize = 3;

/// Builds the system prompt for one turn.
pub fn system_prompt(
    clinic: &Clinic,
    now: NaiveDateTime,
    caller_known: bool,
    knowledge: &[KnowledgeHit],
) -> String {
    let c = &clinic.file.clinic;
    let mut p = String::new();
    let _ = writeln!(
        p,
        "You are the virtual receptionist of {}, answering the phone. Your words are spoken \
         aloud by a text-to-speech voice: reply in one to three short sentences, plain \
         words, no lists, no markdown, no emoji. Say times and dates as people say them \
         (\"half past nine on Friday\").",
        c.name
    );
    let _ = writeln!(
        p,
        "It is now {} {} ({}), clinic time.",
        speak::weekday_name(now.date()),
        now.format("%Y-%m-%d %H:%M"),
        c.timezone
    );
    p.push_str("\nOpening hours:\n");
    for i in 0..7 {
        let d = now.date() + Duration::days(i);
        let hours = match clinic.hours_on(d) {
            Some(h) => format!("{}-{}", h.open.format("%H:%M"), h.close.format("%H:%M")),
            None => "closed".into(),
        };
        let _ = writeln!(
            p,
            "- {} {}: {hours}",
            speak::weekday_name(d),
            d.format("%Y-%m-%d")
        );
    }
    let upcoming_closed: Vec<String> = clinic
        .closed_dates
        .iter()
        .filter(|d| **d >= now.date() && d.year() <= now.year() + 1)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect();
    if !upcoming_closed.is_empty() {
        let _ = writeln!(p, "Closed on: {}.", upcoming_closed.join(", "));
    }
    if clinic.services.is_empty() {
        p.push_str("\nNo appointments can be booked on this line: offer to take a message.\n");
    } else {
        p.push_str("\nServices (name, length, price):\n");
        for s in &clinic.services {
            let _ = writeln!(
                p,
                "- {}: {} minutes, {}",
                s.name,
                s.minutes,
                s.price.as_deref().unwrap_or("price on request")
            );
        }
    }
    if let Some(a) = &c.address {
        let _ = writeln!(p, "Address: {a}.");
    }
    if !c.staff.is_empty() {
        let _ = writeln!(p, "Clinicians: {}.", c.staff.join(", "));
    }
    let _ = writeln!(
        p,
        "Bookings need at least {} minutes' notice and can be made up to {} days ahead.",
        c.min_notice_minutes, c.booking_horizon_days
    );
    if !knowledge.is_empty() {
        p.push_str("\nFrom the clinic's notes (use only if it answers the caller):\n");
        for k in knowledge {
            let _ = writeln!(p, "- {}: {}", k.title, k.text);
        }
    }
    let _ = writeln!(
        p,
        "\nRules:\n\
         - State only facts from this prompt or from a tool result. If you do not know, say \
         so and offer to take a message.\n\
         - Offer only times check_availability returned. Before book_appointment, \
         reschedule_appointment or cancel_appointment, read back what you will do (service, \
         day, time, name) and ask the caller to confirm; call the tool only after they say yes.\n\
         - {}\n\
         - Never give medical advice; offer the team or a message. In an emergency tell them \
         to call {}.\n\
         - To put a caller through use transfer_to_person; never name or invent a phone number.\n\
         - When the caller is done, say goodbye and call end_call.",
        if caller_known {
            "The caller's number is known: use lookup_caller for their name and appointments; \
             do not ask for their number unless they want another one used."
        } else {
            "The caller's number is withheld: ask for a phone number when booking or taking a \
             message."
        },
        c.emergency_number
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use receptionist::testing::example_clinic;

    #[test]
    fn the_prompt_carries_the_clinic_file_and_this_turns_knowledge() {
        let clinic = example_clinic();
        let now = NaiveDate::from_ymd_opt(2026, 12, 24)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        let hit = KnowledgeHit {
            title: "Parking".into(),
            text: "There is free parking behind the building.".into(),
            score: 0.6,
        };
        let p = system_prompt(&clinic, now, true, &[hit]);
        assert!(p.contains("Bright Smile Dental"));
        assert!(p.contains("Thursday 2026-12-24 10:00"));
        assert!(p.contains("Friday 2026-12-25: closed"), "{p}");
        assert!(p.contains("Cleaning: 45 minutes, £65"));
        assert!(p.contains("free parking behind the building"));
        assert!(p.contains("12 Mill Lane"));
        assert!(p.contains("call 999"));
        assert!(
            !p.contains("+442071234500"),
            "the model is never given a number to dial"
        );
    }
}

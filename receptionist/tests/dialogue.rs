//! Whole conversations on text with the receptionist: bookings with corrections, taken and
//! closed slots, answers from the clinic file and knowledge, escalation, returning callers,
//! idempotent retries and barge-in over a confirmation. Clinic-local "now" is Tuesday
//! 2026-12-01 10:00 (Europe/London) unless a test says otherwise.

mod common;

use agent::engine::Action;
use chrono::Timelike;
use common::{CALLER, Convo, said, utc};
use receptionist::slots;

const NOW: &str = "2026-12-01T10:00";

fn local_start(c: &Convo, a: &receptionist::tools::Appointment) -> chrono::NaiveDateTime {
    slots::local(&c.clinic, a.starts_at)
}

#[tokio::test]
async fn a_booking_by_conversation_lands_with_service_day_time_name_and_number() {
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c.say("Yeah hi, um, can I book in for a check up?").await;
    assert!(said(&r).contains("What day would suit you"), "{}", c.dump());
    let r = c.say("Thursday afternoon if you can").await;
    assert!(
        said(&r).contains("Thursday the 3rd of December"),
        "{}",
        c.dump()
    );
    assert!(
        said(&r).contains("either"),
        "two slots offered: {}",
        c.dump()
    );
    // Said as a person says it: "I have Thursday the 3rd of December at two or half past
    // three", not "I have on Thursday…, or at half past three".
    assert!(
        said(&r).contains("I have Thursday the 3rd of December at ")
            && !said(&r).contains(" or at "),
        "{}",
        c.dump()
    );
    let r = c.say("the first one").await;
    assert!(said(&r).contains("name"), "{}", c.dump());
    let r = c.say("It's Gareth Jones.").await;
    assert!(said(&r).contains("Shall I book that?"), "{}", c.dump());
    assert!(said(&r).contains("Gareth Jones"), "{}", c.dump());
    assert!(
        c.tools.booked().is_empty(),
        "nothing is booked before the yes"
    );
    let r = c.say("Yes please.").await;
    assert!(said(&r).contains("You're booked in"), "{}", c.dump());
    let booked = c.tools.booked();
    assert_eq!(booked.len(), 1, "{}", c.dump());
    let b = &booked[0];
    assert_eq!(b.service, "Check-up");
    assert_eq!(b.name, "Gareth Jones");
    assert_eq!(b.phone, CALLER);
    let start = local_start(&c, b);
    assert_eq!(start.date().to_string(), "2026-12-03");
    assert!(start.hour() >= 12, "afternoon: {start}");
    assert_eq!((b.ends_at - b.starts_at).num_minutes(), 30);
    assert_eq!(r.tools.last().map(|t| t.name), Some("book"));
}

#[tokio::test]
async fn several_slots_in_one_turn_and_an_exact_free_time() {
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c.say("Can I book a filling for tomorrow at 2?").await;
    assert!(
        said(&r).contains("tomorrow at two o'clock in the afternoon is free"),
        "{}",
        c.dump()
    );
    c.say("My name is Aisha Rahman.").await;
    let r = c.say("Yep, perfect.").await;
    assert!(said(&r).contains("booked"), "{}", c.dump());
    let b = &c.tools.booked()[0];
    assert_eq!(b.service, "Filling");
    assert_eq!(local_start(&c, b).to_string(), "2026-12-02 14:00:00");
    assert_eq!((b.ends_at - b.starts_at).num_minutes(), 60);
}

#[tokio::test]
async fn a_taken_time_offers_the_nearest_free_ones() {
    let c0 = Convo::at(NOW, Some(CALLER));
    c0.tools.seed(
        "Cleaning",
        utc(&c0.clinic, "2026-12-02T14:00"),
        60,
        "Someone",
        "+447700900999",
    );
    let mut c = Convo::with(NOW, Some(CALLER), c0.tools.clone(), Default::default());
    let r = c
        .say("Could I get booked in for a check-up tomorrow at 2pm?")
        .await;
    let s = said(&r);
    assert!(s.contains("taken"), "{}", c.dump());
    assert!(
        s.contains("half past one") && s.contains("three o'clock"),
        "{}",
        c.dump()
    );
    let r = c.say("three is fine").await;
    assert!(said(&r).contains("name"), "{}", c.dump());
}

#[tokio::test]
async fn corrections_at_any_point_change_the_booking() {
    let mut c = Convo::at(NOW, Some(CALLER));
    c.say("I'd like a cleaning on Thursday at 10").await;
    c.say("Michael Brown").await;
    let r = c.say("No, sorry, Wednesday").await;
    // Wednesday at ten is free: read back again with the new day.
    assert!(
        said(&r).contains("Wednesday the 2nd of December") || said(&r).contains("tomorrow"),
        "{}",
        c.dump()
    );
    let r = c.say("actually make it 4").await;
    assert!(said(&r).contains("four o'clock"), "{}", c.dump());
    c.say("yes").await;
    let b = &c.tools.booked()[0];
    assert_eq!(
        local_start(&c, b).to_string(),
        "2026-12-02 16:00:00",
        "{}",
        c.dump()
    );
    assert_eq!(b.name, "Michael Brown");
}

#[tokio::test]
async fn a_closed_day_is_said_and_the_next_open_days_offered() {
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c.say("Can I book a check-up on Sunday?").await;
    let s = said(&r);
    assert!(s.contains("closed on Sunday"), "{}", c.dump());
    assert!(
        s.contains("Monday the 7th") || s.contains("either"),
        "{}",
        c.dump()
    );
    // Christmas Day is a closed date.
    let r = c.say("what about the 25th").await;
    assert!(said(&r).contains("closed"), "{}", c.dump());
}

#[tokio::test]
async fn prices_and_hours_come_from_the_clinic_file_read_naturally() {
    let mut c = Convo::at(NOW, None);
    let r = c.say("How much is a check-up?").await;
    assert!(
        said(&r).contains("A check-up is fifty-five pounds."),
        "{}",
        said(&r)
    );
    let r = c.say("What are your opening hours?").await;
    let s = said(&r);
    assert!(
        s.contains("Monday to Wednesday from half past eight to half past five"),
        "{s}"
    );
    assert!(s.contains("closed on Sunday"), "{s}");
    let r = c.say("How late are you open on a Thursday?").await;
    assert!(said(&r).contains("seven o'clock"), "{}", said(&r));
    let r = c.say("What's your address?").await;
    assert!(said(&r).contains("12 Mill Lane"), "{}", said(&r));
    let r = c
        .say("Hi, yeah, how much is a check up and can I book one for Friday?")
        .await;
    let s = said(&r);
    assert!(
        s.contains("fifty-five pounds") && s.contains("Friday"),
        "{s}"
    );
}

#[tokio::test]
async fn knowledge_answers_are_grounded_and_unknowns_are_admitted() {
    let mut c = Convo::at(NOW, None);
    let r = c.say("Is there parking?").await;
    assert!(
        said(&r).contains("free parking behind the building"),
        "{}",
        said(&r)
    );
    let r = c.say("What's the weather like there?").await;
    let s = said(&r);
    assert!(
        s.contains("don't have that information") || s.contains("trouble"),
        "{s}"
    );
    assert!(s.contains("message"), "{s}");
}

#[tokio::test]
async fn medical_questions_are_never_answered_and_go_to_a_person_when_open() {
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c
        .say("My tooth is killing me, what painkillers can I take?")
        .await;
    let s = said(&r);
    assert!(s.contains("can't give medical advice"), "{s}");
    assert!(!s.to_lowercase().contains("ibuprofen") && !s.to_lowercase().contains("paracetamol"));
    assert_eq!(
        r.action,
        Some(Action::Transfer {
            to: "+442071234500".into()
        })
    );
    assert!(
        r.notes
            .iter()
            .any(|(k, d)| *k == "escalation" && d["kind"] == "medical")
    );
}

#[tokio::test]
async fn medical_questions_out_of_hours_become_an_urgent_message() {
    let mut c = Convo::at("2026-12-01T20:00", Some(CALLER));
    let r = c
        .say("I think I've got an abscess, do I need antibiotics?")
        .await;
    assert_eq!(r.action, None);
    assert!(said(&r).contains("closed"), "{}", said(&r));
    let r = c.say("It's Sarah Connor").await;
    assert!(said(&r).contains("number"), "{}", c.dump());
    let r = c.say("yes that's fine").await;
    assert!(said(&r).contains("urgent"), "{}", c.dump());
    let m = c.tools.messages();
    assert_eq!(m.len(), 1);
    assert!(m[0].urgent);
    assert_eq!(m[0].name, "Sarah Connor");
    assert_eq!(m[0].phone, CALLER);
}

#[tokio::test]
async fn emergencies_are_told_to_call_the_emergency_number() {
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c.say("My tongue's swelling up and I feel faint.").await;
    assert!(said(&r).contains("9 9 9"), "{}", said(&r));
    assert!(
        r.notes
            .iter()
            .any(|(k, d)| *k == "escalation" && d["kind"] == "emergency")
    );
}

#[tokio::test]
async fn a_person_is_the_clinics_number_during_hours_and_a_message_otherwise() {
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c.say("Can I speak to someone please?").await;
    assert_eq!(
        r.action,
        Some(Action::Transfer {
            to: "+442071234500".into()
        })
    );
    // Saying a number does not change where the call goes.
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c.say("put me through to 07911 123456 right now").await;
    assert_eq!(
        r.action,
        Some(Action::Transfer {
            to: "+442071234500".into()
        })
    );
    let mut c = Convo::at("2026-12-06T11:00", Some(CALLER)); // Sunday
    let r = c.say("Is there a receptionist I can speak to?").await;
    assert_eq!(r.action, None);
    assert!(said(&r).contains("message"), "{}", said(&r));
}

#[tokio::test]
async fn a_returning_caller_moves_an_appointment_without_re_asking() {
    let c0 = Convo::at(NOW, Some(CALLER));
    c0.tools.seed(
        "Check-up",
        utc(&c0.clinic, "2026-12-03T10:00"),
        30,
        "Gareth Jones",
        CALLER,
    );
    let mut c = Convo::with(NOW, Some(CALLER), c0.tools.clone(), Default::default());
    let r = c
        .say("I need to move my Thursday appointment to Friday morning")
        .await;
    assert!(
        said(&r).contains("Friday the 4th of December"),
        "{}",
        c.dump()
    );
    let r = c.say("the first one").await;
    assert!(said(&r).contains("move your check-up"), "{}", c.dump());
    assert!(!said(&r).contains(" to on "), "{}", c.dump());
    let r = c.say("yes").await;
    assert!(said(&r).contains("Done"), "{}", c.dump());
    let booked = c.tools.booked();
    assert_eq!(booked.len(), 1);
    let start = local_start(&c, &booked[0]);
    assert_eq!(start.date().to_string(), "2026-12-04");
    assert!(start.hour() < 12);
}

#[tokio::test]
async fn a_returning_caller_is_greeted_by_name() {
    let c0 = Convo::at(NOW, Some(CALLER));
    c0.tools.seed(
        "Check-up",
        utc(&c0.clinic, "2026-12-03T10:00"),
        30,
        "Gareth Jones",
        CALLER,
    );
    let c = Convo::with(NOW, Some(CALLER), c0.tools.clone(), Default::default());
    c.session.prepare().await;
    assert!(
        c.session
            .opening()
            .starts_with("Hello Gareth! Thank you for calling Bright Smile Dental")
    );
    let stranger = Convo::with(
        NOW,
        Some("+447700900999"),
        c0.tools.clone(),
        Default::default(),
    );
    stranger.session.prepare().await;
    assert!(
        stranger
            .session
            .opening()
            .starts_with("Thank you for calling")
    );
}

#[tokio::test]
async fn a_returning_caller_cancels_after_confirming() {
    let c0 = Convo::at(NOW, Some(CALLER));
    c0.tools.seed(
        "Cleaning",
        utc(&c0.clinic, "2026-12-02T09:00"),
        45,
        "Gareth Jones",
        CALLER,
    );
    let mut c = Convo::with(NOW, Some(CALLER), c0.tools.clone(), Default::default());
    let r = c
        .say("Hi, I'm not going to be able to come in tomorrow, can you cancel it please?")
        .await;
    assert!(
        said(&r).contains("cancel your cleaning tomorrow at nine"),
        "{}",
        c.dump()
    );
    assert_eq!(c.tools.booked().len(), 1);
    let r = c.say("yes please").await;
    assert!(said(&r).contains("cancelled"), "{}", c.dump());
    assert!(c.tools.booked().is_empty());
}

#[tokio::test]
async fn not_understood_twice_offers_a_person_or_a_message() {
    let mut c = Convo::at(NOW, None);
    let r = c.say("purple monkey dishwasher").await;
    assert!(said(&r).contains("didn't quite catch"), "{}", said(&r));
    let r = c.say("banana telephone").await;
    assert!(
        said(&r).contains("put you through") && said(&r).contains("message"),
        "{}",
        said(&r)
    );
    let r = c.say("a message please").await;
    assert!(said(&r).contains("pass on"), "{}", c.dump());
}

#[tokio::test]
async fn goodbye_hangs_up() {
    let mut c = Convo::at(NOW, None);
    let r = c.say("That's all, thanks, bye.").await;
    assert_eq!(r.action, Some(Action::Hangup));
}

#[tokio::test]
async fn an_abandoned_reply_asked_again_never_books_twice() {
    let mut c = Convo::at(NOW, Some(CALLER));
    c.say("Can I book a filling for tomorrow at 2?").await;
    c.say("Aisha Rahman").await;
    // The caller says yes; the reply is abandoned unheard (they kept talking) and the core asks
    // again with both utterances.
    c.say_abandoned("yes").await;
    assert_eq!(c.tools.booked().len(), 1);
    let r = c.say("yes that's right").await;
    assert!(said(&r).contains("booked"), "{}", c.dump());
    assert_eq!(
        c.tools.booked().len(),
        1,
        "the same booking, not a second one"
    );
}

#[tokio::test]
async fn a_confirmation_cut_off_by_barge_in_is_repeated() {
    let mut c = Convo::at(NOW, Some(CALLER));
    c.say("Can I book a filling for tomorrow at 2?").await;
    c.say("Aisha Rahman").await;
    c.say("yes").await;
    c.heard_only("You're booked");
    let r = c.say("sorry what was that").await;
    assert!(
        said(&r).starts_with("Just so you know, your filling is booked tomorrow at two o'clock"),
        "{}",
        said(&r)
    );
    assert_eq!(c.tools.booked().len(), 1);
}

#[tokio::test]
async fn a_database_that_is_down_gets_an_apology_not_silence() {
    let tools = std::sync::Arc::new(receptionist::testing::MemoryTools::failing());
    let mut c = Convo::with(NOW, Some(CALLER), tools, Default::default());
    let r = c.say("Can I book a check-up for Thursday?").await;
    assert!(said(&r).contains("can't see the diary"), "{}", said(&r));
    assert!(r.notes.iter().any(|(k, _)| *k == "tool_error"));
}

#[tokio::test]
async fn a_reminder_call_is_confirmed_or_moved() {
    let c0 = Convo::at(NOW, Some(CALLER));
    let appt = c0.tools.seed(
        "Check-up",
        utc(&c0.clinic, "2026-12-03T10:00"),
        30,
        "Gareth Jones",
        CALLER,
    );
    let mut c = Convo::with(
        NOW,
        Some(CALLER),
        c0.tools.clone(),
        receptionist::dialogue::Direction::Reminder(appt.clone()),
    );
    let opening = c.session.opening();
    assert!(
        opening
            .contains("remind you of your check-up on Thursday the 3rd of December at ten o'clock"),
        "{opening}"
    );
    let r = c.say("yes I'll be there").await;
    assert!(
        r.notes.iter().any(|(k, _)| *k == "reminder_confirmed"),
        "{}",
        c.dump()
    );

    let mut c = Convo::with(
        NOW,
        Some(CALLER),
        c0.tools.clone(),
        receptionist::dialogue::Direction::Reminder(appt),
    );
    let r = c.say("no I can't, can we do Friday morning instead").await;
    assert!(said(&r).contains("Friday"), "{}", c.dump());
}

#[tokio::test]
async fn a_full_day_offers_the_nearest_other_days() {
    let c0 = Convo::at(NOW, Some(CALLER));
    // Thursday 3 December is booked solid, 08:30 to 19:00.
    c0.tools.seed(
        "Whitening",
        utc(&c0.clinic, "2026-12-03T08:30"),
        630,
        "Busy Day",
        "+447700900998",
    );
    let mut c = Convo::with(NOW, Some(CALLER), c0.tools.clone(), Default::default());
    let r = c.say("Can I book a check-up on Thursday?").await;
    let s = said(&r);
    assert!(s.contains("don't have anything then"), "{}", c.dump());
    assert!(!s.contains("Thursday the 3rd"), "{}", c.dump());
    assert!(
        s.contains("Friday the 4th") || s.contains("Wednesday"),
        "{}",
        c.dump()
    );
}

#[tokio::test]
async fn a_caller_the_recogniser_cannot_hear_is_offered_a_person_or_a_message() {
    let mut c = Convo::at(NOW, Some(CALLER));
    let r = c.say(receptionist::dialogue::UNHEARD_INPUT).await;
    assert!(said(&r).contains("trouble hearing you"), "{}", said(&r));
    let r = c.say("a message please").await;
    assert!(said(&r).contains("pass on"), "{}", c.dump());
}

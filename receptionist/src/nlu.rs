//! Understanding one caller turn: intents (several may be present: "how much is a check-up and
//! can I book one for Friday"), and the slots a booking needs (service, day and time, name,
//! phone, who it is for), plus yes/no and choices between offered slots.
//!
//! Rules over the normalised text, in the Rasa vocabulary: intents and entities come from here,
//! the policy that acts on them is [`crate::dialogue`]. Phrase lists are matched on word
//! boundaries; every list says what it is for.

use chrono::NaiveDateTime;

use crate::clinic::Clinic;
use crate::text;
use crate::when::{self, WhenQuery};

/// What the caller wants, in priority order when several are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intent {
    /// Life-threatening words: tell them to call the emergency number.
    Emergency,
    /// Symptoms, medication, diagnosis, "should I…": never answered, escalated.
    Medical,
    /// A human: "can I speak to someone", "put me through", "are you a robot".
    Person,
    /// Leave a message / be called back.
    Message,
    Cancel,
    Reschedule,
    Book,
    Hours,
    Location,
    Price,
    /// "Do you do braces?": a service question.
    Services,
    /// Any other question, answered from the clinic's knowledge.
    Question,
    /// "Hello? Can you hear me?"
    CheckLine,
    WrongNumber,
    Goodbye,
}

/// One turn, understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Understanding {
    pub raw: String,
    pub norm: String,
    pub intents: Vec<Intent>,
    /// Index into `Clinic::services`.
    pub service: Option<usize>,
    pub when: WhenQuery,
    pub yes: bool,
    pub no: bool,
    /// A name the caller gave ("my name is…", "it's…"); see also [`bare_name`].
    pub name: Option<String>,
    pub phone: Option<String>,
    /// "for my son": who the appointment is for.
    pub for_whom: Option<String>,
    /// "the first one" / "the later one": 0-based choice among offered slots (`usize::MAX`: the
    /// last).
    pub choice: Option<usize>,
    /// Urgency words ("as soon as possible", "broke", "really hurts") without a medical question.
    pub urgent: bool,
}

impl Understanding {
    pub fn has(&self, intent: Intent) -> bool {
        self.intents.contains(&intent)
    }

    /// The highest-priority intent.
    pub fn top(&self) -> Option<Intent> {
        self.intents.first().copied()
    }

    /// Anything a booking form can use.
    pub fn has_booking_slots(&self) -> bool {
        self.service.is_some() || self.when.day.is_some() || self.when.time.is_some()
    }
}

/// Is `phrase` in `norm` on word boundaries? (`norm` is normalised text.)
pub fn has_phrase(norm: &str, phrase: &str) -> bool {
    let hay = format!(" {norm} ");
    hay.contains(&format!(" {phrase} "))
}

fn any(norm: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|p| has_phrase(norm, p))
}

fn any_word_prefix(norm: &str, prefixes: &[&str]) -> bool {
    norm.split_whitespace()
        .any(|w| prefixes.iter().any(|p| w.starts_with(p)))
}

/// Emergencies (the clinic cannot help; the caller must ring the emergency number).
const EMERGENCY: &[&str] = &[
    "chest pain",
    "chest pains",
    "can't breathe",
    "cannot breathe",
    "can not breathe",
    "cant breathe",
    "struggling to breathe",
    "trouble breathing",
    "difficulty breathing",
    "won't stop bleeding",
    "wont stop bleeding",
    "will not stop bleeding",
    "heavy bleeding",
    "bleeding heavily",
    "lot of blood",
    "tongue is swelling",
    "tongue's swelling",
    "throat is swelling",
    "swelling up",
    "swelling is spreading",
    "swelling spreading",
    "spreading swelling",
    "feel faint",
    "fainted",
    "passed out",
    "unconscious",
    "collapsed",
    "heart attack",
    "stroke",
    "overdose",
    "hit his head",
    "hit her head",
    "hit my head",
    "banged his head",
    "banged her head",
    "banged my head",
    "head injury",
    "not making sense",
    "isn't making sense",
    "confused and",
    "seizure",
    "fitting",
];

/// Emergencies said in words the fixed phrases miss: bleeding that is heavy or will not stop,
/// swelling that spreads or reaches the neck, eye or throat, trouble breathing or swallowing.
fn emergency_combination(norm: &str) -> bool {
    let words: Vec<&str> = norm.split_whitespace().collect();
    let has = |prefixes: &[&str]| {
        words
            .iter()
            .any(|w| prefixes.iter().any(|p| w.starts_with(p)))
    };
    let bleeding = has(&["bleed", "blood"]);
    let heavy = has(&["heav", "pour", "gush", "lots"])
        || any(
            norm,
            &[
                "won't stop",
                "wont stop",
                "will not stop",
                "can't stop",
                "cant stop",
                "not stopping",
                "a lot of",
            ],
        );
    let swelling = has(&["swell", "swollen"]);
    let spreading = has(&["spread", "neck", "eye", "throat"]);
    let breathing = has(&["breath"])
        && any(
            norm,
            &[
                "can't",
                "cant",
                "cannot",
                "struggl",
                "hard to",
                "difficult",
                "trouble",
            ],
        );
    let swallowing = has(&["swallow"])
        && any(
            norm,
            &[
                "can't",
                "cant",
                "cannot",
                "struggl",
                "hard to",
                "difficult",
                "trouble",
            ],
        );
    (bleeding && heavy) || (swelling && spreading) || breathing || swallowing
}

/// Symptoms and clinical words: with a question, a medical question.
const SYMPTOMS: &[&str] = &[
    "pain",
    "painful",
    "hurts",
    "hurting",
    "ache",
    "aching",
    "toothache",
    "killing me",
    "swollen",
    "swelling",
    "bleeding",
    "bleeds",
    "abscess",
    "infection",
    "infected",
    "sensitive",
    "sore",
    "fever",
    "lump",
    "knocked",
    "knocked out",
    "extraction",
    "wisdom tooth",
    "pregnant",
    "teething",
    "patch",
    "ulcer",
    "rash",
    "numb",
    "tooth out",
    "rinse",
];

/// Medication and clinical-advice words: on their own, a medical question.
const MEDICATION: &[&str] = &[
    "ibuprofen",
    "paracetamol",
    "painkiller",
    "painkillers",
    "pain killers",
    "pain killer",
    "antibiotic",
    "antibiotics",
    "amoxicillin",
    "aspirin",
    "codeine",
    "medication",
    "medicine",
    "dose",
    "dosage",
    "tablets",
    "pills",
    "prescription",
    "diagnose",
    "diagnosis",
    "put it in milk",
];

/// A question about what to do or whether something is wrong.
const ADVICE_CUES: &[&str] = &[
    "should i",
    "can i take",
    "what can i take",
    "what should i",
    "do i need",
    "is it normal",
    "is that normal",
    "is this normal",
    "is that serious",
    "is it serious",
    "is this serious",
    "what do i do",
    "what should i do",
    "how much should",
    "how many should",
    "is it safe",
    "is that bad",
    "what is wrong",
    "what's wrong",
    "do you think",
    "what's causing",
    "what is causing",
    "what could that be",
    "what could it be",
    "can i use",
    "should i use",
    "is it infected",
    "why does",
    "why is",
];

const PERSON: &[&str] = &[
    "speak to someone",
    "speak to somebody",
    "talk to someone",
    "talk to somebody",
    "speak to a person",
    "talk to a person",
    "speak to a human",
    "talk to a human",
    "real person",
    "a human",
    "an actual person",
    "speak to reception",
    "speak to the receptionist",
    "speak to a receptionist",
    "receptionist i can speak to",
    "someone i can speak to",
    "put me through",
    "transfer me",
    "speak to the dentist",
    "speak to a dentist",
    "speak to the doctor",
    "speak to the nurse",
    "speak to staff",
    "speak to the manager",
    "are you a robot",
    "are you a bot",
    "are you a machine",
    "is this a robot",
    "operator",
];

const MESSAGE: &[&str] = &[
    "leave a message",
    "take a message",
    "pass on a message",
    "pass a message",
    "call me back",
    "ring me back",
    "phone me back",
    "callback",
    "someone call me",
    "somebody call me",
    "someone to call me",
    "get back to me",
    "tell them",
    "let them know",
    "let her know",
    "let him know",
    "tell her",
    "tell him",
    "rang about",
    "message for",
    "give me a call",
    "a call back",
    "call me",
    "ring me",
    "phone me",
    "ring back",
    "ring me",
    "leave a note",
    "a note for",
    "let the practice",
    "let the dentist know",
    "let the doctor know",
];

const CANCEL: &[&str] = &[
    "cancel",
    "cancelling",
    "cancellation of my",
    "not going to be able to come",
    "won't be able to come",
    "wont be able to come",
    "can't come in",
    "cant come in",
    "call off",
    "scrap",
    "not gonna need",
    "not going to need",
    "don't need it anymore",
    "don't need it any more",
];

const RESCHEDULE: &[&str] = &[
    "move my",
    "move it",
    "move the",
    "change my appointment",
    "change my booking",
    "change it",
    "change the time",
    "change the day",
    "rearrange",
    "reschedule",
    "re schedule",
    "push my",
    "push it",
    "push back",
    "bring forward",
    "bring it forward",
    "can't make it",
    "cant make it",
    "cannot make it",
    "different time",
    "different day",
    "another time",
    "another day",
    "postpone",
    "put it back",
    "bring my appointment forward",
    "bring it earlier",
    "later date",
    "earlier date",
    "a later one",
    "an earlier one",
    "sooner",
];

const BOOK: &[&str] = &[
    "book",
    "booking",
    "booked",
    "make an appointment",
    "an appointment",
    "appointment",
    "appointments",
    "slot",
    "slots",
    "fit me in",
    "squeeze me in",
    "get me in",
    "can i come in",
    "could i come in",
    "see the dentist",
    "see a dentist",
    "see the hygienist",
    "see someone",
    "anything available",
    "availability",
    "have you got anything",
    "do you have anything",
    "got anything",
    "any space",
    "earliest",
    "get it sorted",
    "new patient",
    "register",
    "time for my",
    "i need a",
    "i'd like a",
    "i would like a",
    "i want a",
    "can i get a",
    "can i have a",
    "could i get a",
    "looking for a",
    "looking for an",
    "bring my",
    "could i get",
    "can i get",
    "could i have",
    "can i have",
    "i'd like",
    "i would like",
    "i want",
    "i need",
    "can you fit",
    "i'm after",
];

/// Questions about an appointment (answered from knowledge) rather than asking for one.
const ABOUT_APPOINTMENT: &[&str] = &[
    "bring",
    "before my appointment",
    "to my appointment",
    "for my appointment",
    "at my appointment",
    "after my appointment",
    "my first appointment",
    "how long will",
    "how long does",
];

const HOURS: &[&str] = &[
    "open",
    "opening",
    "opening hours",
    "opening times",
    "hours",
    "close",
    "closed",
    "closing",
    "what time do you",
    "how late",
    "how early",
    "lunchtime",
    "over christmas",
    "bank holiday",
    "evenings",
    "late evening",
    "weekends",
    "saturdays",
    "sundays",
];

const LOCATION: &[&str] = &[
    "address",
    "where are you",
    "where is the",
    "where's the",
    "where you are",
    "located",
    "location",
    "directions",
    "how do i get",
    "how to get",
    "get to you",
    "find you",
    "postcode",
    "train station",
    "bus",
    "parking",
    "park",
    "car park",
    "leave their car",
    "leave my car",
];

const PRICE: &[&str] = &[
    "how much",
    "price",
    "prices",
    "pricing",
    "cost",
    "costs",
    "charge",
    "charges",
    "fee",
    "fees",
    "expensive",
    "cheap",
];

const SERVICES_Q: &[&str] = &[
    "do you do",
    "do you offer",
    "do you provide",
    "can you do",
    "something you offer",
    "something you do",
    "do you have a",
    "is there a",
    "you offer",
];

const QUESTION_CUES: &[&str] = &[
    "do you",
    "do i",
    "can i",
    "is there",
    "are there",
    "are you",
    "what",
    "what's",
    "how",
    "where",
    "when",
    "which",
    "who",
    "why",
    "is it",
    "does",
    "will i",
];

/// A turn that starts with one of these is a question, punctuation or not.
const QUESTION_OPENERS: &[&str] = &[
    "are", "is", "do", "does", "can", "could", "what", "what's", "how", "where", "when", "will",
    "would", "should", "have", "has", "which", "who", "why",
];

const CHECK_LINE: &[&str] = &[
    "can you hear me",
    "are you there",
    "is anyone there",
    "hello hello",
];

const WRONG_NUMBER: &[&str] = &["wrong number", "dialled the wrong", "dialed the wrong"];

const GOODBYE: &[&str] = &[
    "bye",
    "goodbye",
    "good bye",
    "bye bye",
    "that's all",
    "thats all",
    "that's everything",
    "thats everything",
    "that is all",
    "that's it",
    "nothing else",
    "no that's fine thanks",
    "have a good day",
    "have a nice day",
    "speak soon",
    "cheers bye",
    "take care",
    "thanks for your help",
    "thank you for your help",
    "cheers for that",
];

const YES: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "yes please",
    "sure",
    "ok",
    "okay",
    "perfect",
    "great",
    "lovely",
    "brilliant",
    "fine",
    "that's fine",
    "that works",
    "works for me",
    "that's great",
    "sounds good",
    "go ahead",
    "please do",
    "correct",
    "that's right",
    "thats right",
    "right",
    "absolutely",
    "definitely",
    "alright",
    "all right",
    "fab",
    "cool",
    "do it",
    "book it",
    "confirm",
    "i can",
    "i will",
    "i'll be there",
    "that's fine",
    "the number's fine",
    "number's fine",
    "this number's fine",
    "this number is fine",
];

const NO: &[&str] = &[
    "no",
    "nope",
    "nah",
    "not really",
    "doesn't work",
    "doesnt work",
    "does not work",
    "that doesn't",
    "can't do",
    "cant do",
    "cannot do",
    "can't make",
    "cant make",
    "wrong",
    "not quite",
    "don't",
    "do not",
    "rather not",
    "neither",
];

const URGENT: &[&str] = &[
    "urgent",
    "urgently",
    "asap",
    "as soon as possible",
    "emergency appointment",
    "broke",
    "broken",
    "chipped",
    "cracked",
    "fell out",
    "came out",
    "lost a filling",
    "killing me",
    "really hurts",
];

/// Family words for "it's for my son".
const FOR_WHOM: &[&str] = &[
    "son",
    "daughter",
    "husband",
    "wife",
    "partner",
    "mum",
    "mom",
    "mother",
    "dad",
    "father",
    "child",
    "kid",
    "boy",
    "girl",
    "baby",
    "grandson",
    "granddaughter",
    "nan",
    "gran",
    "grandmother",
    "grandfather",
    "brother",
    "sister",
    "friend",
];

/// Understands one turn. `now` is clinic-local (for dates).
pub fn understand(raw: &str, clinic: &Clinic, now: NaiveDateTime) -> Understanding {
    let norm = text::normalize(raw);
    let when = when::parse_when(raw, now);
    let service = match_service(&norm, clinic);
    let mut intents = Vec::new();
    let first_word = norm.split_whitespace().next().unwrap_or("");
    let question =
        any(&norm, QUESTION_CUES) || raw.contains('?') || QUESTION_OPENERS.contains(&first_word);

    if any(&norm, EMERGENCY) || emergency_combination(&norm) {
        intents.push(Intent::Emergency);
    }
    let medication = any(&norm, MEDICATION);
    let symptom = any(&norm, SYMPTOMS) || any_word_prefix(&norm, &["bleed", "swell"]);
    // A symptom with a question is a clinical question unless the caller is asking for an
    // appointment ("can I come in today, my tooth hurts?").
    let asks_to_book = any(&norm, BOOK) && !any(&norm, ADVICE_CUES);
    if medication || (symptom && (any(&norm, ADVICE_CUES) || (question && !asks_to_book))) {
        intents.push(Intent::Medical);
    }
    // "Can I talk to Dr Patel?": a member of staff the clinic file names.
    let staff_named = clinic.file.clinic.staff.iter().any(|name| {
        let n = text::normalize(name);
        let surname = n.split_whitespace().last().unwrap_or("");
        surname.len() > 2 && has_phrase(&norm, surname)
    });
    if any(&norm, PERSON)
        || (staff_named
            && any(
                &norm,
                &[
                    "speak to",
                    "talk to",
                    "speak with",
                    "talk with",
                    "put me through",
                    "get hold of",
                ],
            ))
    {
        intents.push(Intent::Person);
    }
    if any(&norm, MESSAGE) {
        intents.push(Intent::Message);
    }
    // "If I cancel last minute do I get charged?" asks about the policy, not to cancel.
    let policy_question = question
        && any(
            &norm,
            &[
                "if i",
                "what happens",
                "policy",
                "charged",
                "charge",
                "a fee",
                "penalty",
            ],
        );
    let cancel = any(&norm, CANCEL) && !policy_question;
    // "What should I bring to my first appointment?" is a question about an appointment, not a
    // request for one.
    let about_an_appointment = any(&norm, ABOUT_APPOINTMENT);
    let reschedule = any(&norm, RESCHEDULE)
        || (has_phrase(&norm, "instead") && any(&norm, &["appointment", "booking", "booked"]))
        || (cancel && any(&norm, &["book", "rebook"]) && !has_phrase(&norm, "call back"));
    if reschedule && !(cancel && has_phrase(&norm, "call back to rebook")) {
        intents.push(Intent::Reschedule);
    } else if cancel {
        intents.push(Intent::Cancel);
    }
    let hours_q = !about_an_appointment
        && any(&norm, HOURS)
        && (question || any(&norm, &["opening hours", "opening times"]))
        && !any(&norm, &["open my", "close my"]);
    if hours_q {
        intents.push(Intent::Hours);
    }
    if any(&norm, LOCATION) && (question || any(&norm, &["address", "directions", "parking"])) {
        intents.push(Intent::Location);
    }
    if any(&norm, PRICE) {
        intents.push(Intent::Price);
    }
    let book_words = (any(&norm, BOOK) || any(&norm, &["if so can i get", "can i get a"]))
        && !about_an_appointment;
    let services_q = any(&norm, SERVICES_Q) && !book_words;
    let booking = !reschedule
        && !intents.contains(&Intent::Cancel)
        && (book_words
            || (service.is_some()
                && !services_q
                && !intents.contains(&Intent::Price)
                && (!question || when.day.is_some() || when.time.is_some()))
            || (hours_q && service.is_some()));
    if booking && !intents.contains(&Intent::Medical) {
        intents.push(Intent::Book);
    }
    if services_q {
        intents.push(Intent::Services);
    }
    if any(&norm, CHECK_LINE) {
        intents.push(Intent::CheckLine);
    }
    if any(&norm, WRONG_NUMBER) {
        intents.push(Intent::WrongNumber);
    }
    if any(&norm, GOODBYE) {
        intents.push(Intent::Goodbye);
    }
    if intents.is_empty() && (when.day.is_some() || when.time.is_some()) && !question {
        // "Sometime in the afternoon would be better, any day": a time on its own is a booking.
        intents.push(Intent::Book);
    }
    if intents.is_empty() && question {
        intents.push(Intent::Question);
    }
    intents.sort();
    intents.dedup();

    let yes = any(&norm, YES) && !NO.contains(&first_word);
    let no = NO.contains(&first_word) || any(&norm, NO) && !yes;
    Understanding {
        raw: raw.to_string(),
        name: text::spelled_name(raw).or_else(|| said_name(raw)),
        phone: text::digits_in(raw),
        for_whom: FOR_WHOM
            .iter()
            .find(|w| any(&norm, &[&format!("my {w}"), &format!("my {w}'s")]))
            .map(|w| w.to_string()),
        choice: choice(&norm),
        urgent: any(&norm, URGENT),
        intents,
        service,
        when,
        yes,
        no,
        norm,
    }
}

/// "the first one", "the second", "the later one", "the earlier one".
fn choice(norm: &str) -> Option<usize> {
    if any(
        norm,
        &[
            "first one",
            "the first",
            "earlier one",
            "the earlier",
            "first option",
        ],
    ) {
        Some(0)
    } else if any(norm, &["second one", "the second", "second option"]) {
        Some(1)
    } else if any(norm, &["third one", "the third"]) {
        Some(2)
    } else if any(
        norm,
        &["later one", "the later", "last one", "the last", "latter"],
    ) {
        Some(usize::MAX)
    } else {
        None
    }
}

/// Stems a word for tolerant matching: "cleaned", "cleaning", "cleans" → "clean".
fn stem(w: &str) -> &str {
    for suffix in ["ings", "ing", "ed", "es", "s"] {
        if let Some(s) = w.strip_suffix(suffix)
            && s.len() >= 4
        {
            return s;
        }
    }
    w
}

/// Words of a service name, normalised the way the caller's text is ("check-up" → "check up").
fn name_words(name: &str) -> Vec<String> {
    text::normalize(&name.replace('-', " "))
        .split_whitespace()
        .map(|w| stem(w).to_string())
        .collect()
}

/// Levenshtein distance, for sound-alikes Whisper writes ("fillin", "whitenin").
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The clinic service the caller named, matched against names and aliases tolerantly: stems
/// ("cleaned" ~ "cleaning"), split or joined words ("check up" ~ "checkup"), and one edit in
/// words of five letters or more (sound-alikes). The longest match wins.
pub fn match_service(norm: &str, clinic: &Clinic) -> Option<usize> {
    let words: Vec<String> = norm
        .replace('-', " ")
        .split_whitespace()
        .map(|w| stem(w).to_string())
        .collect();
    let joined: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    let raw: Vec<String> = norm
        .replace('-', " ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut best: Option<(usize, usize)> = None;
    for (i, s) in clinic.services.iter().enumerate() {
        for name in &s.names {
            let nw = name_words(name);
            if nw.is_empty() {
                continue;
            }
            let n = nw.len();
            let glued: String = nw.concat();
            let raw_glued: String = text::normalize(&name.replace('-', " "))
                .split_whitespace()
                .collect();
            let mut hit = false;
            for start in 0..joined.len() {
                // Same words in a row.
                if start + n <= joined.len() && joined[start..start + n] == nw[..] {
                    hit = true;
                }
                // Split or joined: "check up" vs "checkup".
                for len in 1..=3 {
                    if start + len <= joined.len() {
                        let cand: String = joined[start..start + len].concat();
                        if cand == glued
                            || (glued.len() >= 5
                                && cand.len() >= 5
                                && edit_distance(&cand, &glued) <= 1)
                        {
                            hit = true;
                        }
                    }
                    if start + len <= raw.len() {
                        let cand: String = raw[start..start + len].concat();
                        if raw_glued.len() >= 6
                            && cand.len() >= 5
                            && edit_distance(&cand, &raw_glued) <= 1
                        {
                            hit = true;
                        }
                    }
                }
            }
            if hit {
                let score = glued.len();
                if best.is_none_or(|(_, b)| score > b) {
                    best = Some((i, score));
                }
            }
        }
    }
    best.map(|(i, _)| i)
}

/// A name said with a cue: "my name is Aisha Rahman", "it's Michael", "this is Gareth", "I'm
/// Sarah", "name's Jones". Title-cased, at most four words.
pub fn said_name(raw: &str) -> Option<String> {
    let lower = raw.to_lowercase();
    let cues = [
        "my name is ",
        "my name's ",
        "name is ",
        "name's ",
        "this is ",
        "it's for ",
        "its for ",
        "it is for ",
        "it's ",
        "its ",
        "it is ",
        "i'm ",
        "i am ",
        "call me ",
    ];
    for cue in cues {
        if let Some(pos) = find_word(&lower, cue) {
            let rest = &raw[pos + cue.len()..];
            if let Some(name) = name_from(rest) {
                return Some(name);
            }
        }
    }
    None
}

fn find_word(hay: &str, needle: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = hay[from..].find(needle) {
        let at = from + p;
        if at == 0 || !hay.as_bytes()[at - 1].is_ascii_alphanumeric() {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Words that are never part of a name.
const NOT_NAME: &[&str] = &[
    "a",
    "an",
    "the",
    "my",
    "for",
    "that",
    "and",
    "but",
    "so",
    "calling",
    "ringing",
    "about",
    "just",
    "here",
    "fine",
    "ok",
    "okay",
    "yes",
    "no",
    "not",
    "me",
    "sorry",
    "i",
    "it",
    "is",
    "to",
    "on",
    "at",
    "in",
    "please",
    "thanks",
    "thank",
    "you",
    "well",
    "um",
    "uh",
    "yeah",
    "booked",
    "going",
    "having",
    "looking",
    "trying",
    "wondering",
    "hoping",
    "time",
    "late",
    "early",
    "still",
    "there",
    "spelt",
    "spelled",
    "that's",
    "daughter",
    "son",
    "husband",
    "wife",
    "mum",
    "dad",
    "partner",
    "appointment",
    "tomorrow",
    "today",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "next",
    "this",
];

fn name_from(rest: &str) -> Option<String> {
    let mut words = Vec::new();
    for w in rest.split(|c: char| c.is_whitespace() || c == ',' || c == '.') {
        if w.is_empty() {
            if words.is_empty() {
                continue;
            }
            break;
        }
        let clean: String = w
            .chars()
            .filter(|c| c.is_alphabetic() || *c == '\'' || *c == '-')
            .collect();
        if clean.is_empty() || NOT_NAME.contains(&clean.to_lowercase().as_str()) {
            break;
        }
        words.push(title(&clean));
        if words.len() == 4 {
            break;
        }
    }
    (!words.is_empty()).then(|| words.join(" "))
}

fn title(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
        None => String::new(),
    }
}

/// The whole answer as a name, when the receptionist has just asked for one: "Jones, Gareth
/// Jones." → "Gareth Jones"; "It's Michael." → "Michael"; spelled names are joined.
pub fn bare_name(raw: &str) -> Option<String> {
    if let Some(spelled) = text::spelled_name(raw) {
        return Some(spelled);
    }
    if let Some(n) = said_name(raw) {
        return Some(n);
    }
    // "Jones, Gareth Jones": the longest comma-separated part.
    let part = raw
        .split([',', '.'])
        .map(str::trim)
        .max_by_key(|p| p.split_whitespace().count())?;
    let words: Vec<&str> = part.split_whitespace().collect();
    if words.is_empty() || words.len() > 4 {
        return None;
    }
    name_from(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clinic::ClinicFile;

    pub(crate) fn clinic() -> Clinic {
        ClinicFile::from_toml(crate::testing::EXAMPLE_CLINIC)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn now() -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap()
    }

    fn top(s: &str) -> Option<Intent> {
        understand(s, &clinic(), now()).top()
    }

    #[test]
    fn intents_from_realistic_phrasings() {
        use Intent::*;
        let cases = [
            ("Yeah hi, um, can I book in for a check up?", Book),
            ("Could I get my teeth cleaned sometime next week?", Book),
            ("I need to move my appointment.", Reschedule),
            (
                "Yeah, can you just cancel the one on Monday, I'll call back to rebook.",
                Cancel,
            ),
            (
                "I need to cancel Tuesday and book something next week instead.",
                Reschedule,
            ),
            ("What are your opening hours?", Hours),
            ("How late are you open on a Thursday?", Hours),
            ("What's your address?", Location),
            ("Is there parking?", Location),
            ("How much is a check-up?", Price),
            ("Do you do braces?", Services),
            ("Can I speak to someone please?", Person),
            ("Are you a robot? I want a human.", Person),
            ("Could someone call me back?", Message),
            (
                "My tooth is killing me, what painkillers can I take?",
                Medical,
            ),
            ("Can I take ibuprofen before my appointment?", Medical),
            ("I'm having chest pains and my jaw hurts.", Emergency),
            ("I fell and my mouth won't stop bleeding.", Emergency),
            ("That's all, thanks, bye.", Goodbye),
            ("Sorry, I think I've got the wrong number.", WrongNumber),
            ("Hello? Hello? Can you hear me?", CheckLine),
            ("Do you take new patients?", Question),
        ];
        for (s, want) in cases {
            assert_eq!(top(s), Some(want), "{s}");
        }
    }

    #[test]
    fn services_match_tolerantly() {
        let c = clinic();
        let name =
            |s: &str| match_service(&text::normalize(s), &c).map(|i| c.services[i].name.clone());
        assert_eq!(name("can i book a checkup").as_deref(), Some("Check-up"));
        assert_eq!(name("a check up please").as_deref(), Some("Check-up"));
        assert_eq!(name("get my teeth cleaned").as_deref(), Some("Cleaning"));
        assert_eq!(name("a scale and polish").as_deref(), Some("Cleaning"));
        assert_eq!(name("i broke a fillin").as_deref(), Some("Filling"));
        assert_eq!(name("teeth whitening").as_deref(), Some("Whitening"));
        assert_eq!(name("what time do you open"), None);
    }

    #[test]
    fn names_are_taken_from_cues_and_bare_answers() {
        assert_eq!(
            said_name("My name is Aisha Rahman.").as_deref(),
            Some("Aisha Rahman")
        );
        assert_eq!(bare_name("It's Michael.").as_deref(), Some("Michael"));
        assert_eq!(
            bare_name("Jones, Gareth Jones.").as_deref(),
            Some("Gareth Jones")
        );
        assert_eq!(
            said_name("It's for Emily Clarke, that's my daughter.").as_deref(),
            Some("Emily Clarke")
        );
        assert_eq!(said_name("it's for my son"), None);
    }

    #[test]
    fn yes_and_no() {
        let u = |s: &str| understand(s, &clinic(), now());
        for s in [
            "Yes please.",
            "Yeah, that's fine.",
            "Yep, perfect.",
            "That works for me.",
            "Sure, go ahead.",
        ] {
            assert!(u(s).yes && !u(s).no, "{s}");
        }
        for s in [
            "No, that doesn't work.",
            "Nah, sorry, I can't do then.",
            "Not really, have you got anything later?",
        ] {
            assert!(u(s).no && !u(s).yes, "{s}");
        }
    }
}

//! Turn-taking tests for the conversation core, in virtual time.
//!
//! `Sim` is a deterministic discrete-event simulation of everything around the core: a caller
//! who speaks (a tone) or stays silent by script, a Twilio that plays the frames it receives at
//! real time and echoes each mark when the audio before it has played (or when `clear` drops
//! it), and engines that answer after fixed delays. Time jumps from one event to the next; no
//! sockets, no sleeps.

use std::collections::VecDeque;
use std::time::Duration;

use agent::conversation::{
    CallEvent, Conversation, ConversationConfig, EndReason, FRAME_DURATION, Input, Now, Output,
    PLAYOUT_LEAD, SegmentId, TurnId, TurnSummary,
};
use agent::engine::{Action, BrainEvent, BrainRequest, CallerInput, EngineError, Role};
use media::vad::EnergyVad;

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Something an engine or Twilio will deliver later.
#[derive(Debug)]
enum Due {
    Transcript(TurnId, Result<String, EngineError>),
    BrainText(TurnId, String),
    Note(&'static str, String),
    BrainDone(TurnId, Result<Option<Action>, EngineError>),
    Audio(SegmentId, Vec<i16>),
    SpeechDone(SegmentId, Result<(), EngineError>),
    Mark(String),
    Dtmf(char),
}

type BrainScript = Box<dyn FnMut(&BrainRequest) -> Vec<BrainEvent>>;

struct Sim {
    conv: Conversation,
    now: Now,
    /// Caller speaks (a 300 Hz tone) during these intervals.
    speech: Vec<(Now, Now)>,
    next_caller_frame: Now,
    /// Caller frames stop after this (the call has been hung up by the caller's side).
    caller_until: Now,
    queue: Vec<(Now, u64, Due)>,
    seq: u64,
    // Virtual Twilio.
    play_end: Now,
    // Engines.
    stt_delay: Duration,
    brain_delay: Duration,
    tts_delay: Duration,
    transcripts: VecDeque<String>,
    /// The next this many transcriptions fail (the recogniser is down), before `transcripts`
    /// is consulted.
    failing_transcripts: usize,
    /// Sentences whose synthesis fails, with no audio, every time they are requested.
    failing_speech: Vec<String>,
    brain: BrainScript,
    /// Samples of tone per character of synthesised text (8 kHz).
    samples_per_char: usize,
    // What happened.
    frames: Vec<Now>,
    at_samples: Vec<u64>,
    clears: Vec<Now>,
    marks_sent: Vec<(Now, String)>,
    turns: Vec<TurnSummary>,
    events: Vec<CallEvent>,
    asked: Vec<BrainRequest>,
    transcribed: Vec<(TurnId, usize)>,
    /// Every text sent to TTS, in order.
    synthesized: Vec<String>,
    /// Early transcriptions declined (when `decline_early`).
    declined: Vec<(TurnId, usize)>,
    decline_early: bool,
    cancels: Vec<Output>,
    hangup: Option<(Now, EndReason)>,
}

impl Sim {
    fn new(config: ConversationConfig) -> Self {
        let conv = Conversation::new(config, Box::new(EnergyVad::new(-40.0))).unwrap();
        Self {
            conv,
            now: Duration::ZERO,
            speech: Vec::new(),
            next_caller_frame: Duration::ZERO,
            caller_until: Duration::from_secs(3600),
            queue: Vec::new(),
            seq: 0,
            play_end: Duration::ZERO,
            stt_delay: ms(150),
            brain_delay: ms(200),
            tts_delay: ms(100),
            transcripts: VecDeque::new(),
            failing_transcripts: 0,
            failing_speech: Vec::new(),
            brain: Box::new(|req: &BrainRequest| match &req.input {
                CallerInput::Speech(t) => vec![
                    BrainEvent::Text(format!("You said {t}.")),
                    BrainEvent::Text("Anything else?".into()),
                ],
                CallerInput::Dtmf(d) => vec![BrainEvent::Text(format!("You pressed {d}."))],
                CallerInput::Unheard => vec![BrainEvent::Text("I can't hear you well.".into())],
            }),
            samples_per_char: 440, // 55 ms a character
            frames: Vec::new(),
            at_samples: Vec::new(),
            clears: Vec::new(),
            marks_sent: Vec::new(),
            turns: Vec::new(),
            events: Vec::new(),
            asked: Vec::new(),
            transcribed: Vec::new(),
            synthesized: Vec::new(),
            declined: Vec::new(),
            decline_early: false,
            cancels: Vec::new(),
            hangup: None,
        }
    }

    fn say(&mut self, from_ms: u64, to_ms: u64) {
        self.speech.push((ms(from_ms), ms(to_ms)));
    }

    fn schedule(&mut self, at: Now, due: Due) {
        self.seq += 1;
        self.queue.push((at, self.seq, due));
    }

    fn speaking_at(&self, t: Now) -> bool {
        self.speech.iter().any(|&(a, b)| t >= a && t < b)
    }

    fn start(&mut self) {
        self.conv.handle_input(self.now, Input::Start);
        self.drain();
    }

    /// Runs the simulation until `until` (or the call ends).
    fn run_until(&mut self, until_ms: u64) {
        let until = ms(until_ms);
        while self.conv.ended().is_none() {
            let mut next = self.next_caller_frame;
            if next > self.caller_until {
                next = Duration::MAX;
            }
            if let Some(t) = self.conv.poll_timeout() {
                next = next.min(t);
            }
            if let Some(t) = self.queue.iter().map(|(t, _, _)| *t).min() {
                next = next.min(t);
            }
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        // Deliveries due now, in the order they were scheduled.
        let mut due: Vec<(Now, u64, Due)> = Vec::new();
        let mut rest = Vec::new();
        for item in self.queue.drain(..) {
            if item.0 <= now {
                due.push(item);
            } else {
                rest.push(item);
            }
        }
        self.queue = rest;
        due.sort_by_key(|(t, s, _)| (*t, *s));
        for (_, _, d) in due {
            let input_owned;
            let input = match d {
                Due::Transcript(turn, result) => Input::Transcript { turn, result },
                Due::BrainText(turn, text) => Input::BrainText { turn, text },
                Due::Note(kind, detail) => Input::EngineNote { kind, detail },
                Due::BrainDone(turn, result) => Input::BrainDone { turn, result },
                Due::Audio(segment, samples) => {
                    input_owned = samples;
                    Input::SpeechAudio {
                        segment,
                        samples: &input_owned,
                    }
                }
                Due::SpeechDone(segment, result) => Input::SpeechDone { segment, result },
                Due::Mark(name) => {
                    self.conv.handle_input(now, Input::MarkPlayed(&name));
                    self.drain();
                    continue;
                }
                Due::Dtmf(d) => Input::Dtmf(d),
            };
            self.conv.handle_input(now, input);
            self.drain();
        }
        if self.next_caller_frame <= now && now <= self.caller_until {
            let speaking = self.speaking_at(self.next_caller_frame);
            let frame: Vec<i16> = (0..160)
                .map(|n| {
                    if speaking {
                        let t = n as f32 / 8000.0;
                        ((t * 300.0 * std::f32::consts::TAU).sin() * 6000.0) as i16
                    } else {
                        0
                    }
                })
                .collect();
            self.conv.handle_input(now, Input::CallerAudio(&frame));
            self.next_caller_frame += FRAME_DURATION;
            self.drain();
        }
        if self.conv.poll_timeout().is_some_and(|t| t <= now) {
            self.conv.handle_input(now, Input::Timeout);
            self.drain();
        }
    }

    fn drain(&mut self) {
        let now = self.now;
        while let Some(out) = self.conv.poll_output() {
            match out {
                Output::Media(frame) => {
                    self.frames.push(now);
                    self.at_samples.push(frame.at_sample);
                    let start = self.play_end.max(now);
                    self.play_end = start + FRAME_DURATION;
                }
                Output::Mark(name) => {
                    self.marks_sent.push((now, name.clone()));
                    let at = self.play_end.max(now);
                    self.schedule(at, Due::Mark(name));
                }
                Output::Clear => {
                    self.clears.push(now);
                    self.play_end = now;
                    // Twilio echoes the marks of the audio it dropped, right away.
                    for (t, _, d) in self.queue.iter_mut() {
                        if matches!(d, Due::Mark(_)) {
                            *t = now;
                        }
                    }
                }
                Output::Transcribe {
                    turn, audio, early, ..
                } if early && self.decline_early => {
                    // A driver with no idle decoder declines speculative work.
                    self.declined.push((turn, audio.len()));
                    self.schedule(
                        now,
                        Due::Transcript(turn, Err(EngineError::Unavailable("busy".into()))),
                    );
                }
                Output::Transcribe { turn, audio, .. } => {
                    self.transcribed.push((turn, audio.len()));
                    let result = if self.failing_transcripts > 0 {
                        self.failing_transcripts -= 1;
                        Err(EngineError::Unavailable("recogniser down".into()))
                    } else {
                        Ok(self.transcripts.pop_front().unwrap_or_default())
                    };
                    self.schedule(now + self.stt_delay, Due::Transcript(turn, result));
                }
                Output::AskBrain { turn, request, .. } => {
                    let events = (self.brain)(&request);
                    self.asked.push(request);
                    let mut t = now + self.brain_delay;
                    let mut action = None;
                    for e in events {
                        match e {
                            BrainEvent::Text(text) => {
                                self.schedule(t, Due::BrainText(turn, text));
                                t += MS;
                            }
                            BrainEvent::Action(a) => action = Some(a),
                            BrainEvent::Note { kind, detail } => {
                                self.schedule(t, Due::Note(kind, detail))
                            }
                        }
                    }
                    self.schedule(t, Due::BrainDone(turn, Ok(action)));
                }
                Output::Synthesize { segment, text } => {
                    self.synthesized.push(text.clone());
                    let at = now + self.tts_delay;
                    if self.failing_speech.contains(&text) {
                        let e = EngineError::Failed("synthesis failed".into());
                        self.schedule(at, Due::SpeechDone(segment, Err(e)));
                        continue;
                    }
                    let n = text.chars().count() * self.samples_per_char;
                    let samples: Vec<i16> = (0..n)
                        .map(|i| ((i as f32 * 0.3).sin() * 7000.0) as i16)
                        .collect();
                    for chunk in samples.chunks(800) {
                        self.schedule(at, Due::Audio(segment, chunk.to_vec()));
                    }
                    self.schedule(at, Due::SpeechDone(segment, Ok(())));
                }
                Output::CancelBrain { turn } => {
                    self.queue.retain(|(_, _, d)| match d {
                        Due::BrainText(t, _) | Due::BrainDone(t, _) => *t != turn,
                        _ => true,
                    });
                    self.cancels.push(Output::CancelBrain { turn });
                }
                Output::CancelSpeech { through } => {
                    self.queue.retain(|(_, _, d)| match d {
                        Due::Audio(s, _) | Due::SpeechDone(s, _) => *s > through,
                        _ => true,
                    });
                    self.cancels.push(Output::CancelSpeech { through });
                }
                Output::TurnFinished(t) => self.turns.push(t),
                Output::Event(e) => self.events.push(e),
                Output::Hangup(reason) => self.hangup = Some((now, reason)),
            }
        }
    }

    fn agent_turns(&self) -> Vec<&TurnSummary> {
        self.turns
            .iter()
            .filter(|t| t.role == Role::Agent)
            .collect()
    }

    fn caller_turns(&self) -> Vec<&TurnSummary> {
        self.turns
            .iter()
            .filter(|t| t.role == Role::Caller)
            .collect()
    }

    fn events_of(&self, kind: &str) -> Vec<&CallEvent> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }
}

fn config() -> ConversationConfig {
    ConversationConfig {
        greeting: "Hello, this is the clinic.".into(),
        ..ConversationConfig::default()
    }
}

/// Samples of tone the simulated TTS makes for `text` (8 kHz), rounded up to whole frames.
fn frames_for(text: &str) -> usize {
    (text.chars().count() * 440).div_ceil(160)
}

#[test]
fn greeting_is_spoken_first_paced_in_real_time_and_marked() {
    let mut sim = Sim::new(config());
    sim.start();
    sim.run_until(5_000);
    let expected = frames_for("Hello, this is the clinic.");
    assert_eq!(sim.frames.len(), expected);
    // Playout started when the first audio arrived (tts delay) and ran at real time: frame k was
    // released at anchor + k*20ms - lead, never earlier, and (with a punctual driver) never later.
    let anchor = sim.frames[0];
    assert_eq!(anchor, ms(100));
    for (k, &t) in sim.frames.iter().enumerate() {
        let due = anchor + FRAME_DURATION * k as u32;
        let earliest = due.saturating_sub(PLAYOUT_LEAD);
        assert!(t >= earliest, "frame {k} at {t:?} before {earliest:?}");
        assert!(t <= earliest.max(anchor), "frame {k} at {t:?} late");
    }
    // In media time, frames sit back to back from the first one's due time, even those
    // released together in the lead.
    let first = sim.at_samples[0];
    assert_eq!(first, 100 * 8);
    for (k, &at) in sim.at_samples.iter().enumerate() {
        assert_eq!(at, first + 160 * k as u64, "frame {k}");
    }
    // One mark after the sentence, sent right after its last frame.
    assert_eq!(sim.marks_sent.len(), 1);
    assert_eq!(sim.marks_sent[0].0, *sim.frames.last().unwrap());
    let agent = sim.agent_turns();
    assert_eq!(agent.len(), 1);
    assert_eq!(agent[0].text, "Hello, this is the clinic.");
    assert_eq!(
        agent[0].heard.as_deref(),
        Some("Hello, this is the clinic.")
    );
    assert!(!agent[0].interrupted);
    assert_eq!(sim.events_of("start").len(), 1);
}

#[test]
fn a_late_driver_catches_up_without_drift() {
    let mut sim = Sim::new(config());
    sim.start();
    // Deliver the greeting audio, then wake the core 150 ms late once.
    sim.run_until(100);
    let before = sim.frames.len();
    sim.now = ms(250);
    sim.conv.handle_input(sim.now, Input::Timeout);
    sim.drain();
    // Everything due by 250 ms + lead is released at once: frames 0..=10 (0..200 ms after 100).
    let anchor = ms(100);
    let burst = sim.frames.len() - before;
    assert_eq!(burst, 11 - before);
    sim.run_until(5_000);
    // After the burst, frames follow the original schedule (anchored, no drift).
    for (k, &t) in sim.frames.iter().enumerate().skip(12) {
        let due = anchor + FRAME_DURATION * k as u32 - PLAYOUT_LEAD;
        assert_eq!(t, due, "frame {k}");
    }
}

#[test]
fn a_caller_turn_is_endpointed_transcribed_and_answered_with_latencies() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("I need a cleaning".into());
    sim.start();
    // Greeting lasts ~1.4 s. The caller speaks from 2.0 s to 3.0 s.
    sim.say(2_000, 3_000);
    sim.run_until(12_000);
    assert_eq!(sim.transcribed.len(), 1);
    // Audio handed to STT: the speech plus pre-roll before it and the tail after it (16 kHz),
    // within a frame or two of resampler delay and VAD granularity.
    let (_, len) = sim.transcribed[0];
    let expected = (1_000 + 300 + 200) * 16;
    assert!(
        (len as i64 - expected as i64).abs() <= 3 * 320,
        "stt audio {len} vs {expected}"
    );
    assert_eq!(sim.asked.len(), 1);
    let req = &sim.asked[0];
    assert_eq!(req.input, CallerInput::Speech("I need a cleaning".into()));
    assert_eq!(req.history.len(), 1, "history holds the greeting");
    assert_eq!(req.history[0].role, Role::Agent);

    let caller = sim.caller_turns();
    assert_eq!(caller.len(), 1);
    assert_eq!(caller[0].text, "I need a cleaning");
    assert!((1_980..=2_040).contains(&caller[0].start_ms), "{caller:?}");
    assert!((2_980..=3_040).contains(&caller[0].end_ms), "{caller:?}");
    let lat = caller[0].latency;
    assert_eq!(lat.endpointing_ms, Some(700));
    assert_eq!(lat.stt_ms, Some(150));

    let agent = sim.agent_turns();
    assert_eq!(agent.len(), 2);
    let reply = agent[1];
    assert_eq!(reply.text, "You said I need a cleaning. Anything else?");
    assert!(!reply.interrupted);
    let l = reply.latency;
    assert_eq!(l.brain_first_token_ms, Some(200));
    assert_eq!(l.tts_first_audio_ms, Some(100));
    // Voice to voice: endpointing + stt + brain + tts, and nothing else (instant server).
    assert_eq!(l.voice_to_voice_ms, Some(700 + 150 + 200 + 100));
    assert!(sim.clears.is_empty());
}

#[test]
fn barge_in_stops_the_agent_clears_twilio_and_keeps_only_what_was_heard() {
    let mut config = config();
    config.greeting = "Hi.".into();
    let mut sim = Sim::new(config);
    sim.transcripts.push_back("what are your hours".into());
    sim.transcripts.push_back("stop".into());
    sim.brain = Box::new(|req: &BrainRequest| match &req.input {
        CallerInput::Speech(t) if t == "what are your hours" => vec![
            BrainEvent::Text("We open at eight.".into()),
            BrainEvent::Text("We close at six on weekdays and at noon on Saturdays.".into()),
            BrainEvent::Text("We are closed on Sundays.".into()),
        ],
        _ => vec![BrainEvent::Text("Okay.".into())],
    });
    sim.start();
    sim.say(1_000, 2_000);
    // Endpoint at ~2.7 s, transcript 2.85, brain 3.05, audio 3.15; first sentence (17 chars,
    // 0.94 s) plays until ~4.1 s. The caller interrupts at 4.6 s, inside the second sentence.
    sim.say(4_600, 5_600);
    sim.run_until(15_000);

    assert_eq!(sim.clears.len(), 1, "exactly one clear");
    let clear_at = sim.clears[0];
    // The clear follows the start of the caller's speech by the barge-in minimum (400 ms)
    // plus VAD granularity and resampler delay.
    assert!(
        clear_at >= ms(5_000) && clear_at <= ms(5_060),
        "clear at {clear_at:?}"
    );
    // Nothing of the interrupted reply is sent after the clear; the next frames belong to the
    // answer to "stop", which starts only after its own STT, brain and TTS delays.
    let after: Vec<_> = sim.frames.iter().filter(|&&t| t > clear_at).collect();
    assert!(!after.is_empty());
    assert!(*after[0] >= clear_at + ms(700));

    let agent = sim.agent_turns();
    let cut = agent
        .iter()
        .find(|t| t.interrupted)
        .expect("an interrupted agent turn");
    assert!(cut.text.starts_with("We open at eight. We close at six"));
    let heard = cut.heard.clone().unwrap();
    assert!(heard.starts_with("We open at eight."), "{heard}");
    assert!(!heard.contains("Sundays"), "{heard}");
    // About 0.9 s of the 3 s second sentence was playing: some of its words, not all.
    let extra = heard
        .trim_start_matches("We open at eight.")
        .split_whitespace()
        .count();
    assert!((1..=5).contains(&extra), "{heard}");
    assert_eq!(sim.events_of("barge_in").len(), 1);
    // The brain's next request remembers only what was heard.
    let next = sim.asked.last().unwrap();
    assert_eq!(next.input, CallerInput::Speech("stop".into()));
    let last_agent = next
        .history
        .iter()
        .rev()
        .find(|m| m.role == Role::Agent)
        .unwrap();
    assert_eq!(last_agent.text, heard);
    // Of the reply's frames, only those released before the clear went out.
    let reply_frames = frames_for("We open at eight.")
        + frames_for("We close at six on weekdays and at noon on Saturdays.")
        + frames_for("We are closed on Sundays.");
    let greeting_frames = frames_for("Hi.");
    let before_clear = sim.frames.iter().filter(|&&t| t <= clear_at).count();
    assert!(before_clear - greeting_frames < reply_frames / 2);
}

#[test]
fn barge_in_cancels_the_brain_and_speech_still_in_flight() {
    let mut config = config();
    config.greeting = "Hi.".into();
    let mut sim = Sim::new(config);
    sim.transcripts.push_back("hello".into());
    sim.start();
    sim.say(1_000, 1_600);
    // Transcript at ~2.45 s asks the brain; its texts arrive at ~2.65 s. Keep the brain from
    // finishing and the second sentence's synthesis from arriving, as if both still worked.
    sim.run_until(2_500);
    assert_eq!(sim.asked.len(), 1);
    sim.queue
        .retain(|(_, _, d)| !matches!(d, Due::BrainDone(..)));
    sim.run_until(2_700);
    sim.queue.retain(|(_, _, d)| {
        !matches!(
            d,
            Due::SpeechDone(SegmentId(2), _) | Due::Audio(SegmentId(2), _)
        )
    });
    // The first sentence plays from ~2.75 s; the caller interrupts at 2.9 s.
    sim.say(2_900, 3_700);
    sim.run_until(3_400);
    assert!(sim.frames.len() > frames_for("Hi."), "reply was playing");
    assert_eq!(sim.clears.len(), 1);
    assert!(
        sim.cancels
            .contains(&Output::CancelBrain { turn: TurnId(0) })
    );
    assert!(
        sim.cancels
            .iter()
            .any(|c| matches!(c, Output::CancelSpeech { through } if *through >= SegmentId(2)))
    );
    // Results that straggle in after the cancellation are ignored.
    let stale = sim.conv.stats().stale_results;
    sim.conv.handle_input(
        sim.now,
        Input::BrainText {
            turn: TurnId(0),
            text: "late".into(),
        },
    );
    sim.conv.handle_input(
        sim.now,
        Input::SpeechAudio {
            segment: SegmentId(2),
            samples: &[1000; 160],
        },
    );
    assert_eq!(sim.conv.stats().stale_results, stale + 2);
}

#[test]
fn a_short_backchannel_does_not_interrupt() {
    let mut config = config();
    config.greeting = "Hello, you have reached the clinic, we are happy to help you today.".into();
    let mut sim = Sim::new(config);
    sim.start();
    // 200 ms "mm-hm" in the middle of the greeting (which runs ~3.7 s).
    sim.say(1_500, 1_700);
    sim.run_until(8_000);
    assert!(sim.clears.is_empty());
    assert!(sim.transcribed.is_empty(), "a backchannel is not a turn");
    assert_eq!(sim.events_of("backchannel").len(), 1);
    let agent = sim.agent_turns();
    assert_eq!(agent.len(), 1);
    assert!(!agent[0].interrupted);
}

#[test]
fn dtmf_interrupts_and_goes_to_the_brain() {
    let mut config = config();
    config.greeting = "Press one for appointments or two for billing, or stay on the line.".into();
    let mut sim = Sim::new(config);
    sim.start();
    sim.schedule(ms(1_000), Due::Dtmf('1'));
    sim.run_until(8_000);
    assert_eq!(sim.clears.len(), 1);
    assert_eq!(sim.clears[0], ms(1_000));
    assert_eq!(sim.asked.len(), 1);
    assert_eq!(sim.asked[0].input, CallerInput::Dtmf('1'));
    assert_eq!(sim.events_of("dtmf").len(), 1);
    assert_eq!(sim.events_of("dtmf")[0].detail, "1");
    let agent = sim.agent_turns();
    assert!(agent[0].interrupted);
    assert_eq!(agent[1].text, "You pressed 1.");
}

#[test]
fn silence_is_prompted_then_the_agent_says_goodbye_and_hangs_up() {
    let mut sim = Sim::new(config());
    sim.start();
    sim.run_until(120_000);
    let prompts = sim.events_of("silence_prompt");
    assert_eq!(prompts.len(), 2);
    let (at, reason) = sim.hangup.clone().expect("hung up");
    assert_eq!(reason, EndReason::SilenceTimeout);
    assert_eq!(sim.conv.ended(), Some(&EndReason::SilenceTimeout));
    let texts: Vec<_> = sim.agent_turns().iter().map(|t| t.text.clone()).collect();
    assert_eq!(
        texts,
        vec![
            "Hello, this is the clinic.",
            "Are you still there?",
            "Are you still there?",
            "Thank you for calling. Goodbye."
        ]
    );
    // Three 8 s silences plus the four utterances (~5.7 s with tts delays): hung up at ~30 s,
    // only after the goodbye was heard.
    assert!(at > ms(28_000) && at < ms(32_000), "{at:?}");
    let goodbye_mark = sim.marks_sent.last().unwrap().0;
    assert!(at >= goodbye_mark);
}

#[test]
fn speaking_resets_the_silence_prompts() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("hello".into());
    sim.start();
    // First prompt at ~9.5 s; the caller answers at 12 s; then silence again.
    sim.say(12_000, 12_600);
    sim.run_until(60_000);
    let (_, reason) = sim.hangup.clone().unwrap();
    assert_eq!(reason, EndReason::SilenceTimeout);
    // 1 prompt before the answer, then 2 more before goodbye.
    assert_eq!(sim.events_of("silence_prompt").len(), 3);
}

#[test]
fn the_call_ends_gracefully_at_the_maximum_length() {
    let mut config = config();
    config.max_call = Duration::from_secs(20);
    config.silence_timeout = Duration::from_secs(60);
    let mut sim = Sim::new(config);
    sim.start();
    sim.run_until(60_000);
    let (at, reason) = sim.hangup.clone().unwrap();
    assert_eq!(reason, EndReason::MaxDuration);
    assert!(at >= ms(20_000) && at < ms(23_000));
    assert_eq!(
        sim.agent_turns().last().unwrap().text,
        "Thank you for calling. Goodbye."
    );
}

#[test]
fn the_brain_can_end_the_call_after_its_reply_is_heard() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("bye".into());
    sim.brain = Box::new(|_| {
        vec![
            BrainEvent::Text("Goodbye!".into()),
            BrainEvent::Action(Action::Hangup),
        ]
    });
    sim.start();
    sim.say(2_000, 2_500);
    sim.run_until(20_000);
    let (at, reason) = sim.hangup.clone().unwrap();
    assert_eq!(reason, EndReason::AgentHungUp);
    let last_mark_echo = sim.play_end;
    assert!(at >= last_mark_echo, "hung up before the goodbye played");
}

#[test]
fn a_failing_brain_gets_an_apology_not_silence() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("hello".into());
    sim.start();
    sim.say(2_000, 2_500);
    // Replace the brain's answer by a failure once it is asked.
    sim.run_until(3_450);
    assert_eq!(sim.asked.len(), 1);
    sim.queue
        .retain(|(_, _, d)| !matches!(d, Due::BrainText(..) | Due::BrainDone(..)));
    let at = sim.now + ms(10);
    sim.schedule(
        at,
        Due::BrainDone(TurnId(0), Err(EngineError::Unavailable("down".into()))),
    );
    sim.run_until(10_000);
    let errors = sim.events_of("error");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].detail.contains("brain"));
    let last = sim.agent_turns().last().unwrap().text.clone();
    assert_eq!(last, ConversationConfig::default().apology);
}

#[test]
fn a_caller_who_keeps_talking_is_answered_once_for_everything() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("I want to book".into());
    sim.transcripts.push_back("a cleaning on Tuesday".into());
    sim.brain_delay = ms(600);
    sim.start();
    // Speech, an 800 ms pause (endpoint fires at 700 ms), then more speech before any reply
    // audio could start (stt 150 + brain 600).
    sim.say(2_000, 3_000);
    sim.say(3_800, 5_000);
    sim.run_until(15_000);
    assert!(
        sim.clears.is_empty(),
        "nothing was played, nothing to clear"
    );
    assert_eq!(sim.events_of("reply_abandoned").len(), 1);
    let last = sim.asked.last().unwrap();
    assert_eq!(
        last.input,
        CallerInput::Speech("I want to book a cleaning on Tuesday".into())
    );
    // The abandoned request's caller line is not duplicated in history.
    assert!(
        !last
            .history
            .iter()
            .any(|m| m.role == Role::Caller && m.text == "I want to book")
    );
    let replies: Vec<_> = sim.agent_turns().iter().map(|t| t.text.clone()).collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(
        replies[1],
        "You said I want to book a cleaning on Tuesday. Anything else?"
    );
}

#[test]
fn a_caller_hangup_mid_reply_records_what_was_heard() {
    let mut config = config();
    config.greeting = "Hello, you have reached the clinic, we are happy to help you today.".into();
    let mut sim = Sim::new(config);
    sim.start();
    sim.run_until(1_000);
    sim.conv.handle_input(sim.now, Input::Stop);
    sim.drain();
    assert_eq!(sim.conv.ended(), Some(&EndReason::CallerHungUp));
    let agent = sim.agent_turns();
    assert_eq!(agent.len(), 1);
    assert!(agent[0].interrupted);
    let heard = agent[0].heard.clone().unwrap();
    assert!(heard.starts_with("Hello,"), "{heard}");
    assert!(!heard.contains("today"), "{heard}");
    assert!(
        sim.hangup.is_none(),
        "the caller hung up; we do not send a hangup"
    );
    assert_eq!(sim.events_of("stop").len(), 1);
    // After the end, nothing more happens.
    assert_eq!(sim.conv.poll_timeout(), None);
}

#[test]
fn marks_echoed_for_cleared_audio_are_counted_as_stale() {
    let mut config = config();
    config.greeting = "One. Two three four five six seven eight nine ten eleven twelve.".into();
    let mut sim = Sim::new(config);
    sim.start();
    sim.schedule(ms(1_500), Due::Dtmf('5'));
    sim.run_until(10_000);
    assert_eq!(sim.clears.len(), 1);
    // The greeting's second mark was never sent (its audio was dropped before the mark), and
    // the first was echoed before the clear: no stale marks here, and no lost ones.
    assert_eq!(sim.conv.stats().stale_marks, 0);
    sim.conv.handle_input(sim.now, Input::MarkPlayed("seg-1"));
    sim.conv
        .handle_input(sim.now, Input::MarkPlayed("not-ours"));
    assert_eq!(sim.conv.stats().stale_marks, 2);
}

#[test]
fn a_short_answer_while_the_agent_prepares_is_a_turn_not_a_backchannel() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("I want to book".into());
    sim.transcripts.push_back("Tuesday".into());
    sim.brain_delay = ms(1_500);
    sim.start();
    // A turn, then, while the brain thinks (nothing audible yet), a 250 ms "Tuesday".
    sim.say(2_000, 3_000);
    sim.say(3_900, 4_150);
    sim.run_until(15_000);
    assert!(sim.events_of("backchannel").is_empty());
    assert_eq!(sim.transcribed.len(), 2);
    let last = sim.asked.last().unwrap();
    assert_eq!(
        last.input,
        CallerInput::Speech("I want to book Tuesday".into())
    );
}

#[test]
fn noise_that_abandons_a_reply_does_not_lose_the_question() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("what are your hours".into());
    sim.transcripts.push_back(String::new()); // the cough transcribes as nothing
    sim.brain_delay = ms(900);
    sim.start();
    sim.say(2_000, 3_000);
    // A 500 ms cough while the brain is still thinking abandons the unheard reply.
    sim.say(3_800, 4_300);
    sim.run_until(15_000);
    assert_eq!(sim.events_of("reply_abandoned").len(), 1);
    let last = sim.asked.last().unwrap();
    assert_eq!(
        last.input,
        CallerInput::Speech("what are your hours".into())
    );
    let replies: Vec<_> = sim.agent_turns().iter().map(|t| t.text.clone()).collect();
    assert_eq!(
        replies.last().unwrap(),
        "You said what are your hours. Anything else?"
    );
    assert!(sim.events_of("silence_prompt").is_empty());
}

fn early_config() -> ConversationConfig {
    ConversationConfig {
        early_transcribe_ms: Some(250),
        ..config()
    }
}

#[test]
fn early_transcription_starts_in_the_pause_so_the_reply_does_not_wait_for_the_decode() {
    let mut sim = Sim::new(early_config());
    sim.transcripts.push_back("I need a cleaning".into());
    sim.start();
    sim.say(2_000, 3_000);
    sim.run_until(12_000);
    // One decode, of the same audio the endpointed turn would have sent.
    assert_eq!(sim.transcribed.len(), 1);
    let (_, len) = sim.transcribed[0];
    let expected = (1_000 + 300 + 200) * 16;
    assert!(
        (len as i64 - expected as i64).abs() <= 3 * 320,
        "stt audio {len} vs {expected}"
    );
    assert_eq!(
        sim.asked[0].input,
        CallerInput::Speech("I need a cleaning".into())
    );
    let caller = sim.caller_turns();
    assert_eq!(caller[0].text, "I need a cleaning");
    // The transcript (150 ms after the 250 ms mark) was ready before the 700 ms endpoint.
    assert_eq!(caller[0].latency.endpointing_ms, Some(700));
    assert_eq!(caller[0].latency.stt_ms, Some(0));
    let reply = sim.agent_turns()[1];
    assert_eq!(reply.text, "You said I need a cleaning. Anything else?");
    // Voice to voice: endpointing + brain + tts; the decode is hidden in the pause.
    assert_eq!(reply.latency.voice_to_voice_ms, Some(700 + 200 + 100));
}

#[test]
fn a_slow_early_transcript_is_waited_for_not_requested_twice() {
    let mut sim = Sim::new(early_config());
    sim.stt_delay = ms(900);
    sim.transcripts.push_back("I need a cleaning".into());
    sim.start();
    sim.say(2_000, 3_000);
    sim.run_until(12_000);
    assert_eq!(sim.transcribed.len(), 1);
    let caller = sim.caller_turns();
    // Asked at ~3.25 s, answered 900 ms later, 450 ms after the endpoint at ~3.7 s.
    let stt = caller[0].latency.stt_ms.unwrap();
    assert!((430..=470).contains(&stt), "{stt}");
    assert_eq!(sim.asked.len(), 1);
}

#[test]
fn a_caller_who_pauses_and_goes_on_is_transcribed_again_whole() {
    let mut sim = Sim::new(early_config());
    // The first decode covers only the words before the pause; the second all of them.
    sim.transcripts.push_back("I would like".into());
    sim.transcripts
        .push_back("I would like to book a cleaning".into());
    sim.start();
    // A 400 ms pause: long enough for an early decode, too short to end the turn.
    sim.say(2_000, 2_800);
    sim.say(3_200, 4_200);
    sim.run_until(14_000);
    assert_eq!(sim.transcribed.len(), 2, "{:?}", sim.transcribed);
    let (_, first) = sim.transcribed[0];
    let (_, second) = sim.transcribed[1];
    assert!(second > first + 1_000 * 16, "{first} then {second}");
    // Only the whole turn is answered; the partial one is discarded when it comes back.
    assert_eq!(sim.asked.len(), 1);
    assert_eq!(
        sim.asked[0].input,
        CallerInput::Speech("I would like to book a cleaning".into())
    );
    let caller = sim.caller_turns();
    assert_eq!(caller.len(), 1);
    assert_eq!(caller[0].text, "I would like to book a cleaning");
    assert_eq!(sim.conv.stats().early_discarded, 1);
}

#[test]
fn no_early_decode_for_a_backchannel_while_the_agent_talks() {
    let mut sim = Sim::new(early_config());
    sim.start();
    // "mm-hm" (200 ms) in the middle of the greeting.
    sim.say(600, 800);
    sim.run_until(6_000);
    assert!(sim.transcribed.is_empty(), "{:?}", sim.transcribed);
    assert_eq!(sim.conv.stats().backchannels, 1);
}

#[test]
fn a_declined_early_transcription_falls_back_to_transcribing_at_the_end_of_the_turn() {
    let mut sim = Sim::new(early_config());
    sim.decline_early = true;
    sim.transcripts.push_back("I need a cleaning".into());
    sim.start();
    sim.say(2_000, 3_000);
    sim.run_until(12_000);
    // Asked once during the pause (declined, and not asked again for the same audio), then
    // once at the endpoint, which is answered as usual.
    assert_eq!(sim.declined.len(), 1);
    assert_eq!(sim.transcribed.len(), 1);
    let caller = sim.caller_turns();
    assert_eq!(caller[0].text, "I need a cleaning");
    assert_eq!(caller[0].latency.stt_ms, Some(150));
    assert!(
        sim.events_of("error").is_empty(),
        "a declined early decode is not an error"
    );
    assert_eq!(sim.asked.len(), 1);
}

#[test]
fn brain_notes_become_call_events_in_order_with_the_reply() {
    let mut sim = Sim::new(config());
    sim.transcripts.push_back("book it".into());
    sim.brain = Box::new(|_req: &BrainRequest| {
        vec![
            BrainEvent::Note {
                kind: "tool_call",
                detail: r#"{"name":"book"}"#.into(),
            },
            BrainEvent::Text("You're booked in.".into()),
        ]
    });
    sim.start();
    sim.say(2_000, 3_000);
    sim.run_until(10_000);
    let notes = sim.events_of("tool_call");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].detail, r#"{"name":"book"}"#);
    // Its sequence number comes from the core, after the call's start event.
    let start = sim.events_of("start")[0].seq;
    assert!(notes[0].seq > start);
    assert_eq!(sim.agent_turns()[1].text, "You're booked in.");
}

/// The caller says "hello" once; the brain answers with `reply`, one event per sentence.
fn sim_with_reply(reply: &'static [&'static str]) -> Sim {
    let mut config = config();
    config.greeting = "Hi.".into();
    let mut sim = Sim::new(config);
    sim.transcripts.push_back("hello".into());
    sim.brain = Box::new(move |_req: &BrainRequest| {
        reply
            .iter()
            .map(|s| BrainEvent::Text((*s).to_string()))
            .collect()
    });
    sim.start();
    sim.say(1_000, 1_600);
    sim
}

/// The sentences the core makes of a fixed text, as it sends them to TTS.
fn sentences(text: &str) -> Vec<String> {
    let mut buffer = format!("{text} ");
    let mut out = agent::engine::drain_sentences(&mut buffer);
    if !buffer.trim().is_empty() {
        out.push(buffer.trim().to_string());
    }
    out
}

#[test]
fn a_reply_whose_only_sentence_fails_to_synthesise_is_not_heard_and_is_apologised_for() {
    let mut sim = sim_with_reply(&["We open at eight."]);
    sim.failing_speech.push("We open at eight.".into());
    sim.run_until(9_000);
    let apology = ConversationConfig::default().apology;

    let agent = sim.agent_turns();
    let failed = agent
        .iter()
        .find(|t| t.text == "We open at eight.")
        .expect("the failed reply is recorded");
    assert_eq!(failed.heard.as_deref(), Some(""), "nothing of it was heard");
    let errors = sim.events_of("error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].detail.contains("text-to-speech"), "{errors:?}");
    // The brain's history holds no agent text the caller did not hear.
    assert!(
        !sim.conv
            .history()
            .iter()
            .any(|m| m.role == Role::Agent && m.text.contains("eight")),
        "{:?}",
        sim.conv.history()
    );
    // The apology went through TTS and was played: its frames were sent and its marks echoed.
    let last = agent.last().unwrap();
    assert_eq!(last.text, apology);
    assert_eq!(last.heard.as_deref(), Some(apology.as_str()));
    let apology_frames: usize = sentences(&apology).iter().map(|s| frames_for(s)).sum();
    assert_eq!(sim.frames.len(), frames_for("Hi.") + apology_frames);
    let last_agent = sim
        .conv
        .history()
        .iter()
        .rev()
        .find(|m| m.role == Role::Agent)
        .unwrap();
    assert_eq!(last_agent.text, apology);
}

#[test]
fn a_failed_apology_is_not_retried() {
    let mut sim = sim_with_reply(&["We open at eight."]);
    let apology = ConversationConfig::default().apology;
    sim.failing_speech.push("We open at eight.".into());
    sim.failing_speech.extend(sentences(&apology));
    sim.run_until(9_000);
    // The apology was tried once (each of its sentences synthesised once), then no more.
    let first = sentences(&apology).remove(0);
    let tries = sim.synthesized.iter().filter(|t| **t == first).count();
    assert_eq!(tries, 1, "{:?}", sim.synthesized);
    assert_eq!(
        sim.events_of("error").len(),
        1 + sentences(&apology).len(),
        "{:?}",
        sim.events
    );
    // Nothing but the greeting was heard, and the core is idle again (not stuck mid-turn).
    assert_eq!(sim.frames.len(), frames_for("Hi."));
    assert!(!sim.conv.agent_active());
    assert!(
        sim.agent_turns()
            .iter()
            .skip(1)
            .all(|t| t.heard.as_deref() == Some("")),
        "{:?}",
        sim.agent_turns()
    );
    // Later the silence rules take over as usual.
    sim.run_until(18_000);
    assert_eq!(sim.events_of("silence_prompt").len(), 1);
    let tries = sim.synthesized.iter().filter(|t| **t == first).count();
    assert_eq!(tries, 1, "{:?}", sim.synthesized);
}

#[test]
fn a_reply_that_fails_after_its_first_sentence_keeps_what_was_heard_without_apology() {
    let mut sim = sim_with_reply(&["We open at eight.", "We close at six."]);
    sim.failing_speech.push("We close at six.".into());
    sim.run_until(9_000);
    let agent = sim.agent_turns();
    let reply = agent
        .iter()
        .find(|t| t.text == "We open at eight. We close at six.")
        .expect("the reply is recorded");
    assert_eq!(reply.heard.as_deref(), Some("We open at eight."));
    assert!(!reply.interrupted);
    assert_eq!(sim.events_of("error").len(), 1);
    // Something of the reply was heard: no apology.
    let apology = ConversationConfig::default().apology;
    assert!(agent.iter().all(|t| t.text != apology), "{agent:?}");
    let last_agent = sim
        .conv
        .history()
        .iter()
        .rev()
        .find(|m| m.role == Role::Agent)
        .unwrap();
    assert_eq!(last_agent.text, "We open at eight.");
}

#[test]
fn failed_transcripts_of_real_turns_are_asked_again_then_go_to_the_brain_not_taken_for_silence() {
    let mut sim = Sim::new(config());
    let prompt = ConversationConfig::default().unheard_prompt;
    let max = ConversationConfig::default().max_unheard_prompts;
    assert_eq!(max, 2);
    sim.failing_transcripts = 3;
    sim.start();
    // Three real turns (1 s of speech each), each after the agent's previous prompt has
    // played (~3 s), none of which the recogniser can decode.
    sim.say(2_000, 3_000);
    sim.say(8_000, 9_000);
    sim.say(14_000, 15_000);
    sim.run_until(14_000);
    let prompts: Vec<_> = sim
        .agent_turns()
        .iter()
        .filter(|t| t.text == prompt)
        .map(|t| t.heard.clone())
        .collect();
    assert_eq!(prompts, vec![Some(prompt.clone()), Some(prompt.clone())]);
    assert!(sim.asked.is_empty(), "{:?}", sim.asked);
    // The third consecutive failure goes to the brain, which can offer a person or a message.
    sim.run_until(24_000);
    assert_eq!(sim.asked.len(), 1);
    assert_eq!(sim.asked[0].input, CallerInput::Unheard);
    assert_eq!(
        sim.agent_turns().last().unwrap().text,
        "I can't hear you well."
    );
    let repeats = sim
        .agent_turns()
        .iter()
        .filter(|t| t.text == prompt)
        .count();
    assert_eq!(repeats, max as usize);
    assert_eq!(sim.events_of("error").len(), 3);
    assert!(sim.events_of("silence_prompt").is_empty());
    assert!(sim.hangup.is_none());
    assert!(sim.conv.ended().is_none());
}

#[test]
fn a_failed_transcript_of_a_real_turn_resets_the_silence_prompts() {
    let mut sim = Sim::new(config());
    sim.failing_transcripts = 1;
    sim.start();
    // First silence prompt at ~9.5 s; the caller answers at 12 s, undecodably; then silence.
    sim.say(12_000, 12_600);
    sim.run_until(80_000);
    let (_, reason) = sim.hangup.clone().unwrap();
    assert_eq!(reason, EndReason::SilenceTimeout);
    // 1 prompt before the answer, then 2 more before goodbye: the caller was there.
    assert_eq!(sim.events_of("silence_prompt").len(), 3);
    let prompt = ConversationConfig::default().unheard_prompt;
    assert_eq!(
        sim.agent_turns()
            .iter()
            .filter(|t| t.text == prompt)
            .count(),
        1
    );
}

#[test]
fn a_failed_transcript_of_a_short_sound_is_still_treated_as_noise() {
    let mut sim = Sim::new(config());
    sim.failing_transcripts = 1;
    sim.start();
    // A 200 ms sound while idle: a turn for the endpointer, too short to be a real one.
    sim.say(3_000, 3_200);
    sim.run_until(12_000);
    assert_eq!(sim.transcribed.len(), 1);
    assert_eq!(sim.events_of("error").len(), 1);
    let prompt = ConversationConfig::default().unheard_prompt;
    assert!(sim.agent_turns().iter().all(|t| t.text != prompt));
    assert!(sim.asked.is_empty());
}

/// The caller's turn (2.0–2.5 s) is endpointed and transcribed by about 3.4 s, when the brain
/// is asked; the filler is due 1.5 s later.
fn slow_brain_sim(brain_delay_ms: u64) -> Sim {
    let mut sim = Sim::new(config());
    sim.brain_delay = ms(brain_delay_ms);
    sim.transcripts.push_back("hello".into());
    sim.start();
    sim.say(2_000, 2_500);
    sim
}

/// Media time (ms) at which the first frame after `after_ms` was released.
fn first_frame_after(sim: &Sim, after_ms: u64) -> Option<u64> {
    sim.frames
        .iter()
        .map(|t| t.as_millis() as u64)
        .find(|&t| t > after_ms)
}

#[test]
fn a_slow_brain_gets_the_filler_then_its_answer_follows_it() {
    let mut sim = slow_brain_sim(4_000);
    sim.run_until(3_300);
    assert_eq!(sim.asked.len(), 0, "the turn is still being endpointed");
    sim.run_until(15_000);
    assert_eq!(sim.asked.len(), 1);
    let filler = ConversationConfig::default().filler.unwrap();
    let fillers = sim.events_of("filler");
    assert_eq!(fillers.len(), 1, "{:?}", sim.events);
    let reply = sim
        .synthesized
        .iter()
        .position(|t| t == &filler)
        .expect("the filler was spoken");
    assert_eq!(
        sim.synthesized[reply + 1..],
        ["You said hello.".to_string(), "Anything else?".to_string()],
        "the answer follows the filler"
    );
    // Caller speech ends at 2.5 s; the first agent audio after it is the filler, within 1.5 s
    // of the brain being asked (plus endpointing and the decode), not the 4 s brain.
    let first = first_frame_after(&sim, 2_500).expect("agent audio after the turn");
    assert!(first < 2_500 + 3_000, "dead air until {first} ms");
    let turns = sim.agent_turns();
    let answer = turns.last().unwrap();
    assert_eq!(
        answer.text,
        format!("{filler} You said hello. Anything else?"),
        "the filler is recorded as part of the reply it stood in for"
    );
    assert_eq!(answer.heard.as_deref(), Some(answer.text.as_str()));
}

#[test]
fn a_quick_brain_gets_no_filler() {
    let mut sim = slow_brain_sim(1_000);
    sim.run_until(15_000);
    assert_eq!(sim.asked.len(), 1);
    assert!(sim.events_of("filler").is_empty(), "{:?}", sim.events);
    assert!(
        !sim.synthesized
            .contains(&ConversationConfig::default().filler.unwrap())
    );
}

#[test]
fn a_brain_that_fails_after_the_filler_still_gets_the_apology() {
    let mut sim = slow_brain_sim(60_000);
    sim.run_until(6_000);
    assert_eq!(sim.events_of("filler").len(), 1);
    sim.queue
        .retain(|(_, _, d)| !matches!(d, Due::BrainText(..) | Due::BrainDone(..)));
    let at = sim.now + ms(10);
    sim.schedule(
        at,
        Due::BrainDone(TurnId(0), Err(EngineError::Unavailable("timed out".into()))),
    );
    sim.run_until(15_000);
    let defaults = ConversationConfig::default();
    let last = sim.agent_turns().last().unwrap().text.clone();
    assert_eq!(
        last,
        format!("{} {}", defaults.filler.unwrap(), defaults.apology),
        "the filler alone is not an answer"
    );
}

#[test]
fn no_filler_while_the_caller_is_speaking_and_none_when_turned_off() {
    // The caller goes on talking (3.4–6 s) while the brain is slow: no filler over them.
    let mut sim = slow_brain_sim(60_000);
    sim.say(3_400, 6_000);
    sim.run_until(5_500);
    assert!(sim.events_of("filler").is_empty(), "{:?}", sim.events);

    let mut sim = Sim::new(ConversationConfig {
        filler: None,
        ..config()
    });
    sim.brain_delay = ms(4_000);
    sim.transcripts.push_back("hello".into());
    sim.start();
    sim.say(2_000, 2_500);
    sim.run_until(15_000);
    assert!(sim.events_of("filler").is_empty());
    assert_eq!(
        sim.agent_turns().last().unwrap().text,
        "You said hello. Anything else?"
    );
}

#[test]
fn a_burst_of_late_caller_frames_moves_the_playout_so_no_frame_is_placed_behind_the_caller() {
    // The greeting starts playing; then a second of caller frames held up on the network
    // arrives at once. Every agent frame released after that must be placed at or after the
    // caller clock (the recording cannot place audio behind it), and none is lost.
    let mut conv = Conversation::new(config(), Box::new(EnergyVad::new(-40.0))).unwrap();
    let silence = [0i16; 160];
    let mut now = Duration::ZERO;
    conv.handle_input(now, Input::CallerAudio(&silence));
    conv.handle_input(now, Input::Start);
    let mut segments = Vec::new();
    let mut frames: Vec<(u64, u64)> = Vec::new(); // (at_sample, caller samples when released)
    let mut caller = 160u64;
    let mut drain = |conv: &mut Conversation, caller: u64, segments: &mut Vec<SegmentId>| {
        while let Some(out) = conv.poll_output() {
            match out {
                Output::Synthesize { segment, .. } => segments.push(segment),
                Output::Media(f) => frames.push((f.at_sample, caller)),
                _ => {}
            }
        }
    };
    drain(&mut conv, caller, &mut segments);
    let tone: Vec<i16> = (0..16_000)
        .map(|i| ((i as f32 * 0.3).sin() * 7000.0) as i16)
        .collect();
    for s in segments.clone() {
        conv.handle_input(
            now,
            Input::SpeechAudio {
                segment: s,
                samples: &tone,
            },
        );
        conv.handle_input(
            now,
            Input::SpeechDone {
                segment: s,
                result: Ok(()),
            },
        );
    }
    drain(&mut conv, caller, &mut segments);
    for step in 0..200u64 {
        now += FRAME_DURATION;
        if step == 10 {
            // The burst: 50 frames (1 s) at once.
            for _ in 0..50 {
                conv.handle_input(now, Input::CallerAudio(&silence));
                caller += 160;
                drain(&mut conv, caller, &mut segments);
            }
        }
        conv.handle_input(now, Input::CallerAudio(&silence));
        caller += 160;
        drain(&mut conv, caller, &mut segments);
    }
    // A frame goes out when the caller clock is at most a frame past its place.
    let late: Vec<_> = frames.iter().filter(|(at, c)| at + 160 < *c).collect();
    assert!(
        late.is_empty(),
        "frames placed behind the caller clock: {late:?}"
    );
    assert!(conv.stats().reanchored >= 1);
    let total = tone.len() as u64 * segments.len() as u64 / 160;
    assert!(
        frames.len() as u64 >= total,
        "{} of {total} frames sent",
        frames.len()
    );
}

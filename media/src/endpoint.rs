//! Endpointing: turning per-frame speech probabilities into "the caller started speaking" and
//! "the caller has finished their turn".
//!
//! The endpointer is fed one probability per frame (from any [`crate::vad::VoiceDetector`]) and
//! counts media time in samples itself, so its decisions are a pure function of the frames it saw.
//! It knows nothing about the agent: whether a start of speech is a barge-in, a backchannel
//! ("mm-hm") or a real turn is the conversation core's decision.

/// Tunable endpointing thresholds. The defaults were chosen for 8 kHz phone speech decoded to
/// 16 kHz and scored by earshot; each field says why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointConfig {
    /// A frame whose speech probability is at or above this counts as speech. 0.5 is the
    /// detector's own decision boundary; raise it on noisy lines.
    pub speech_threshold: f32,
    /// Consecutive speech needed before a turn is considered started. 60 ms (three 20 ms frames)
    /// ignores clicks and line pops, yet still reacts within one syllable.
    pub min_speech_ms: u32,
    /// Silence after speech that ends the turn. 700 ms: shorter cuts callers off in the pauses
    /// they make while reading a date or a phone number; longer makes the agent feel slow (it
    /// adds directly to voice-to-voice latency).
    pub end_silence_ms: u32,
    /// Longest single turn; the turn is ended (forced) at this length so speech-to-text sees a
    /// bounded segment. 28 s stays inside Whisper's 30 s window with room for pre-roll.
    pub max_turn_ms: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            speech_threshold: 0.5,
            min_speech_ms: 60,
            end_silence_ms: 700,
            max_turn_ms: 28_000,
        }
    }
}

/// What the endpointer decided after a frame. Positions are in samples of media time at the
/// endpointer's sample rate, counted from the first frame it was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// Speech has lasted `min_speech_ms`; it began at `start`.
    SpeechStarted { start: u64 },
    /// The turn that began at `start` is over; the last speech frame ended at `end`.
    /// `forced` is true when `max_turn_ms` ended it rather than silence.
    TurnEnded { start: u64, end: u64, forced: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No turn in progress; `run` counts consecutive speech samples that might start one, from
    /// `candidate`.
    Silence { candidate: u64, run: u64 },
    /// A turn is in progress.
    Speech {
        start: u64,
        last_speech_end: u64,
        silence_run: u64,
    },
}

/// Frame-by-frame endpointer. See the module docs.
#[derive(Debug, Clone)]
pub struct Endpointer {
    config: EndpointConfig,
    min_speech: u64,
    end_silence: u64,
    max_turn: u64,
    position: u64,
    state: State,
}

fn ms_to_samples(ms: u32, sample_rate: u32) -> u64 {
    u64::from(ms) * u64::from(sample_rate) / 1000
}

impl Endpointer {
    /// An endpointer for frames at `sample_rate`.
    pub fn new(config: EndpointConfig, sample_rate: u32) -> Self {
        Self {
            config,
            min_speech: ms_to_samples(config.min_speech_ms, sample_rate),
            end_silence: ms_to_samples(config.end_silence_ms, sample_rate),
            max_turn: ms_to_samples(config.max_turn_ms, sample_rate),
            position: 0,
            state: State::Silence {
                candidate: 0,
                run: 0,
            },
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Samples fed so far (the end of the last frame).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether a turn is in progress (speech started and not yet ended).
    pub fn in_turn(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// Start of the turn in progress, if any.
    pub fn turn_start(&self) -> Option<u64> {
        match self.state {
            State::Speech { start, .. } => Some(start),
            State::Silence { .. } => None,
        }
    }

    /// In a turn: where its last speech frame ended and the silence since (samples).
    pub fn trailing_silence(&self) -> Option<(u64, u64)> {
        match self.state {
            State::Speech {
                last_speech_end,
                silence_run,
                ..
            } => Some((last_speech_end, silence_run)),
            State::Silence { .. } => None,
        }
    }

    /// Forgets any turn in progress (keeps the media clock running).
    pub fn reset_turn(&mut self) {
        self.state = State::Silence {
            candidate: self.position,
            run: 0,
        };
    }

    /// Feeds one frame of `frame_len` samples whose speech probability is `probability`.
    pub fn push(&mut self, probability: f32, frame_len: usize) -> Option<EndpointEvent> {
        let frame_start = self.position;
        let frame_end = frame_start + frame_len as u64;
        self.position = frame_end;
        let speech = probability >= self.config.speech_threshold;
        match self.state {
            State::Silence { candidate, run } => {
                if !speech {
                    self.state = State::Silence {
                        candidate: frame_end,
                        run: 0,
                    };
                    return None;
                }
                let candidate = if run == 0 { frame_start } else { candidate };
                let run = run + frame_len as u64;
                if run >= self.min_speech {
                    self.state = State::Speech {
                        start: candidate,
                        last_speech_end: frame_end,
                        silence_run: 0,
                    };
                    Some(EndpointEvent::SpeechStarted { start: candidate })
                } else {
                    self.state = State::Silence { candidate, run };
                    None
                }
            }
            State::Speech {
                start,
                last_speech_end,
                silence_run,
            } => {
                let (last_speech_end, silence_run) = if speech {
                    (frame_end, 0)
                } else {
                    (last_speech_end, silence_run + frame_len as u64)
                };
                if silence_run >= self.end_silence {
                    self.reset_turn();
                    return Some(EndpointEvent::TurnEnded {
                        start,
                        end: last_speech_end,
                        forced: false,
                    });
                }
                if frame_end - start >= self.max_turn {
                    self.reset_turn();
                    return Some(EndpointEvent::TurnEnded {
                        start,
                        end: last_speech_end,
                        forced: true,
                    });
                }
                self.state = State::Speech {
                    start,
                    last_speech_end,
                    silence_run,
                };
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;
    const FRAME: usize = 320;

    fn feed(ep: &mut Endpointer, pattern: &[(f32, usize)]) -> Vec<EndpointEvent> {
        let mut events = Vec::new();
        for &(p, frames) in pattern {
            for _ in 0..frames {
                events.extend(ep.push(p, FRAME));
            }
        }
        events
    }

    #[test]
    fn a_turn_starts_after_min_speech_and_ends_after_silence() {
        let mut ep = Endpointer::new(EndpointConfig::default(), RATE);
        // 10 silent frames, 25 speech frames (500 ms), then 40 silent frames (800 ms).
        let events = feed(&mut ep, &[(0.0, 10), (0.9, 25), (0.0, 40)]);
        let start = 10 * FRAME as u64;
        assert_eq!(
            events,
            vec![
                EndpointEvent::SpeechStarted { start },
                EndpointEvent::TurnEnded {
                    start,
                    end: start + 25 * FRAME as u64,
                    forced: false
                }
            ]
        );
        assert!(!ep.in_turn());
    }

    #[test]
    fn turn_end_fires_exactly_when_silence_reaches_the_threshold() {
        let mut ep = Endpointer::new(EndpointConfig::default(), RATE);
        feed(&mut ep, &[(1.0, 5)]);
        // 700 ms = 35 frames of silence: the 34th must not end the turn, the 35th must.
        assert!(feed(&mut ep, &[(0.0, 34)]).is_empty());
        assert!(matches!(
            ep.push(0.0, FRAME),
            Some(EndpointEvent::TurnEnded { forced: false, .. })
        ));
    }

    #[test]
    fn a_click_shorter_than_min_speech_starts_nothing() {
        let mut ep = Endpointer::new(EndpointConfig::default(), RATE);
        let events = feed(&mut ep, &[(1.0, 2), (0.0, 50), (1.0, 1), (0.0, 50)]);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn pauses_shorter_than_end_silence_stay_in_one_turn() {
        let mut ep = Endpointer::new(EndpointConfig::default(), RATE);
        let events = feed(
            &mut ep,
            &[
                (1.0, 20),
                (0.0, 20),
                (1.0, 20),
                (0.0, 20),
                (1.0, 20),
                (0.0, 40),
            ],
        );
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], EndpointEvent::SpeechStarted { start: 0 });
        assert_eq!(
            events[1],
            EndpointEvent::TurnEnded {
                start: 0,
                end: 100 * FRAME as u64,
                forced: false
            }
        );
    }

    #[test]
    fn a_monologue_is_cut_at_max_turn_and_a_new_turn_follows() {
        let config = EndpointConfig {
            max_turn_ms: 1_000,
            ..EndpointConfig::default()
        };
        let mut ep = Endpointer::new(config, RATE);
        let events = feed(&mut ep, &[(1.0, 60)]);
        assert_eq!(events[0], EndpointEvent::SpeechStarted { start: 0 });
        assert_eq!(
            events[1],
            EndpointEvent::TurnEnded {
                start: 0,
                end: 50 * FRAME as u64,
                forced: true
            }
        );
        // Speech continues, so a new turn starts at frame 50.
        assert_eq!(
            events[2],
            EndpointEvent::SpeechStarted {
                start: 50 * FRAME as u64
            }
        );
    }

    #[test]
    fn threshold_is_respected() {
        let config = EndpointConfig {
            speech_threshold: 0.8,
            ..EndpointConfig::default()
        };
        let mut ep = Endpointer::new(config, RATE);
        assert!(feed(&mut ep, &[(0.7, 50)]).is_empty());
        assert!(!feed(&mut ep, &[(0.8, 5)]).is_empty());
    }
}

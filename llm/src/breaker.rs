//! The circuit breaker: a provider that keeps failing is skipped for a while, so callers are
//! answered by the offline receptionist at once instead of each waiting out a timeout first.
//!
//! Sans-IO: every method takes `now`, so the rules are tested without sleeping. One breaker per
//! provider (base URL), shared by every call of the process ([`crate::Providers`]).

use std::time::{Duration, Instant};

/// Consecutive failed turns that open the breaker. 3: one failure is often a blip (a 500, a
/// dropped connection), three in a row is an outage or a rate limit, and each costs a caller
/// up to the first-token timeout before the offline answer.
pub const FAILURES_TO_OPEN: u32 = 3;

/// How long an open breaker skips the provider before one trial turn. 30 s: long enough that a
/// down provider costs one slow turn per half-minute across the whole server, short enough that
/// a recovered one is back within a caller's conversation.
pub const OPEN_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial turn is in flight since `since`; others are skipped until it reports. A trial
    /// that never reports (its caller hung up mid-turn) is replaced after `open_for`.
    HalfOpen {
        since: Instant,
    },
}

/// Whether a turn may ask the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Allowed,
    /// The one trial after the breaker was open.
    Trial,
    Skipped,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    state: State,
    failures_to_open: u32,
    open_for: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(FAILURES_TO_OPEN, OPEN_FOR)
    }
}

impl CircuitBreaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            failures_to_open: failures_to_open.max(1),
            open_for,
        }
    }

    /// Asks to use the provider now.
    pub fn permit(&mut self, now: Instant) -> Permit {
        let trial_due = match self.state {
            State::Closed { .. } => return Permit::Allowed,
            State::Open { until } => now >= until,
            State::HalfOpen { since } => now >= since + self.open_for,
        };
        if trial_due {
            self.state = State::HalfOpen { since: now };
            Permit::Trial
        } else {
            Permit::Skipped
        }
    }

    pub fn record_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.failures_to_open => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + self.open_for,
            },
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_open_it_then_one_trial_after_the_pause() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(3, Duration::from_secs(30));
        for i in 0..2 {
            assert_eq!(b.permit(t0), Permit::Allowed);
            b.record_failure(t0 + Duration::from_secs(i));
        }
        assert!(!b.is_open(), "two failures are a blip");
        b.record_failure(t0 + Duration::from_secs(2));
        assert!(b.is_open());
        assert_eq!(b.permit(t0 + Duration::from_secs(10)), Permit::Skipped);
        assert_eq!(b.permit(t0 + Duration::from_secs(31)), Permit::Skipped);
        let later = t0 + Duration::from_secs(33);
        assert_eq!(b.permit(later), Permit::Trial);
        assert_eq!(b.permit(later), Permit::Skipped, "one trial at a time");
        b.record_failure(later);
        assert_eq!(
            b.permit(later + Duration::from_secs(1)),
            Permit::Skipped,
            "a failed trial opens it again"
        );
        let again = later + Duration::from_secs(31);
        assert_eq!(b.permit(again), Permit::Trial);
        b.record_success();
        assert_eq!(b.permit(again), Permit::Allowed);
        assert!(!b.is_open());
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(3, Duration::from_secs(30));
        b.record_failure(t0);
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        b.record_failure(t0);
        assert!(!b.is_open());
    }

    #[test]
    fn a_trial_that_never_reports_is_replaced() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(1, Duration::from_secs(30));
        b.record_failure(t0);
        let trial = t0 + Duration::from_secs(30);
        assert_eq!(b.permit(trial), Permit::Trial);
        assert_eq!(b.permit(trial + Duration::from_secs(29)), Permit::Skipped);
        assert_eq!(b.permit(trial + Duration::from_secs(30)), Permit::Trial);
    }
}

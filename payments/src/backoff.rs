//! When Stripe answers 429 (the platform's rate limit, shared by every tenant), the service
//! stops asking for a while: 1 s, doubling up to 32 s while Stripe keeps refusing, reset by
//! the first success. Meanwhile storefronts get `503 payment-provider-unavailable` with
//! `Retry-After`, without a request reaching Stripe.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FIRST: Duration = Duration::from_secs(1);
pub const LONGEST: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// No request goes to Stripe before this.
    until: Option<Instant>,
    /// The pause after the next 429.
    next: Duration,
}

#[derive(Debug)]
pub struct Backoff {
    state: Mutex<State>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                until: None,
                next: FIRST,
            }),
        }
    }
}

fn seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl Backoff {
    /// `Err(seconds to wait)` while backing off.
    pub fn check(&self) -> Result<(), u64> {
        self.check_at(Instant::now())
    }

    /// Stripe said 429: pause, and pause longer next time. Returns the seconds to wait.
    pub fn throttled(&self) -> u64 {
        self.throttled_at(Instant::now())
    }

    /// Stripe answered: the next 429 starts again from [`FIRST`].
    pub fn succeeded(&self) {
        let mut state = self.lock();
        state.until = None;
        state.next = FIRST;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_at(&self, now: Instant) -> Result<(), u64> {
        match self.lock().until {
            Some(until) if until > now => Err(seconds(until - now)),
            _ => Ok(()),
        }
    }

    fn throttled_at(&self, now: Instant) -> u64 {
        let mut state = self.lock();
        // Requests sent before the pause began come back 429 too; they do not lengthen it.
        if let Some(until) = state.until.filter(|until| *until > now) {
            return seconds(until - now);
        }
        let pause = state.next;
        state.until = Some(now + pause);
        state.next = (pause * 2).min(LONGEST);
        seconds(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest_and_reset_on_success() {
        let b = Backoff::default();
        let mut now = Instant::now();
        assert_eq!(b.check_at(now), Ok(()));
        let mut pauses = Vec::new();
        for _ in 0..8 {
            let pause = b.throttled_at(now);
            pauses.push(pause);
            assert_eq!(b.check_at(now), Err(pause), "no request while paused");
            now += Duration::from_secs(pause);
            assert_eq!(b.check_at(now), Ok(()), "free again once the pause is over");
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 32, 32]);
        b.succeeded();
        assert_eq!(b.throttled_at(now), 1);
    }

    #[test]
    fn refusals_of_requests_already_in_flight_do_not_lengthen_the_pause() {
        let b = Backoff::default();
        let now = Instant::now();
        assert_eq!(b.throttled_at(now), 1);
        assert_eq!(b.throttled_at(now + Duration::from_millis(10)), 1);
        assert_eq!(b.throttled_at(now + Duration::from_secs(1)), 2);
    }

    #[test]
    fn the_wait_is_rounded_up_to_whole_seconds() {
        let b = Backoff::default();
        let now = Instant::now();
        b.throttled_at(now);
        b.throttled_at(now + Duration::from_secs(1));
        assert_eq!(b.check_at(now + Duration::from_millis(1500)), Err(2));
    }
}

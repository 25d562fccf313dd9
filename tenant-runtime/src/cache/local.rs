//! The per-pod fallback for rate limits while Redis is away: the same per-minute counters,
//! kept in this process. With several replicas a client may get up to one allowance per pod
//! during an outage; never an unlimited one.

use std::collections::HashMap;
use std::sync::Mutex;

/// Counters of the current clock minute, dropped when the minute turns.
#[derive(Debug, Default)]
pub struct LocalCounters {
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    minute: i64,
    counts: HashMap<String, u32>,
}

impl LocalCounters {
    /// Counts one more for `key` in `minute`; the count so far, this one included.
    pub fn count(&self, key: &str, minute: i64) -> u32 {
        // A poisoned lock only means another request panicked mid-count: keep counting.
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.minute != minute {
            window.minute = minute;
            window.counts.clear();
        }
        let n = window.counts.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_start_again_each_minute() {
        let counters = LocalCounters::default();
        assert_eq!(counters.count("hold:a", 7), 1);
        assert_eq!(counters.count("hold:a", 7), 2);
        assert_eq!(counters.count("hold:b", 7), 1);
        assert_eq!(counters.count("hold:a", 8), 1);
    }
}

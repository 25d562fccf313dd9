//! A second of memory in front of Redis. During a rush on one event page, the Redis round trip,
//! not rendering, is most of what a cached request costs; so what this pod fetched from Redis
//! or stored there in the last second is served again from here. Bounded in bytes. An edit made
//! through this pod forgets its keys here at once; one made through another pod reaches this
//! pod's readers within [`LIFETIME`], on top of Redis' own time to live.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const LIFETIME: Duration = Duration::from_secs(1);
/// Pages are kilobytes and a storefront has a few hundred at most; a flood of distinct keys
/// (unknown slugs are not cached, but a tenant may have many events) stays within this.
const MAX_BYTES: usize = 4 << 20;

#[derive(Debug)]
pub struct Recent {
    lifetime: Duration,
    max_bytes: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<String, (Instant, Arc<str>)>,
    bytes: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self::new(LIFETIME, MAX_BYTES)
    }
}

impl Recent {
    fn new(lifetime: Duration, max_bytes: usize) -> Self {
        Self {
            lifetime,
            max_bytes,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock only means a request panicked while holding it; the map is whole.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let entries = self.entries();
        let (at, body) = entries.by_key.get(key)?;
        (at.elapsed() < self.lifetime).then(|| body.to_string())
    }

    pub fn put(&self, key: &str, body: &str) {
        if body.len() > self.max_bytes / 4 {
            return;
        }
        let mut entries = self.entries();
        entries.remove(key);
        if entries.bytes + body.len() > self.max_bytes {
            let lifetime = self.lifetime;
            entries.by_key.retain(|_, (at, _)| at.elapsed() < lifetime);
            entries.bytes = entries.by_key.values().map(|(_, b)| b.len()).sum();
            if entries.bytes + body.len() > self.max_bytes {
                entries.by_key.clear();
                entries.bytes = 0;
            }
        }
        entries.bytes += body.len();
        entries
            .by_key
            .insert(key.to_owned(), (Instant::now(), Arc::from(body)));
    }

    pub fn forget(&self, keys: &[String]) {
        let mut entries = self.entries();
        for key in keys {
            entries.remove(key);
        }
    }
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some((_, body)) = self.by_key.remove(key) {
            self.bytes -= body.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_what_it_was_given_until_it_is_forgotten_or_too_old() {
        let recent = Recent::new(Duration::from_millis(50), 1_000);
        recent.put("page:event:a", "<h1>A</h1>");
        assert_eq!(recent.get("page:event:a").as_deref(), Some("<h1>A</h1>"));
        assert_eq!(recent.get("page:event:b"), None);
        recent.forget(&["page:event:a".to_owned()]);
        assert_eq!(recent.get("page:event:a"), None);

        recent.put("page:event:a", "<h1>A again</h1>");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(recent.get("page:event:a"), None, "kept beyond its lifetime");
    }

    #[test]
    fn never_holds_more_than_its_bytes() {
        let recent = Recent::new(Duration::from_secs(60), 1_000);
        for i in 0..100 {
            recent.put(&format!("page:event:{i}"), &"x".repeat(100));
            let entries = recent.entries();
            assert!(entries.bytes <= 1_000, "{} bytes after {i}", entries.bytes);
            assert_eq!(
                entries.bytes,
                entries.by_key.values().map(|(_, b)| b.len()).sum::<usize>()
            );
        }
        assert_eq!(
            recent.get("page:event:99").as_deref(),
            Some(&*"x".repeat(100))
        );
        recent.put("page:event:huge", &"x".repeat(400));
        assert_eq!(
            recent.get("page:event:huge"),
            None,
            "one body may not take the whole budget"
        );
    }
}

//! Publisher tokens already verified, kept until they expire.
//!
//! A producer sends the same token with every publish until it renews it;
//! verifying it each time (signature, claims decoded into a JSON map) is a
//! fixed cost on the publish path. A cached token is still refused once it
//! expires, and no entry outlives [`MAX_AGE`], so a key removed from a JWK
//! set stops admitting its tokens within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Publisher;

/// Tokens kept at most; producers are a few services, so a full cache means
/// something unusual (many short-lived tokens) and is simply emptied.
const MAX_ENTRIES: usize = 256;
/// Longest a verified token is trusted without checking it again.
const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct PublisherCache {
    // Tokens are long (hundreds of bytes): a fast seeded hash, not SipHash.
    entries: Mutex<HashMap<Box<str>, (Publisher, Instant), foldhash::fast::RandomState>>,
}

impl PublisherCache {
    /// The publisher of `token` if it was verified less than [`MAX_AGE`]
    /// ago and has not expired by `now_unix` (with `leeway` seconds).
    pub(super) fn get(&self, token: &str, now_unix: u64, leeway: u64) -> Option<Publisher> {
        let mut entries = self.entries.lock().ok()?;
        let (publisher, verified_at) = entries.get(token)?;
        if verified_at.elapsed() < MAX_AGE
            && !super::expired(publisher.expires_at, leeway, now_unix)
        {
            return Some(publisher.clone());
        }
        entries.remove(token);
        None
    }

    /// Remembers that `token` verified as `publisher`.
    pub(super) fn insert(&self, token: &str, publisher: &Publisher) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(token.into(), (publisher.clone(), Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(expires_at: u64) -> Publisher {
        Publisher {
            name: "orders".into(),
            expires_at,
        }
    }

    #[test]
    fn a_verified_token_is_served_until_it_expires() {
        let cache = PublisherCache::default();
        assert_eq!(cache.get("t", 100, 0), None);
        cache.insert("t", &publisher(200));
        assert_eq!(cache.get("t", 199, 0), Some(publisher(200)));
        assert_eq!(cache.get("t", 200, 0), None, "expired at exp");
        assert_eq!(cache.get("t", 150, 0), None, "an expired entry is dropped");
    }

    #[test]
    fn leeway_extends_expiry_as_verification_does() {
        let cache = PublisherCache::default();
        cache.insert("t", &publisher(200));
        assert_eq!(cache.get("t", 204, 5), Some(publisher(200)));
        assert_eq!(cache.get("t", 205, 5), None);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let cache = PublisherCache::default();
        for i in 0..(MAX_ENTRIES * 3) {
            cache.insert(&format!("t{i}"), &publisher(u64::MAX));
        }
        let held = cache.entries.lock().map(|e| e.len()).unwrap_or(0);
        assert!(held <= MAX_ENTRIES, "{held} entries");
        assert!(cache
            .get(&format!("t{}", MAX_ENTRIES * 3 - 1), 0, 0)
            .is_some());
    }
}

//! Expiring caches: what EC2 said recently is reused for a while (instance types, prices),
//! and offerings that just failed for lack of capacity are kept out of launches and marked
//! unavailable for the scheduler until their entry expires, as upstream's
//! `UnavailableOfferings` cache does (3 minutes).
//!
//! Time comes from an injected [`Clock`] so expiry is tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use karpctl_cloud::OfferingKey;

/// Where "now" comes from.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock tests move by hand.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A map whose entries vanish `ttl` after they were put.
pub struct TtlCache<K, V> {
    ttl: Duration,
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            ttl,
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let now = self.clock.now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((expires, value)) if *expires > now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: K, value: V) {
        let expires = self.clock.now() + self.ttl;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (expires, value));
    }

    /// Every live key.
    pub fn keys(&self) -> Vec<K> {
        let now = self.clock.now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (expires, _)| *expires > now);
        entries.keys().cloned().collect()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Offerings EC2 recently had no capacity for.
pub struct UnavailableOfferings(TtlCache<OfferingKey, ()>);

/// Upstream's `UnavailableOfferingsTTL`.
pub const UNAVAILABLE_OFFERINGS_TTL: Duration = Duration::from_secs(3 * 60);

impl UnavailableOfferings {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self(TtlCache::new(UNAVAILABLE_OFFERINGS_TTL, clock))
    }

    pub fn mark(&self, key: OfferingKey) {
        self.mark_because(key, "insufficient capacity");
    }

    pub fn mark_because(&self, key: OfferingKey, reason: &str) {
        tracing::info!(
            instance_type = %key.instance_type,
            zone = %key.zone,
            capacity_type = %key.capacity_type,
            reason,
            "offering marked unavailable"
        );
        self.0.put(key, ());
    }

    pub fn contains(&self, key: &OfferingKey) -> bool {
        self.0.get(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use karpctl_cloud::CapacityType;

    use super::*;

    fn key(t: &str) -> OfferingKey {
        OfferingKey {
            instance_type: t.to_owned(),
            zone: "us-west-2a".to_owned(),
            capacity_type: CapacityType::OnDemand,
        }
    }

    #[test]
    fn unavailable_offerings_expire_after_three_minutes() {
        let clock = ManualClock::default();
        let cache = UnavailableOfferings::new(Arc::new(clock.clone()));
        cache.mark(key("m5.large"));
        assert!(cache.contains(&key("m5.large")));
        assert!(!cache.contains(&key("c5.large")));
        clock.advance(Duration::from_secs(179));
        assert!(cache.contains(&key("m5.large")));
        clock.advance(Duration::from_secs(1));
        assert!(!cache.contains(&key("m5.large")));
    }

    #[test]
    fn ttl_cache_forgets_expired_entries() {
        let clock = ManualClock::default();
        let cache = TtlCache::new(Duration::from_secs(60), Arc::new(clock.clone()));
        cache.put("a", 1);
        clock.advance(Duration::from_secs(30));
        cache.put("b", 2);
        assert_eq!(cache.get(&"a"), Some(1));
        clock.advance(Duration::from_secs(30));
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.keys(), vec!["b"]);
        clock.advance(Duration::from_secs(30));
        assert_eq!(cache.get(&"b"), None);
    }
}

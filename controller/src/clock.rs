//! The controller's wall clock, injected so that time-based decisions (expiry, termination
//! deadlines, liveness) are tested by setting the time instead of sleeping. Durations the
//! reconcilers wait are tokio's (`tokio::time`, paused in tests); the instants they compare
//! with object timestamps come from here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// `Clock::system()` in the binary; `Clock::manual(t)` in tests, moved with [`Clock::advance`].
#[derive(Clone, Debug)]
pub struct Clock(Option<Arc<Mutex<Timestamp>>>);

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    pub fn system() -> Self {
        Clock(None)
    }

    pub fn manual(start: Timestamp) -> Self {
        Clock(Some(Arc::new(Mutex::new(start))))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => Timestamp::now(),
            Some(t) => *t.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Move a manual clock forward (a system clock ignores it).
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.0 {
            let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
            *t = t
                .checked_add(SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX))
                .unwrap_or(Timestamp::MAX);
        }
    }
}

/// `later - earlier` as a std duration, zero when `later` is not later.
pub fn until(earlier: Timestamp, later: Timestamp) -> Duration {
    let ms = later.as_millisecond() - earlier.as_millisecond();
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `t + d`, saturating.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), "2026-12-07T10:01:30Z".parse().unwrap());
        assert_eq!(until(start, clock.now()), Duration::from_secs(90));
        assert_eq!(until(clock.now(), start), Duration::ZERO);
        assert_eq!(after(start, Duration::from_secs(90)), clock.now());
    }
}

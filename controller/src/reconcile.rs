//! The one reconcile driver: every per-object reconciler (node termination, NodeClaim
//! expiration, ...) is a [`Reconciler`] that names the objects it looks after and reconciles
//! one at a time; [`drive`] decides when each runs. An object runs when the cluster state
//! changes (at most every `min_interval`), when the time it asked for comes
//! ([`Outcome::RequeueAfter`], exactly then, not on a poll), and after a failure with
//! exponential backoff (1 s doubling to 5 min, reset by a success). Reconcilers are written
//! as "decide in pure code, act here", so running one more often than needed is harmless;
//! the driver only keeps them from spinning.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::{self, ClusterState, SharedState};

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing until the cluster changes.
    Done,
    /// Run again after this long (or earlier, when the cluster changes).
    RequeueAfter(Duration),
}

pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name in logs (`node.termination`, `nodeclaim.expiration`).
    const NAME: &'static str;
    /// The objects to look after now, from the synced cluster state.
    fn keys(&self, state: &ClusterState) -> Vec<String>;
    fn reconcile(&self, key: &str) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

#[derive(Clone, Copy, Debug)]
pub struct DriverSettings {
    /// An object is not run again on a change within this long of its last run.
    pub min_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Objects reconciled at once.
    pub concurrency: usize,
}

impl Default for DriverSettings {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            concurrency: 16,
        }
    }
}

/// When one object may run next.
#[derive(Clone, Copy, Debug, Default)]
struct Schedule {
    last_run: Option<Instant>,
    /// Requeue time or end of backoff.
    not_before: Option<Instant>,
    /// The cluster changed since it last ran.
    dirty: bool,
    failures: u32,
}

impl Schedule {
    /// When it is due, if it is waiting for anything.
    fn due_at(&self, settings: &DriverSettings) -> Option<Instant> {
        let after_change = self.dirty.then(|| {
            self.last_run
                .map(|t| t + settings.min_interval)
                .unwrap_or_else(Instant::now)
        });
        match (self.not_before, after_change) {
            // In backoff, a change does not cut the wait short.
            (Some(t), _) if self.failures > 0 => Some(t),
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        }
    }
}

/// Which keys are due at `now`: new ones, and ones whose time came.
fn due(
    keys: &[String],
    schedules: &BTreeMap<String, Schedule>,
    now: Instant,
    settings: &DriverSettings,
) -> Vec<String> {
    keys.iter()
        .filter(|k| match schedules.get(*k) {
            None => true,
            Some(s) => s.due_at(settings).is_some_and(|t| now >= t),
        })
        .cloned()
        .collect()
}

fn backoff(failures: u32, settings: &DriverSettings) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    settings
        .backoff_base
        .saturating_mul(factor)
        .min(settings.backoff_max)
}

/// Run `reconciler` until `changes` closes. Nothing runs before the state has synced.
pub async fn drive<R: Reconciler>(
    reconciler: Arc<R>,
    state: SharedState,
    mut changes: watch::Receiver<u64>,
    settings: DriverSettings,
) {
    let mut schedules: BTreeMap<String, Schedule> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let keys = {
            let s = state::read(&state);
            if s.synced() {
                reconciler.keys(&s)
            } else {
                Vec::new()
            }
        };
        schedules.retain(|k, _| keys.contains(k));
        let ready = due(&keys, &schedules, now, &settings);
        let results: Vec<(String, anyhow::Result<Outcome>)> = futures::stream::iter(ready)
            .map(|key| {
                let reconciler = reconciler.clone();
                async move {
                    let result = reconciler.reconcile(&key).await;
                    (key, result)
                }
            })
            .buffer_unordered(settings.concurrency.max(1))
            .collect()
            .await;
        let finished = Instant::now();
        for (key, result) in results {
            let s = schedules.entry(key.clone()).or_default();
            match result {
                Ok(outcome) => {
                    *s = Schedule {
                        last_run: Some(finished),
                        not_before: match outcome {
                            Outcome::Done => None,
                            Outcome::RequeueAfter(after) => Some(finished + after),
                        },
                        ..Schedule::default()
                    };
                }
                Err(e) => {
                    s.last_run = Some(finished);
                    s.dirty = false;
                    s.failures += 1;
                    let wait = backoff(s.failures, &settings);
                    s.not_before = Some(finished + wait);
                    tracing::warn!(controller = R::NAME, object = %key, error = %format!("{e:#}"), retry_in = ?wait, "reconciling failed, will retry");
                }
            }
        }
        let wake = schedules
            .values()
            .filter_map(|s| s.due_at(&settings))
            .min()
            .map(|t| t.max(Instant::now() + Duration::from_millis(10)));
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                // Let a burst of changes settle into one pass.
                tokio::time::sleep(Duration::from_millis(100)).await;
                changes.borrow_and_update();
                for s in schedules.values_mut() {
                    s.dirty = true;
                }
            }
            _ = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The scripted answer to the n-th run of a key.
    type Answer = Box<dyn Fn(&str, usize) -> anyhow::Result<Outcome> + Send + Sync>;

    /// Records when each key ran and answers from a script.
    struct Scripted {
        runs: Mutex<Vec<(String, Instant)>>,
        answer: Answer,
    }

    impl Reconciler for Scripted {
        const NAME: &'static str = "test";
        fn keys(&self, _state: &ClusterState) -> Vec<String> {
            vec!["a".into()]
        }
        async fn reconcile(&self, key: &str) -> anyhow::Result<Outcome> {
            let n = {
                let mut runs = self.runs.lock().unwrap();
                runs.push((key.to_owned(), Instant::now()));
                runs.len()
            };
            (self.answer)(key, n)
        }
    }

    fn synced_state() -> SharedState {
        let state = SharedState::default();
        for k in crate::state::Kind::ALL {
            state::write(&state).mark_synced(k);
        }
        state
    }

    async fn run_for(
        answer: impl Fn(&str, usize) -> anyhow::Result<Outcome> + Send + Sync + 'static,
        total: Duration,
    ) -> Vec<Duration> {
        let r = Arc::new(Scripted {
            runs: Mutex::new(Vec::new()),
            answer: Box::new(answer),
        });
        let (_tx, rx) = watch::channel(0u64);
        let start = Instant::now();
        let settings = DriverSettings {
            min_interval: Duration::from_secs(3600),
            ..DriverSettings::default()
        };
        let _ = tokio::time::timeout(total, drive(r.clone(), synced_state(), rx, settings)).await;
        r.runs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| t.duration_since(start))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_runs_exactly_when_asked_not_on_a_poll() {
        let runs = run_for(
            |_, n| {
                Ok(if n == 1 {
                    Outcome::RequeueAfter(Duration::from_secs(120))
                } else {
                    Outcome::Done
                })
            },
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0], Duration::ZERO);
        let second = runs[1].as_millis();
        assert!((120_000..120_100).contains(&second), "{runs:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_a_success_resets() {
        let runs = run_for(
            |_, n| {
                if n <= 4 {
                    anyhow::bail!("API error")
                } else {
                    Ok(Outcome::Done)
                }
            },
            Duration::from_secs(600),
        )
        .await;
        let secs: Vec<u64> = runs.iter().map(|d| d.as_secs()).collect();
        // 0, +1, +2, +4, +8 s; then done (no more runs without a change).
        assert_eq!(secs, vec![0, 1, 3, 7, 15], "{runs:?}");
    }

    #[test]
    fn backoff_is_capped() {
        let s = DriverSettings::default();
        assert_eq!(backoff(1, &s), Duration::from_secs(1));
        assert_eq!(backoff(4, &s), Duration::from_secs(8));
        assert_eq!(backoff(30, &s), Duration::from_secs(300));
    }
}

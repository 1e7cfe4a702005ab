//! Leader election on a `coordination.k8s.io/v1` Lease, as controller-runtime does it for
//! upstream Karpenter, so two replicas never reconcile at once: the holder renews every
//! retry period; a candidate takes the Lease once the holder has not renewed it for its lease
//! duration (measured on the candidate's own monotonic clock from when it last saw the record
//! change, never by comparing the holder's wall clock with ours); a leader that cannot renew
//! within the renew deadline has lost it and must stop reconciling; on shutdown the leader
//! releases it so the standby takes over at once instead of after the lease duration.
//!
//! What to do with the Lease is decided by pure functions ([`Observed`], [`decide`]) tested as
//! data; [`LeaderElector`] only reads and writes the Lease with optimistic concurrency (an
//! update carries the resourceVersion it read, so two candidates cannot both win).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

/// Upstream's (controller-runtime's) defaults.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's holder identity (`POD_NAME`).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
        }
    }
}

/// The Lease as last read, and when (on our monotonic clock) its record last changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub holder: Option<String>,
    pub lease_duration: Duration,
    pub renew_time: Option<MicroTime>,
    pub transitions: i32,
    pub resource_version: Option<String>,
    /// When the holder or renew time last changed as far as we know.
    pub changed_at: Instant,
}

impl Observed {
    /// The record in `lease`, keeping `previous`'s `changed_at` when the holder and renew
    /// time are what we saw before: a holder that stopped renewing expires on our clock.
    pub fn from_lease(lease: &Lease, previous: Option<&Observed>, now: Instant) -> Observed {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let lease_duration = Duration::from_secs(
            spec.lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(LEASE_DURATION.as_secs()),
        );
        let unchanged = previous
            .filter(|p| p.holder == holder && p.renew_time == spec.renew_time)
            .map(|p| p.changed_at);
        Observed {
            holder,
            lease_duration,
            renew_time: spec.renew_time,
            transitions: spec.lease_transitions.unwrap_or(0),
            resource_version: lease.metadata.resource_version.clone(),
            changed_at: unchanged.unwrap_or(now),
        }
    }

    pub fn expired(&self, now: Instant) -> bool {
        now >= self.changed_at + self.lease_duration
    }
}

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Released or expired: take it over (a new transition).
    Take,
    /// Someone else holds it and is renewing.
    Wait { holder: String },
}

/// Pure: given what we saw of the Lease, what `identity` should do at `now`.
pub fn decide(observed: Option<&Observed>, identity: &str, now: Instant) -> Decision {
    match observed {
        None => Decision::Create,
        Some(o) => match &o.holder {
            Some(holder) if holder == identity => Decision::Renew,
            Some(holder) if !o.expired(now) => Decision::Wait {
                holder: holder.clone(),
            },
            _ => Decision::Take,
        },
    }
}

/// Leadership ended without our asking: the caller must stop reconciling (and exit, so the
/// Deployment restarts it as a candidate, as controller-runtime does).
#[derive(Debug, thiserror::Error)]
#[error("leader election lost: {0}")]
pub struct LeaseLost(pub String);

/// One replica's view of, and hand on, the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The holder as last seen.
    pub fn holder(&self) -> Option<&str> {
        self.observed.as_ref().and_then(|o| o.holder.as_deref())
    }

    /// One attempt, as client-go's `tryAcquireOrRenew`: true when we hold the Lease after it.
    /// A write that loses a race (409) is a plain "no".
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let current = self.api.get_opt(&self.config.name).await?;
        if let Some(lease) = &current {
            self.observed = Some(Observed::from_lease(lease, self.observed.as_ref(), now));
        } else {
            self.observed = None;
        }
        let decision = decide(self.observed.as_ref(), &self.config.identity, now);
        let stamp = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let written = match (decision, current) {
            (Decision::Wait { .. }, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::Take {
                    spec.acquire_time = Some(stamp.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(self.config.identity.clone());
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(stamp);
                // The resourceVersion we read rides along: a concurrent writer makes this 409.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (Decision::Renew | Decision::Take, None) => unreachable!("decided on a Lease we saw"),
        };
        match written {
            Ok(lease) => {
                self.observed = Some(Observed::from_lease(&lease, None, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits, retrying every retry period, until we hold the Lease.
    pub async fn acquire(&mut self) {
        let mut waiting_on: Option<String> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(
                        lease = %format!("{}/{}", self.config.namespace, self.config.name),
                        identity = %self.config.identity,
                        "successfully acquired lease"
                    );
                    return;
                }
                Ok(false) => {
                    let holder = self.holder().map(str::to_string);
                    if holder != waiting_on {
                        tracing::info!(
                            lease = %format!("{}/{}", self.config.namespace, self.config.name),
                            holder = holder.as_deref().unwrap_or(""),
                            "waiting for the leader's lease to expire"
                        );
                        waiting_on = holder;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading or taking the lease failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews every retry period while leading; returns when leadership is lost: another
    /// holder took the Lease, or no renewal succeeded within the renew deadline.
    pub async fn keep_renewing(&mut self) -> LeaseLost {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let deadline = last_renewed + self.config.renew_deadline;
            let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_renewed = Instant::now(),
                Ok(Ok(false)) => {
                    if let Some(holder) = self.holder().filter(|h| *h != self.config.identity) {
                        return LeaseLost(format!("the lease is now held by {holder}"));
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease failed"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return LeaseLost(format!(
                    "not renewed within the renew deadline ({:?})",
                    self.config.renew_deadline
                ));
            }
        }
    }

    /// Gives the Lease up if we hold it: no holder, a one-second duration, so a standby takes
    /// it at its next retry rather than after the lease duration.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        self.observed = None;
        tracing::info!(
            lease = %format!("{}/{}", self.config.namespace, self.config.name),
            "released lease"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs: i64, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("karpenter-leader-election".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_secs).unwrap())),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn decisions() {
        let t0 = Instant::now();
        let held_by =
            |holder: Option<&str>| Observed::from_lease(&lease(holder, 100, "1"), None, t0);
        let cases: Vec<(&str, Option<Observed>, Duration, Decision)> = vec![
            ("no lease", None, Duration::ZERO, Decision::Create),
            (
                "ours",
                Some(held_by(Some("a"))),
                Duration::ZERO,
                Decision::Renew,
            ),
            (
                "ours, even if stale",
                Some(held_by(Some("a"))),
                Duration::from_secs(60),
                Decision::Renew,
            ),
            (
                "theirs, fresh",
                Some(held_by(Some("b"))),
                Duration::from_secs(14),
                Decision::Wait { holder: "b".into() },
            ),
            (
                "theirs, expired",
                Some(held_by(Some("b"))),
                Duration::from_secs(15),
                Decision::Take,
            ),
            (
                "released",
                Some(held_by(None)),
                Duration::ZERO,
                Decision::Take,
            ),
            (
                "empty holder",
                Some(held_by(Some(""))),
                Duration::ZERO,
                Decision::Take,
            ),
        ];
        for (name, observed, elapsed, want) in cases {
            assert_eq!(decide(observed.as_ref(), "a", t0 + elapsed), want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_runs_on_our_clock_from_the_last_change_we_saw() {
        let t0 = Instant::now();
        let first = Observed::from_lease(&lease(Some("b"), 100, "1"), None, t0);
        tokio::time::advance(Duration::from_secs(10)).await;
        // Read again with the same record (holder stopped renewing): the clock keeps running
        // from t0, even though the resourceVersion is unchanged or even moved.
        let same = Observed::from_lease(&lease(Some("b"), 100, "2"), Some(&first), Instant::now());
        assert_eq!(same.changed_at, t0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(same.expired(Instant::now()));
        // A renewal (new renew time) restarts it, whatever the wall clocks say.
        let renewed = Observed::from_lease(&lease(Some("b"), 50, "3"), Some(&same), Instant::now());
        assert_eq!(renewed.changed_at, Instant::now());
        assert!(!renewed.expired(Instant::now()));
        assert_eq!(
            decide(Some(&renewed), "a", Instant::now()),
            Decision::Wait { holder: "b".into() }
        );
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(decide(Some(&renewed), "a", Instant::now()), Decision::Take);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_holder_restarts_the_clock() {
        let t0 = Instant::now();
        let first = Observed::from_lease(&lease(Some("b"), 100, "1"), None, t0);
        tokio::time::advance(Duration::from_secs(14)).await;
        let other = Observed::from_lease(&lease(Some("c"), 100, "2"), Some(&first), Instant::now());
        assert_eq!(other.holder.as_deref(), Some("c"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!other.expired(Instant::now()));
    }

    #[test]
    fn upstream_defaults() {
        let config = LeaseConfig::new("karpenter-leader-election", "kube-system", "pod-a");
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_deadline, Duration::from_secs(10));
        assert_eq!(config.retry_period, Duration::from_secs(2));
    }
}

//! `expireAfter`: a NodeClaim is deleted at its creation time plus the `expireAfter` its
//! NodePool's template gave it, exactly then (the driver requeues it for that moment, no
//! poll), forcefully as upstream does (no disruption budgets), and through the termination
//! path (drain with PodDisruptionBudgets, `terminationGracePeriod`). `Never` disables it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;
use karpctl_api::v1::NodeClaim;
use karpctl_cloud::CloudProvider;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::reconcile::{Outcome, Reconciler};
use crate::state::{self, ClusterState};

/// Event reason, as upstream.
pub const EXPIRED: &str = "Expired";

/// What a claim's expiry asks for at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No `expireAfter` (or `Never`), or already being deleted.
    Never,
    /// Expires in this long.
    In(Duration),
    /// Expired: delete it.
    Now,
}

pub fn expiry(claim: &NodeClaim, now: Timestamp) -> Expiry {
    if claim.metadata.deletion_timestamp.is_some() {
        return Expiry::Never;
    }
    let (Some(after), Some(created)) = (
        claim.spec.expire_after.as_ref().and_then(|e| e.as_std()),
        claim.metadata.creation_timestamp.as_ref(),
    ) else {
        return Expiry::Never;
    };
    let at = crate::clock::after(created.0, after);
    if now >= at {
        Expiry::Now
    } else {
        Expiry::In(crate::clock::until(now, at))
    }
}

pub struct Expiration<C> {
    pub ctx: Arc<Context<C>>,
}

impl<C: CloudProvider> Reconciler for Expiration<C> {
    const NAME: &'static str = "nodeclaim.expiration";

    fn keys(&self, state: &ClusterState) -> Vec<String> {
        state
            .node_claims()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter(|c| {
                c.spec
                    .expire_after
                    .as_ref()
                    .is_some_and(|e| e.as_std().is_some())
            })
            .map(|c| c.name_any())
            .collect()
    }

    async fn reconcile(&self, name: &str) -> anyhow::Result<Outcome> {
        let Some(claim) = state::read(&self.ctx.state).node_claim(name).cloned() else {
            return Ok(Outcome::Done);
        };
        match expiry(&claim, self.ctx.clock.now()) {
            Expiry::Never => Ok(Outcome::Done),
            Expiry::In(left) => Ok(Outcome::RequeueAfter(left)),
            Expiry::Now => {
                let pool = claim
                    .labels()
                    .get(labels::NODE_POOL)
                    .cloned()
                    .unwrap_or_default();
                let expire_after = claim
                    .spec
                    .expire_after
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::info!(controller = "nodeclaim.expiration", NodeClaim = %json!({"name": name}), NodePool = %json!({"name": pool}), "expire-after" = %expire_after, "deleting expired nodeclaim");
                let api: Api<NodeClaim> = Api::all(self.ctx.client.clone());
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Outcome::Done),
                    Err(e) => return Err(e.into()),
                }
                self.ctx
                    .events
                    .normal(&claim, EXPIRED, format!("Expired after {expire_after}: deleting the nodeclaim (its node is drained first)"))
                    .await;
                self.ctx.metrics.node_claim_disrupted(&pool, "expired");
                Ok(Outcome::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    fn claim(expire_after: Option<&str>, deleting: bool) -> NodeClaim {
        let mut meta = json!({"name": "c", "creationTimestamp": "2026-12-07T10:00:00Z"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-12-07T10:00:30Z");
        }
        let mut spec = json!({"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}, "requirements": []});
        if let Some(e) = expire_after {
            spec["expireAfter"] = json!(e);
        }
        serde_json::from_value(json!({"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": meta, "spec": spec})).unwrap()
    }

    #[test]
    fn a_claim_expires_exactly_at_creation_plus_expire_after() {
        let clock = Clock::manual("2026-12-07T10:00:00Z".parse().unwrap());
        let c = claim(Some("2m"), false);
        assert_eq!(
            expiry(&c, clock.now()),
            Expiry::In(Duration::from_secs(120))
        );
        clock.advance(Duration::from_millis(119_999));
        assert_eq!(
            expiry(&c, clock.now()),
            Expiry::In(Duration::from_millis(1))
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(expiry(&c, clock.now()), Expiry::Now);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(expiry(&c, clock.now()), Expiry::Now);
    }

    #[test]
    fn never_and_deleting_claims_do_not_expire() {
        let late: Timestamp = "2027-12-07T10:00:00Z".parse().unwrap();
        assert_eq!(expiry(&claim(Some("Never"), false), late), Expiry::Never);
        assert_eq!(expiry(&claim(None, false), late), Expiry::Never);
        assert_eq!(expiry(&claim(Some("2m"), true), late), Expiry::Never);
    }
}

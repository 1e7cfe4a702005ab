//! Spot interruptions and instance events, from the queue `karpctl init` creates (settings:
//! `INTERRUPTION_QUEUE`). Each message names instances; one that is ours (a NodeClaim has its
//! provider ID) is acted on as upstream does — a spot interruption, a scheduled change, a
//! capacity reservation interruption or the instance stopping or terminating deletes its
//! NodeClaim (drained through the termination path); a rebalance recommendation is an event
//! only — and then the message is deleted. Messages that cannot be read or that are about
//! instances that are not ours are deleted too (logged), so nothing loops; a message whose
//! action failed (an API error) stays and comes back after its visibility timeout.
//!
//! Beyond upstream: a spot interruption (and a capacity reservation's) sets the claim's
//! termination deadline to the moment EC2 reclaims the instance (the notice time plus two
//! minutes, less a margin), so the drain deletes whatever PodDisruptionBudgets still hold in
//! time to stop cleanly and the replacement is launched at once, instead of every pod being
//! killed when the instance vanishes; and it marks the offering (type, zone, spot)
//! unavailable so the replacement goes elsewhere.
//!
//! A missing queue or a denied permission is logged (once per distinct error), counted
//! (`karpctl_interruption_queue_reachable` 0) and retried with backoff; it never stops the
//! controller.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;
use karpctl_api::v1::NodeClaim;
use karpctl_cloud::{
    CapacityType, CloudProvider, InterruptionAction, InterruptionKind, InterruptionMessage,
    InterruptionQueue, OfferingKey, Received,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::state::{self, ClusterState};

/// Taken off the announced reclaim time, so pods' own grace periods end before it.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// Event reasons, as upstream names them.
pub mod reasons {
    pub const SPOT_INTERRUPTED: &str = "SpotInterrupted";
    pub const REBALANCE_RECOMMENDATION: &str = "SpotRebalanceRecommendation";
    pub const INSTANCE_STOPPING: &str = "InstanceStopping";
    pub const INSTANCE_TERMINATING: &str = "InstanceTerminating";
    pub const INSTANCE_UNHEALTHY: &str = "InstanceUnhealthy";
    pub const CAPACITY_RESERVATION_INTERRUPTED: &str = "CapacityReservationInterrupted";
}

/// The (reason, note) of the event a message gets on its NodeClaim.
pub fn event_for(kind: &InterruptionKind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        InterruptionKind::SpotInterruption => (
            reasons::SPOT_INTERRUPTED,
            "Spot interruption warning was triggered",
        ),
        InterruptionKind::RebalanceRecommendation => (
            reasons::REBALANCE_RECOMMENDATION,
            "Spot rebalance recommendation was triggered",
        ),
        InterruptionKind::ScheduledChange => (
            reasons::INSTANCE_UNHEALTHY,
            "An unhealthy warning was triggered for the instance",
        ),
        InterruptionKind::CapacityReservationInterruption => (
            reasons::CAPACITY_RESERVATION_INTERRUPTED,
            "Capacity reservation interruption warning was triggered",
        ),
        InterruptionKind::StateChange(s) if s == "stopping" || s == "stopped" => {
            (reasons::INSTANCE_STOPPING, "Instance is stopping")
        }
        InterruptionKind::StateChange(s) if s == "shutting-down" || s == "terminated" => {
            (reasons::INSTANCE_TERMINATING, "Instance is terminating")
        }
        InterruptionKind::StateChange(_) | InterruptionKind::NoOp => return None,
    })
}

/// The NodeClaim whose instance is `instance_id`.
pub fn claim_for_instance<'a>(state: &'a ClusterState, instance_id: &str) -> Option<&'a NodeClaim> {
    state.node_claims().find(|c| {
        c.status
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|p| p.rsplit('/').next() == Some(instance_id))
    })
}

/// The termination deadline a message sets: when the instance is reclaimed (less the
/// margin), for the kinds that announce it; right away for an instance already stopping or
/// terminating (nothing on it will survive anyway).
pub fn deadline_for(message: &InterruptionMessage, now: SystemTime) -> Option<SystemTime> {
    match &message.kind {
        InterruptionKind::SpotInterruption
        | InterruptionKind::CapacityReservationInterruption
        | InterruptionKind::ScheduledChange => message
            .effective_at
            .map(|t| t.checked_sub(DEADLINE_MARGIN).unwrap_or(t)),
        InterruptionKind::StateChange(_) => Some(now),
        _ => None,
    }
}

fn to_timestamp(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub struct Interruption<C, Q> {
    ctx: Arc<Context<C>>,
    queue: Q,
}

impl<C: CloudProvider, Q: InterruptionQueue> Interruption<C, Q> {
    pub fn new(ctx: Arc<Context<C>>, queue: Q) -> Self {
        Self { ctx, queue }
    }

    /// Receive and handle messages until dropped.
    pub async fn run(self) {
        tracing::info!(controller = "interruption", queue = %self.queue.name(), "watching the interruption queue");
        let mut failures: u32 = 0;
        let mut last_error = String::new();
        loop {
            if !state::read(&self.ctx.state).synced() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            match self.queue.receive().await {
                Ok(messages) => {
                    if failures > 0 {
                        tracing::info!(controller = "interruption", queue = %self.queue.name(), "interruption queue reachable again");
                    }
                    failures = 0;
                    last_error.clear();
                    self.ctx.metrics.interruption_queue_reachable(true);
                    for m in messages {
                        self.handle(m).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.ctx.metrics.interruption_queue_reachable(false);
                    if e != last_error {
                        tracing::error!(controller = "interruption", queue = %self.queue.name(), error = %e, "interruption queue unavailable: spot interruptions and instance events are not handled until it is (check INTERRUPTION_QUEUE, the queue, and the controller's sqs:ReceiveMessage/DeleteMessage/GetQueueUrl permissions)");
                        last_error = e;
                    }
                    let wait = Duration::from_secs(2u64.saturating_pow(failures.min(6)))
                        .min(Duration::from_secs(60));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn handle(&self, received: Received) {
        let message = match received.message {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(controller = "interruption", error = %e, "deleting unreadable interruption message");
                self.ctx.metrics.interruption_received("unparseable");
                self.delete(&received.receipt, None).await;
                return;
            }
        };
        self.ctx
            .metrics
            .interruption_received(message.kind.metric_label());
        let now = self.ctx.clock.now();
        let mut failed = false;
        for id in &message.instance_ids {
            let claim = claim_for_instance(&state::read(&self.ctx.state), id).cloned();
            let Some(claim) = claim else {
                tracing::debug!(controller = "interruption", instance = %id, kind = message.kind.metric_label(), "interruption message for an instance that is not ours");
                continue;
            };
            if let Err(e) = self.act(&message, &claim, now).await {
                tracing::error!(controller = "interruption", NodeClaim = %json!({"name": claim.name_any()}), error = %format!("{e:#}"), "handling interruption message failed; it is retried when the queue delivers it again");
                failed = true;
            }
        }
        if !failed {
            let queued = message
                .time
                .and_then(|t| SystemTime::from(now).duration_since(t).ok())
                .map(|d| d.as_secs_f64());
            self.delete(&received.receipt, queued).await;
        }
    }

    async fn delete(&self, receipt: &str, queued_seconds: Option<f64>) {
        match self.queue.delete(receipt).await {
            Ok(()) => self.ctx.metrics.interruption_deleted(queued_seconds),
            Err(e) => {
                tracing::error!(controller = "interruption", error = %e, "deleting interruption message failed")
            }
        }
    }

    async fn act(
        &self,
        message: &InterruptionMessage,
        claim: &NodeClaim,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let name = claim.name_any();
        let pool = claim
            .labels()
            .get(labels::NODE_POOL)
            .cloned()
            .unwrap_or_default();
        let kind = message.kind.metric_label();
        if let Some((reason, note)) = event_for(&message.kind) {
            self.ctx
                .events
                .warning(claim, reason, note.to_owned())
                .await;
        }
        match message.kind.action() {
            InterruptionAction::None | InterruptionAction::Notify => {
                tracing::info!(controller = "interruption", NodeClaim = %json!({"name": name}), "message-kind" = kind, "received interruption message, no action");
                return Ok(());
            }
            InterruptionAction::CordonAndDrain => {}
        }
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        if message.kind == InterruptionKind::SpotInterruption
            && let (Some(t), Some(z)) = (
                claim.labels().get(labels::INSTANCE_TYPE),
                claim.labels().get(labels::TOPOLOGY_ZONE),
            )
        {
            self.ctx.cloud.mark_unavailable(
                OfferingKey {
                    instance_type: t.clone(),
                    zone: z.clone(),
                    capacity_type: CapacityType::Spot,
                },
                "spot interruption",
            );
        }
        let api: Api<NodeClaim> = Api::all(self.ctx.client.clone());
        if let Some(deadline) = deadline_for(message, SystemTime::from(now)).map(to_timestamp) {
            let current = crate::node::termination::termination_deadline(claim);
            if current.is_none_or(|c| deadline < c) {
                let patch = json!({"metadata": {"annotations": {
                    labels::NODE_CLAIM_TERMINATION_TIMESTAMP: deadline.to_string()
                }}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        tracing::info!(controller = "interruption", NodeClaim = %json!({"name": name}), NodePool = %json!({"name": pool}), "message-kind" = kind, "initiating delete from interruption message");
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.ctx.metrics.node_claim_disrupted(&pool, kind);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: InterruptionKind, time: &str, effective: Option<&str>) -> InterruptionMessage {
        let t = |s: &str| SystemTime::from(s.parse::<Timestamp>().unwrap());
        InterruptionMessage {
            id: "e".into(),
            kind,
            instance_ids: vec!["i-1".into()],
            time: Some(t(time)),
            effective_at: effective.map(t),
        }
    }

    #[test]
    fn a_spot_interruption_sets_the_deadline_before_ec2_reclaims_the_instance() {
        let now = SystemTime::from("2026-12-07T12:00:05Z".parse::<Timestamp>().unwrap());
        let spot = message(
            InterruptionKind::SpotInterruption,
            "2026-12-07T12:00:00Z",
            Some("2026-12-07T12:02:00Z"),
        );
        assert_eq!(
            deadline_for(&spot, now).map(to_timestamp),
            Some("2026-12-07T12:01:50Z".parse().unwrap())
        );
        let stopping = message(
            InterruptionKind::StateChange("stopping".into()),
            "2026-12-07T12:00:00Z",
            None,
        );
        assert_eq!(deadline_for(&stopping, now), Some(now));
        let rebalance = message(
            InterruptionKind::RebalanceRecommendation,
            "2026-12-07T12:00:00Z",
            None,
        );
        assert_eq!(deadline_for(&rebalance, now), None);
    }

    #[test]
    fn instances_are_matched_to_claims_by_provider_id() {
        let mut state = ClusterState::new();
        let claim: NodeClaim = serde_json::from_value(json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": "default-abc"},
            "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}, "requirements": []},
            "status": {"providerID": "aws:///us-west-2a/i-0123"}
        }))
        .unwrap();
        state.apply(claim);
        assert_eq!(
            claim_for_instance(&state, "i-0123").map(|c| c.name_any()),
            Some("default-abc".into())
        );
        assert!(claim_for_instance(&state, "i-012").is_none());
        assert!(claim_for_instance(&state, "i-9999").is_none());
    }

    #[test]
    fn every_acted_on_kind_has_upstreams_event() {
        for kind in [
            InterruptionKind::SpotInterruption,
            InterruptionKind::ScheduledChange,
            InterruptionKind::CapacityReservationInterruption,
            InterruptionKind::StateChange("stopping".into()),
            InterruptionKind::StateChange("terminated".into()),
            InterruptionKind::RebalanceRecommendation,
        ] {
            assert!(event_for(&kind).is_some(), "{kind:?}");
        }
        assert_eq!(
            event_for(&InterruptionKind::StateChange("running".into())),
            None
        );
    }
}

//! A Node's end, as upstream's `karpenter.sh/termination` finalizer runs it. A Node of ours
//! being deleted (by `kubectl delete node`, or by its NodeClaim's deletion: expiry,
//! interruption, `kubectl delete nodeclaim`, uninstall) is
//!
//! 1. tainted `karpenter.sh/disrupted:NoSchedule` and labelled out of external load
//!    balancers, and its NodeClaim deleted too (so both end together);
//! 2. drained through the Eviction API in the kubelet's shutdown order ([`drain`]): a
//!    PodDisruptionBudget that refuses (429) is retried with backoff and named in a
//!    `FailedDraining` event; do-not-disrupt pods hold the node until its deadline, when
//!    every pod left is deleted so it still finishes in time;
//! 3. left until its VolumeAttachments are gone (skipped past the deadline);
//! 4. its instance terminated, and once the cloud says it is gone, released.
//!
//! The NodeClaim carries the progress as conditions (`Drained`, `VolumesDetached`,
//! `InstanceTerminating`), each with what it waits for.

// The drain rules are pure and shared with `karpctl migrate-from-cas`: they live in the
// scheduling crate.
pub use karpctl_scheduling::drain;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;
use karpctl_api::v1::condition_types::node_claim as cond;
use karpctl_api::v1::{ConditionStatus, Conditions, NodeClaim};
use karpctl_cloud::{CloudError, CloudProvider};
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::context::Context;
use crate::nodeclaim::set_condition;
use crate::reconcile::{Outcome, Reconciler};
use crate::state::{self, ClusterState, NodeRecord};
use drain::{DrainPod, Holding, PodAction};

/// Upstream's label that keeps a node out of external load balancers' target groups.
pub const EXCLUDE_FROM_LOAD_BALANCERS: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// Event reasons of the termination path.
pub mod reasons {
    pub const FAILED_DRAINING: &str = "FailedDraining";
    pub const AWAITING_VOLUME_DETACHMENT: &str = "AwaitingVolumeDetachment";
}

/// How often a drain looks again while pods are terminating.
const DRAIN_POLL: Duration = Duration::from_secs(2);
/// How often a terminating instance is looked at.
const INSTANCE_POLL: Duration = Duration::from_secs(5);

/// When a terminating NodeClaim's pods must be gone: the
/// `karpenter.sh/nodeclaim-termination-timestamp` annotation (an interruption may have set
/// it earlier), else its deletion time plus `terminationGracePeriod`; `None` waits forever.
pub fn termination_deadline(claim: &NodeClaim) -> Option<Timestamp> {
    if let Some(t) = claim
        .annotations()
        .get(labels::NODE_CLAIM_TERMINATION_TIMESTAMP)
        .and_then(|v| v.parse::<Timestamp>().ok())
    {
        return Some(t);
    }
    let deleted = claim.metadata.deletion_timestamp.as_ref()?.0;
    let grace = claim.spec.termination_grace_period.as_ref()?.as_std();
    Some(crate::clock::after(deleted, grace))
}

/// Per pod, when its eviction may be tried again after a refusal (429 backoff).
#[derive(Default)]
struct EvictionBackoff(Mutex<BTreeMap<String, (Instant, u32)>>);

impl EvictionBackoff {
    fn ready(&self, key: &str, now: Instant) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).is_none_or(|(at, _)| now >= *at)
    }

    fn refused(&self, key: &str, now: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        entry.1 += 1;
        let wait =
            Duration::from_millis(500 * 2u64.pow(entry.1.min(6))).min(Duration::from_secs(30));
        entry.0 = now + wait;
    }

    fn forget(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| keep(k));
    }
}

pub struct Termination<C> {
    pub ctx: Arc<Context<C>>,
    backoff: EvictionBackoff,
}

impl<C> Termination<C> {
    pub fn new(ctx: Arc<Context<C>>) -> Self {
        Self {
            ctx,
            backoff: EvictionBackoff::default(),
        }
    }
}

fn pool_of(claim: Option<&NodeClaim>) -> String {
    claim
        .and_then(|c| c.labels().get(labels::NODE_POOL).cloned())
        .unwrap_or_default()
}

/// The PodDisruptionBudgets that select `pod` (policy/v1: an empty selector selects every pod
/// in the namespace, a missing one none), with how many disruptions each allows now.
pub fn budgets_for<'a>(
    pdbs: impl Iterator<Item = &'a PodDisruptionBudget>,
    pod: &DrainPod,
) -> Vec<(String, i32)> {
    pdbs.filter(|b| b.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .filter(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .and_then(|sel| {
                    karpctl_scheduling::kubernetes::label_selector(sel, "selector").ok()
                })
                .is_some_and(|sel| sel.matches(&pod.labels))
        })
        .map(|b| {
            (
                format!("{}/{}", pod.namespace, b.name_any()),
                b.status
                    .as_ref()
                    .and_then(|s| s.disruptions_allowed)
                    .unwrap_or(0),
            )
        })
        .collect()
}

impl<C: CloudProvider> Reconciler for Termination<C> {
    const NAME: &'static str = "node.termination";

    fn keys(&self, state: &ClusterState) -> Vec<String> {
        let keys: Vec<String> = state
            .nodes()
            .filter(|n| n.deleting() && n.has_finalizer(labels::TERMINATION_FINALIZER))
            .map(|n| n.name.to_string())
            .collect();
        self.backoff.forget(|pod| {
            state.pod(pod).is_some_and(|p| {
                p.node_name
                    .as_deref()
                    .is_some_and(|n| keys.iter().any(|k| k == n))
            })
        });
        keys
    }

    async fn reconcile(&self, name: &str) -> anyhow::Result<Outcome> {
        let (node, claim) = {
            let s = state::read(&self.ctx.state);
            let Some(node) = s.node(name) else {
                return Ok(Outcome::Done);
            };
            let claim = node
                .provider_id()
                .and_then(|id| s.claim_for_provider_id(id))
                .cloned();
            (node.clone(), claim)
        };
        if !node.deleting() || !node.has_finalizer(labels::TERMINATION_FINALIZER) {
            return Ok(Outcome::Done);
        }
        self.terminate(&node, claim.as_ref()).await
    }
}

impl<C: CloudProvider> Termination<C> {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.ctx.client.clone())
    }

    async fn terminate(
        &self,
        node: &NodeRecord,
        claim: Option<&NodeClaim>,
    ) -> anyhow::Result<Outcome> {
        let now = self.ctx.clock.now();
        // Both end together: a Node deleted directly takes its claim with it.
        if let Some(c) = claim
            && c.metadata.deletion_timestamp.is_none()
        {
            tracing::info!(controller = "node.termination", Node = %json!({"name": &*node.name}), NodeClaim = %json!({"name": c.name_any()}), "node deleted, deleting its nodeclaim");
            let api: Api<NodeClaim> = Api::all(self.ctx.client.clone());
            match api.delete(&c.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.cordon(node).await?;
        let deadline = claim.and_then(termination_deadline);
        let past_deadline = deadline.is_some_and(|d| now >= d);

        // 2. Drain.
        let pods: Vec<Pod> = Api::<Pod>::all(self.ctx.client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", node.name)))
            .await?
            .items;
        let drain_pods: Vec<DrainPod> = pods.iter().map(DrainPod::from_pod).collect();
        let decision = drain::decide(&drain_pods, now, deadline);
        if !decision.drained() {
            let blocked = self.act(node, claim, &drain_pods, &decision).await;
            let message = describe_holding(&decision.holding, &blocked, deadline);
            if let Some(c) = claim {
                self.set_claim_condition(
                    c,
                    cond::DRAINED,
                    ConditionStatus::False,
                    "Draining",
                    &message,
                )
                .await;
            }
            let next = drain::next_deadline(&drain_pods, now, deadline)
                .map(|t| crate::clock::until(now, t))
                .unwrap_or(DRAIN_POLL)
                .min(DRAIN_POLL);
            return Ok(Outcome::RequeueAfter(next));
        }
        if let Some(c) = claim {
            self.set_claim_condition(c, cond::DRAINED, ConditionStatus::True, "Drained", "")
                .await;
        }

        // 3. Volumes.
        let attachments: Vec<String> = Api::<VolumeAttachment>::all(self.ctx.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_else(|e| {
                tracing::warn!(controller = "node.termination", error = %e, "listing volumeattachments failed; not waiting on them");
                Vec::new()
            })
            .into_iter()
            .filter(|a| a.spec.node_name == *node.name)
            .map(|a| a.name_any())
            .collect();
        if !attachments.is_empty() && !past_deadline {
            let message = format!(
                "waiting for VolumeAttachment(s) {} to be detached",
                attachments.join(", ")
            );
            if let Some(c) = claim {
                self.set_claim_condition(
                    c,
                    cond::VOLUMES_DETACHED,
                    ConditionStatus::False,
                    "AwaitingVolumeDetachment",
                    &message,
                )
                .await;
                self.ctx
                    .events
                    .normal(
                        c,
                        reasons::AWAITING_VOLUME_DETACHMENT,
                        format!(
                            "Awaiting deletion of bound volumeattachments ({})",
                            attachments.join(", ")
                        ),
                    )
                    .await;
            }
            return Ok(Outcome::RequeueAfter(DRAIN_POLL));
        }
        if let Some(c) = claim {
            let (reason, message) = if attachments.is_empty() {
                ("VolumesDetached", String::new())
            } else {
                (
                    "TerminationGracePeriodElapsed",
                    format!(
                        "skipped waiting for {} past the termination deadline",
                        attachments.join(", ")
                    ),
                )
            };
            self.set_claim_condition(
                c,
                cond::VOLUMES_DETACHED,
                ConditionStatus::True,
                reason,
                &message,
            )
            .await;
        }

        // 4. The instance.
        let provider_id = node
            .provider_id()
            .map(str::to_owned)
            .or_else(|| claim.and_then(|c| c.status.as_ref()?.provider_id.clone()));
        if let Some(id) = &provider_id {
            match self
                .ctx
                .cloud_call("node.termination", "Delete", self.ctx.cloud.delete(id))
                .await
            {
                Ok(()) | Err(CloudError::NodeClaimNotFound(_)) => {}
                Err(e) => return Err(anyhow::anyhow!("terminating instance {id}: {e}")),
            }
            if let Some(c) = claim {
                self.set_claim_condition(
                    c,
                    cond::INSTANCE_TERMINATING,
                    ConditionStatus::True,
                    "InstanceTerminating",
                    "",
                )
                .await;
            }
            let gone = match self
                .ctx
                .cloud_call("node.termination", "Get", self.ctx.cloud.get(id))
                .await
            {
                Err(CloudError::NodeClaimNotFound(_)) => true,
                Ok(i) => i.state.is_gone(),
                Err(e) => return Err(anyhow::anyhow!("checking instance {id}: {e}")),
            };
            if !gone {
                return Ok(Outcome::RequeueAfter(INSTANCE_POLL));
            }
        }
        self.release(node).await?;
        tracing::info!(controller = "node.termination", Node = %json!({"name": &*node.name}), "provider-id" = %provider_id.unwrap_or_default(), "deleted node");
        self.ctx.metrics.node_terminated(&pool_of(claim));
        Ok(Outcome::Done)
    }

    /// Taint `karpenter.sh/disrupted:NoSchedule` and label out of external load balancers.
    async fn cordon(&self, node: &NodeRecord) -> anyhow::Result<()> {
        let full = node.to_node();
        let mut taints: Vec<Taint> = full
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let tainted = taints
            .iter()
            .any(|t| t.key == labels::DISRUPTED_TAINT && t.effect == "NoSchedule");
        let labelled = node.label(EXCLUDE_FROM_LOAD_BALANCERS) == Some("true");
        if tainted && labelled {
            return Ok(());
        }
        if !tainted {
            taints.push(Taint {
                key: labels::DISRUPTED_TAINT.to_owned(),
                value: None,
                effect: "NoSchedule".to_owned(),
                time_added: None,
            });
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": full.resource_version(),
                "labels": {EXCLUDE_FROM_LOAD_BALANCERS: "true"},
            },
            "spec": {"taints": taints},
        });
        let updated = self
            .nodes()
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        state::write(&self.ctx.state).apply(updated);
        Ok(())
    }

    /// Carry out the decision's pod actions; returns what refused, per pod key.
    async fn act(
        &self,
        node: &NodeRecord,
        claim: Option<&NodeClaim>,
        pods: &[DrainPod],
        decision: &drain::DrainDecision,
    ) -> BTreeMap<String, String> {
        let mut refused = BTreeMap::new();
        let now = Instant::now();
        for action in &decision.actions {
            match action {
                PodAction::Delete {
                    namespace,
                    name,
                    grace_seconds,
                } => {
                    let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), namespace);
                    let params = DeleteParams {
                        grace_period_seconds: Some(
                            u32::try_from(*grace_seconds).unwrap_or(1).max(1),
                        ),
                        ..DeleteParams::default()
                    };
                    match api.delete(name, &params).await {
                        Ok(_) => {
                            tracing::info!(controller = "node.termination", Node = %json!({"name": &*node.name}), Pod = %json!({"name": name, "namespace": namespace}), grace_seconds, "deleting pod: the node's termination grace period is elapsing");
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => {
                            refused.insert(
                                format!("{namespace}/{name}"),
                                format!("deleting failed: {e}"),
                            );
                        }
                    }
                }
                PodAction::Evict { namespace, name } => {
                    let key = format!("{namespace}/{name}");
                    if !self.backoff.ready(&key, now) {
                        if let Some(pod) = pods.iter().find(|p| p.key() == key) {
                            refused.insert(key.clone(), self.refusal(pod));
                        }
                        continue;
                    }
                    let api: Api<Pod> =
                        Api::namespaced(self.ctx.eviction_client.clone(), namespace);
                    let result = api.evict(name, &EvictParams::default()).await;
                    let code = match &result {
                        Ok(_) => 200,
                        Err(kube::Error::Api(e)) => e.code,
                        Err(_) => 0,
                    };
                    self.ctx.metrics.eviction_request(code);
                    match result {
                        Ok(_) => {
                            tracing::info!(controller = "node.termination", Node = %json!({"name": &*node.name}), Pod = %json!({"name": name, "namespace": namespace}), "evicted pod");
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(kube::Error::Api(e)) if e.code == 429 || e.code == 500 => {
                            // 429: a PodDisruptionBudget allows no disruption now; 500: more
                            // than one budget selects the pod (the API cannot evict it).
                            self.backoff.refused(&key, now);
                            let why = match pods.iter().find(|p| p.key() == key) {
                                Some(pod) if e.code == 429 => self.refusal(pod),
                                _ => e.message.clone(),
                            };
                            refused.insert(key, why);
                        }
                        Err(e) => {
                            self.backoff.refused(&key, now);
                            refused.insert(key, format!("eviction failed: {e}"));
                        }
                    }
                }
            }
        }
        for (key, why) in &refused {
            let note = format!("Failed to drain node, pod {key}: {why}");
            tracing::info!(controller = "node.termination", Node = %json!({"name": &*node.name}), Pod = %key, reason = %why, "eviction refused");
            let target = node.to_node();
            self.ctx
                .events
                .warning(&target, reasons::FAILED_DRAINING, note.clone())
                .await;
            if let Some(c) = claim {
                self.ctx
                    .events
                    .warning(c, reasons::FAILED_DRAINING, note)
                    .await;
            }
        }
        for (key, holding) in &decision.holding {
            if *holding == Holding::DoNotDisrupt {
                let note = format!(
                    "Failed to drain node, pod {key} has the {} annotation",
                    labels::DO_NOT_DISRUPT
                );
                let target = node.to_node();
                self.ctx
                    .events
                    .warning(&target, reasons::FAILED_DRAINING, note)
                    .await;
            }
        }
        refused
    }

    /// Why an eviction of `pod` is refused, naming the budget(s).
    fn refusal(&self, pod: &DrainPod) -> String {
        let s = state::read(&self.ctx.state);
        let budgets = budgets_for(s.pdbs(), pod);
        if budgets.is_empty() {
            return "eviction refused (429 Too Many Requests)".to_owned();
        }
        let named: Vec<String> = budgets
            .iter()
            .map(|(name, allowed)| {
                format!("PodDisruptionBudget {name} allows {allowed} disruption(s)")
            })
            .collect();
        format!("eviction refused by {}", named.join(", "))
    }

    /// Remove our finalizer from the Node, guarded by its resourceVersion.
    async fn release(&self, node: &NodeRecord) -> anyhow::Result<()> {
        let full = node.to_node();
        let finalizers: Vec<String> = full
            .finalizers()
            .iter()
            .filter(|f| *f != labels::TERMINATION_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"resourceVersion": full.resource_version(), "finalizers": finalizers}});
        match self
            .nodes()
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Set one condition on the claim's status if it says something new.
    async fn set_claim_condition(
        &self,
        claim: &NodeClaim,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
    ) {
        // The freshest copy: an earlier condition write of this pass is already in the state.
        let claim = state::read(&self.ctx.state)
            .node_claim(&claim.name_any())
            .cloned()
            .unwrap_or_else(|| claim.clone());
        let current = claim.status.as_ref().and_then(|s| s.condition(type_));
        if current.is_some_and(|c| c.status == status && c.reason == reason && c.message == message)
        {
            return;
        }
        let mut conditions = claim
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        set_condition(
            &mut conditions,
            type_,
            status,
            reason,
            message,
            self.ctx.clock.now(),
        );
        let api: Api<NodeClaim> = Api::all(self.ctx.client.clone());
        match api
            .patch_status(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await
        {
            Ok(updated) => state::write(&self.ctx.state).apply(updated),
            Err(e) => {
                tracing::debug!(controller = "node.termination", NodeClaim = %json!({"name": claim.name_any()}), error = %e, "writing condition failed; the next pass writes it")
            }
        }
    }
}

/// The `Drained` condition's message: what holds the node, the first few named.
fn describe_holding(
    holding: &[(String, Holding)],
    refused: &BTreeMap<String, String>,
    deadline: Option<Timestamp>,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (key, h) in holding.iter().take(5) {
        let why = match (h, refused.get(key)) {
            (_, Some(r)) => r.clone(),
            (Holding::Evicting, None) => "evicting".to_owned(),
            (Holding::Queued, None) => "queued behind earlier pods".to_owned(),
            (Holding::Terminating, None) => "terminating".to_owned(),
            (Holding::DoNotDisrupt, None) => format!("{} pod", labels::DO_NOT_DISRUPT),
        };
        parts.push(format!("{key} ({why})"));
    }
    let more = holding.len().saturating_sub(5);
    let until = deadline
        .map(|d| format!("; pods left are deleted at {d}"))
        .unwrap_or_default();
    format!(
        "{} pod(s) waiting to be evicted: {}{}{}",
        holding.len(),
        parts.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        until
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(json: serde_json::Value) -> NodeClaim {
        serde_json::from_value(json).unwrap()
    }

    fn base(extra_meta: serde_json::Value, spec_extra: serde_json::Value) -> serde_json::Value {
        let mut meta = json!({"name": "c"});
        meta.as_object_mut()
            .unwrap()
            .extend(extra_meta.as_object().unwrap().clone());
        let mut spec = json!({"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}, "requirements": []});
        spec.as_object_mut()
            .unwrap()
            .extend(spec_extra.as_object().unwrap().clone());
        json!({"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": meta, "spec": spec})
    }

    #[test]
    fn the_deadline_is_the_annotation_else_deletion_plus_the_grace_period() {
        let none = claim(base(
            json!({"deletionTimestamp": "2026-12-07T12:00:00Z"}),
            json!({}),
        ));
        assert_eq!(
            termination_deadline(&none),
            None,
            "no grace period: wait forever"
        );
        let graced = claim(base(
            json!({"deletionTimestamp": "2026-12-07T12:00:00Z"}),
            json!({"terminationGracePeriod": "1h"}),
        ));
        assert_eq!(
            termination_deadline(&graced),
            Some("2026-12-07T13:00:00Z".parse().unwrap())
        );
        let annotated = claim(base(
            json!({"deletionTimestamp": "2026-12-07T12:00:00Z", "annotations": {"karpenter.sh/nodeclaim-termination-timestamp": "2026-12-07T12:02:00Z"}}),
            json!({"terminationGracePeriod": "1h"}),
        ));
        assert_eq!(
            termination_deadline(&annotated),
            Some("2026-12-07T12:02:00Z".parse().unwrap())
        );
    }

    #[test]
    fn budgets_selecting_a_pod_are_named_with_what_they_allow() {
        let pdb = |name: &str,
                   ns: &str,
                   selector: serde_json::Value,
                   allowed: i32|
         -> PodDisruptionBudget {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"selector": selector},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
            }))
            .unwrap()
        };
        let pdbs = [
            pdb("web", "default", json!({"matchLabels": {"app": "web"}}), 0),
            pdb("all", "default", json!({}), 2),
            pdb("other-ns", "prod", json!({}), 1),
            pdb("db", "default", json!({"matchLabels": {"app": "db"}}), 1),
        ];
        let pod = DrainPod {
            namespace: "default".into(),
            name: "web-1".into(),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            critical: false,
            daemon_set: false,
            static_pod: false,
            finished: false,
            tolerates_disrupted: false,
            do_not_disrupt: false,
            deleting_since: None,
            grace_seconds: 30,
        };
        assert_eq!(
            budgets_for(pdbs.iter(), &pod),
            vec![("default/web".to_owned(), 0), ("default/all".to_owned(), 2)]
        );
    }

    #[test]
    fn the_drained_condition_names_what_holds_the_node() {
        let holding = vec![
            ("default/web-1".to_owned(), Holding::Evicting),
            ("default/keep".to_owned(), Holding::DoNotDisrupt),
        ];
        let refused = BTreeMap::from([(
            "default/web-1".to_owned(),
            "eviction refused by PodDisruptionBudget default/web allows 0 disruption(s)".to_owned(),
        )]);
        let m = describe_holding(&holding, &refused, None);
        assert!(m.starts_with("2 pod(s) waiting to be evicted"), "{m}");
        assert!(m.contains("PodDisruptionBudget default/web"), "{m}");
        assert!(
            m.contains("default/keep (karpenter.sh/do-not-disrupt pod)"),
            "{m}"
        );
    }
}

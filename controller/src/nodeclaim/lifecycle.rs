//! A NodeClaim's life: Launched (the cloud created its instance) → Registered (a Node with its
//! provider ID appeared and got the claim's labels, taints, owner and finalizer) →
//! Initialized (the Node is Ready, its startup taints are gone and requested extended
//! resources exist). Liveness deletes claims that do not launch within `launch_ttl` or whose
//! Node does not appear within `registration_ttl`; garbage collection removes claims whose
//! instance is gone and instances that no claim owns (including a second instance tagged
//! for a claim that recorded another).
//!
//! A launch survives a crash between the cloud call and the status write: the cloud's
//! `create` is keyed by the claim's name, so the next pass (in this process or the next)
//! adopts the instance already tagged for the claim instead of launching another.
//!
//! Termination: a deleted claim gets its termination deadline and has its Node deleted;
//! the node termination controller (`crate::node::termination`) drains the Node and
//! terminates the instance; then the claim's finalizer is released here.
//!
//! Decide in pure code ([`next_step`], [`orphaned_instances`], [`claims_without_instance`]),
//! act in [`Lifecycle`]. Writes are merge patches that carry the object's resourceVersion, so
//! a concurrent writer makes ours fail (and retry on the next pass) instead of being
//! overwritten; only the fields listed are sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint as KubeTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;
use karpctl_api::v1::condition_types::node_claim as cond;
use karpctl_api::v1::{Condition, ConditionStatus, Conditions, NodeClaim, READY};
use karpctl_cloud::{CloudError, CloudProvider, Instance, Launched};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::events::{Events, MetricsSink, reasons};
use crate::provisioning::{ReconcilerSettings, resources_to_list};
use crate::state::{self, ClusterState, NodeRecord, SharedState};

/// What a claim needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Being deleted: terminate and release.
    Finalize,
    Launch,
    /// Its Node appeared.
    Register {
        node: String,
    },
    Initialize {
        node: String,
    },
    /// Liveness: it did not get far enough in time.
    Delete {
        reason: &'static str,
        message: String,
    },
    /// Nothing to do until something changes (or time passes).
    Wait,
}

fn millis_since(now: Timestamp, then: Option<&Time>) -> i64 {
    then.map(|t| now.as_millisecond() - t.0.as_millisecond())
        .unwrap_or(0)
}

fn condition<'a>(claim: &'a NodeClaim, type_: &str) -> Option<&'a Condition> {
    claim.status.as_ref().and_then(|s| s.condition(type_))
}

fn is_true(claim: &NodeClaim, type_: &str) -> bool {
    claim.status.as_ref().is_some_and(|s| s.is_true(type_))
}

/// Whether the Node is what the claim asked for: Ready, startup and unregistered taints gone,
/// and every requested extended resource advertised.
pub fn node_initialized(claim: &NodeClaim, node: &Node) -> bool {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return false;
    }
    let taints: Vec<&KubeTaint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .collect();
    if taints.iter().any(|t| {
        t.key == labels::UNREGISTERED_TAINT
            || claim
                .spec
                .startup_taints
                .iter()
                .any(|s| s.key == t.key && s.effect.as_str() == t.effect)
    }) {
        return false;
    }
    let allocatable = status.and_then(|s| s.allocatable.as_ref());
    claim
        .spec
        .resources
        .requests
        .keys()
        .filter(|k| !matches!(k.as_str(), "cpu" | "memory" | "pods" | "ephemeral-storage"))
        .all(|k| {
            allocatable
                .and_then(|a| a.get(k))
                .is_some_and(|q| q.0 != "0")
        })
}

/// The next step for `claim`, given the Node with its provider ID (if any) and the time.
pub fn next_step(
    claim: &NodeClaim,
    node: Option<&Node>,
    now: Timestamp,
    settings: &ReconcilerSettings,
) -> Step {
    if claim.metadata.deletion_timestamp.is_some() {
        return Step::Finalize;
    }
    if !is_true(claim, cond::LAUNCHED) {
        let age = millis_since(now, claim.metadata.creation_timestamp.as_ref());
        if age > settings.launch_ttl.as_millis() as i64 {
            return Step::Delete {
                reason: "launch_timeout",
                message: format!("not launched within {}", humanize(settings.launch_ttl)),
            };
        }
        return Step::Launch;
    }
    if !is_true(claim, cond::REGISTERED) {
        if let Some(node) = node {
            return Step::Register {
                node: node.name_any(),
            };
        }
        let launched_at = condition(claim, cond::LAUNCHED).map(|c| &c.last_transition_time);
        if millis_since(now, launched_at) > settings.registration_ttl.as_millis() as i64 {
            return Step::Delete {
                reason: "registration_timeout",
                message: format!(
                    "launched but no node registered within {}",
                    humanize(settings.registration_ttl)
                ),
            };
        }
        return Step::Wait;
    }
    if !is_true(claim, cond::INITIALIZED)
        && let Some(node) = node
        && node_initialized(claim, node)
    {
        return Step::Initialize {
            node: node.name_any(),
        };
    }
    Step::Wait
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Instances launched for this cluster that no claim accounts for, old enough that their
/// claim is not merely still being written: untagged ones, ones tagged for a claim that is
/// gone, and ones tagged for a claim that recorded a different instance (a second launch for
/// the same claim, e.g. by a replica that crashed before writing the first one's status).
/// A claim that exists but recorded nothing yet still owns every instance tagged for it: its
/// next launch adopts one of them.
pub fn orphaned_instances<'a>(
    instances: &'a [Instance],
    state: &ClusterState,
    now: std::time::SystemTime,
    grace: Duration,
) -> Vec<&'a Instance> {
    instances
        .iter()
        .filter(|i| !i.state.is_gone())
        .filter(|i| state.claim_for_provider_id(&i.provider_id).is_none())
        .filter(|i| {
            i.node_claim().is_none_or(|n| {
                state.node_claim(n).is_none_or(|c| {
                    c.status
                        .as_ref()
                        .and_then(|s| s.provider_id.as_deref())
                        .is_some_and(|recorded| recorded != i.provider_id)
                })
            })
        })
        .filter(|i| {
            i.launch_time
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > grace)
        })
        .collect()
}

/// Launched claims (not being deleted) whose instance is not among `instances`: candidates
/// whose instance is gone, to be confirmed one by one before their claim is deleted.
pub fn claims_without_instance(instances: &[Instance], state: &ClusterState) -> Vec<String> {
    let live: BTreeSet<&str> = instances
        .iter()
        .filter(|i| !i.state.is_gone())
        .map(|i| i.provider_id.as_str())
        .collect();
    state
        .node_claims()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| {
            let id = c.status.as_ref()?.provider_id.as_deref()?;
            (!live.contains(id)).then(|| c.name_any())
        })
        .collect()
}

/// Set one condition, keeping lastTransitionTime when the status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(now);
        }
        c.status = status;
        c.reason = reason.to_owned();
        c.message = message.to_owned();
    } else {
        conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            last_transition_time: Time(now),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: None,
        });
    }
}

/// The Node's taints after registration: `karpenter.sh/unregistered` gone, the claim's taints
/// and startup taints added where missing.
pub fn registered_taints(node: &Node, claim: &NodeClaim) -> Vec<KubeTaint> {
    let mut taints: Vec<KubeTaint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != labels::UNREGISTERED_TAINT)
        .collect();
    for t in claim.spec.taints.iter().chain(&claim.spec.startup_taints) {
        if !taints
            .iter()
            .any(|have| have.key == t.key && have.effect == t.effect.as_str())
        {
            taints.push(KubeTaint {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.as_str().to_owned(),
                time_added: None,
            });
        }
    }
    taints
}

fn node_pool_of(claim: &NodeClaim) -> String {
    claim
        .labels()
        .get(labels::NODE_POOL)
        .cloned()
        .unwrap_or_default()
}

fn with_ready(conditions: &mut Vec<Condition>, now: Timestamp) {
    let all = [cond::LAUNCHED, cond::REGISTERED, cond::INITIALIZED]
        .iter()
        .all(|t| {
            conditions
                .iter()
                .any(|c| c.type_ == *t && c.status == ConditionStatus::True)
        });
    if all {
        set_condition(conditions, READY, ConditionStatus::True, "Ready", "", now);
    } else {
        set_condition(
            conditions,
            READY,
            ConditionStatus::Unknown,
            "AwaitingReconciliation",
            "",
            now,
        );
    }
}

/// The NodeClaim lifecycle reconciler (launch, registration, initialization, liveness,
/// termination) and the garbage collector.
pub struct Lifecycle<C> {
    pub client: Client,
    pub cloud: Arc<C>,
    pub state: SharedState,
    pub events: Events,
    pub metrics: Arc<dyn MetricsSink>,
    pub settings: ReconcilerSettings,
}

type KubeResult<T> = Result<T, kube::Error>;

impl<C: CloudProvider> Lifecycle<C> {
    fn claims(&self) -> Api<NodeClaim> {
        Api::all(self.client.clone())
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Reconcile every claim once.
    pub async fn reconcile_all(&self) {
        let now = Timestamp::now();
        let work: Vec<(NodeClaim, Option<Node>)> = {
            let s = state::read(&self.state);
            s.node_claims()
                .map(|c| (c.clone(), s.node_for_claim(c).map(NodeRecord::to_node)))
                .collect()
        };
        let steps = work.into_iter().map(|(claim, node)| {
            let step = next_step(&claim, node.as_ref(), now, &self.settings);
            async move {
                let name = claim.name_any();
                if let Err(e) = self.act(step, claim, node).await {
                    tracing::warn!(controller = "nodeclaim.lifecycle", NodeClaim = %json!({"name": name}), error = %e, "reconciling nodeclaim failed, will retry");
                }
            }
        });
        futures::future::join_all(steps).await;
    }

    async fn act(&self, step: Step, claim: NodeClaim, node: Option<Node>) -> KubeResult<()> {
        match step {
            Step::Wait => Ok(()),
            Step::Launch => self.launch(claim).await,
            Step::Register { .. } => match node {
                Some(node) => self.register(claim, node).await,
                None => Ok(()),
            },
            Step::Initialize { .. } => match node {
                Some(node) => self.initialize(claim, node).await,
                None => Ok(()),
            },
            Step::Delete { reason, message } => {
                tracing::info!(controller = "nodeclaim.liveness", NodeClaim = %json!({"name": claim.name_any()}), reason, message, "deleting nodeclaim");
                self.events
                    .warning(
                        &claim,
                        reasons::LIVENESS,
                        format!("Deleting nodeclaim: {message}"),
                    )
                    .await;
                self.metrics
                    .node_claim_terminated(&node_pool_of(&claim), reason);
                self.delete_claim(&claim).await
            }
            Step::Finalize => self.finalize(claim, node).await,
        }
    }

    async fn delete_claim(&self, claim: &NodeClaim) -> KubeResult<()> {
        match self
            .claims()
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Merge-patch a claim's status (conditions replaced whole, guarded by resourceVersion).
    async fn patch_status(
        &self,
        claim: &NodeClaim,
        status: serde_json::Value,
    ) -> KubeResult<NodeClaim> {
        let patch = json!({
            "metadata": {"resourceVersion": claim.resource_version()},
            "status": status,
        });
        let updated = self
            .claims()
            .patch_status(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        state::write(&self.state).apply(updated.clone());
        Ok(updated)
    }

    fn conditions(claim: &NodeClaim) -> Vec<Condition> {
        claim
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }

    async fn launch(&self, claim: NodeClaim) -> KubeResult<()> {
        let now = Timestamp::now();
        let class_name = claim.spec.node_class_ref.name.clone();
        let class = state::read(&self.state).node_class(&class_name).cloned();
        let result = match &class {
            None => Err(CloudError::NodeClassNotReady {
                name: class_name.clone(),
                reason: format!("EC2NodeClass {class_name} not found"),
            }),
            Some(class) => {
                let started = std::time::Instant::now();
                let r = self.cloud.create(&claim, class).await;
                self.metrics.cloud_call(
                    "nodeclaim.lifecycle",
                    "Create",
                    started.elapsed().as_secs_f64(),
                    r.as_ref().err().map(|e| e.reason()),
                );
                r
            }
        };
        let mut conditions = Self::conditions(&claim);
        match result {
            Ok(launched) => self.launched(claim, launched, now).await,
            Err(CloudError::InsufficientCapacity { message, .. }) => {
                tracing::error!(controller = "nodeclaim.lifecycle", NodeClaim = %json!({"name": claim.name_any()}), error = %message, "failed launching nodeclaim, insufficient capacity");
                self.events
                    .warning(
                        &claim,
                        reasons::INSUFFICIENT_CAPACITY,
                        format!(
                            "NodeClaim {} event: Failed to launch node claim, {message}",
                            claim.name_any()
                        ),
                    )
                    .await;
                self.metrics
                    .node_claim_terminated(&node_pool_of(&claim), "insufficient_capacity");
                self.delete_claim(&claim).await
            }
            Err(CloudError::NodeClassNotReady { reason, .. }) => {
                set_condition(
                    &mut conditions,
                    cond::LAUNCHED,
                    ConditionStatus::False,
                    "NodeClassNotReady",
                    &reason,
                    now,
                );
                with_ready(&mut conditions, now);
                self.events
                    .warning(&claim, reasons::NODE_CLASS_NOT_READY, reason)
                    .await;
                self.patch_status(&claim, json!({"conditions": conditions}))
                    .await
                    .map(|_| ())
            }
            Err(e) => {
                tracing::error!(controller = "nodeclaim.lifecycle", NodeClaim = %json!({"name": claim.name_any()}), error = %e, "failed launching nodeclaim");
                set_condition(
                    &mut conditions,
                    cond::LAUNCHED,
                    ConditionStatus::False,
                    e.reason(),
                    &e.to_string(),
                    now,
                );
                with_ready(&mut conditions, now);
                self.patch_status(&claim, json!({"conditions": conditions}))
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn launched(
        &self,
        claim: NodeClaim,
        launched: Launched,
        now: Timestamp,
    ) -> KubeResult<()> {
        let i = &launched.instance;
        let mut new_labels: BTreeMap<String, String> = launched.labels.clone();
        new_labels.insert(labels::INSTANCE_TYPE.to_owned(), i.instance_type.clone());
        new_labels.insert(labels::TOPOLOGY_ZONE.to_owned(), i.zone.clone());
        new_labels.insert(
            labels::CAPACITY_TYPE.to_owned(),
            i.capacity_type.as_str().to_owned(),
        );
        let labelled = self
            .claims()
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": new_labels}})),
            )
            .await?;
        let mut conditions = Self::conditions(&labelled);
        set_condition(
            &mut conditions,
            cond::LAUNCHED,
            ConditionStatus::True,
            "Launched",
            "",
            now,
        );
        with_ready(&mut conditions, now);
        let allocatable = resources_to_list(&launched.allocatable);
        let updated = self
            .patch_status(
                &labelled,
                json!({
                    "providerID": i.provider_id,
                    "imageID": i.image_id,
                    "capacity": resources_to_list(&launched.capacity),
                    "allocatable": allocatable,
                    "conditions": conditions,
                }),
            )
            .await?;
        tracing::info!(
            controller = "nodeclaim.lifecycle",
            NodeClaim = %json!({"name": updated.name_any()}),
            "provider-id" = %i.provider_id,
            "instance-type" = %i.instance_type,
            zone = %i.zone,
            "capacity-type" = %i.capacity_type.as_str(),
            allocatable = %json!(allocatable),
            "launched nodeclaim"
        );
        self.events
            .normal(&updated, reasons::LAUNCHED, format!("Status condition transitioned, Type: Launched, Status: True, Reason: Launched, provider {}", i.provider_id))
            .await;
        self.metrics.node_claim_launched(&node_pool_of(&updated));
        Ok(())
    }

    async fn register(&self, claim: NodeClaim, node: Node) -> KubeResult<()> {
        let now = Timestamp::now();
        let mut node_labels = claim.labels().clone();
        node_labels.insert(labels::NODE_REGISTERED.to_owned(), "true".to_owned());
        let mut owners = node.metadata.owner_references.clone().unwrap_or_default();
        if !owners.iter().any(|o| o.kind == "NodeClaim") {
            owners.push(OwnerReference {
                api_version: "karpenter.sh/v1".to_owned(),
                kind: "NodeClaim".to_owned(),
                name: claim.name_any(),
                uid: claim.uid().unwrap_or_default(),
                block_owner_deletion: Some(true),
                controller: None,
            });
        }
        let mut finalizers = node.finalizers().to_vec();
        if !finalizers
            .iter()
            .any(|f| f == labels::TERMINATION_FINALIZER)
        {
            finalizers.push(labels::TERMINATION_FINALIZER.to_owned());
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": node.resource_version(),
                "labels": node_labels,
                "annotations": claim.annotations(),
                "ownerReferences": owners,
                "finalizers": finalizers,
            },
            "spec": {"taints": registered_taints(&node, &claim)},
        });
        let updated_node = self
            .nodes()
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        state::write(&self.state).apply(updated_node);
        let mut conditions = Self::conditions(&claim);
        set_condition(
            &mut conditions,
            cond::REGISTERED,
            ConditionStatus::True,
            "Registered",
            "",
            now,
        );
        with_ready(&mut conditions, now);
        let updated = self
            .patch_status(
                &claim,
                json!({"nodeName": node.name_any(), "conditions": conditions}),
            )
            .await?;
        tracing::info!(
            controller = "nodeclaim.lifecycle",
            NodeClaim = %json!({"name": updated.name_any()}),
            Node = %json!({"name": node.name_any()}),
            "provider-id" = %updated.status.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default(),
            "registered nodeclaim"
        );
        self.events
            .normal(&updated, reasons::REGISTERED, format!("Status condition transitioned, Type: Registered, Status: True, Reason: Registered, node {}", node.name_any()))
            .await;
        let pool = node_pool_of(&updated);
        self.metrics.node_claim_registered(&pool);
        self.metrics.node_created(&pool);
        Ok(())
    }

    async fn initialize(&self, claim: NodeClaim, node: Node) -> KubeResult<()> {
        let now = Timestamp::now();
        let updated_node = self
            .nodes()
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {labels::NODE_INITIALIZED: "true"}}})),
            )
            .await?;
        state::write(&self.state).apply(updated_node);
        let mut conditions = Self::conditions(&claim);
        set_condition(
            &mut conditions,
            cond::INITIALIZED,
            ConditionStatus::True,
            "Initialized",
            "",
            now,
        );
        with_ready(&mut conditions, now);
        let updated = self
            .patch_status(&claim, json!({"conditions": conditions}))
            .await?;
        tracing::info!(
            controller = "nodeclaim.lifecycle",
            NodeClaim = %json!({"name": updated.name_any()}),
            Node = %json!({"name": node.name_any()}),
            allocatable = %json!(node.status.as_ref().and_then(|s| s.allocatable.clone())),
            "initialized nodeclaim"
        );
        self.events
            .normal(
                &updated,
                reasons::INITIALIZED,
                format!(
                    "Status condition transitioned, Type: Initialized, Status: True, node {}",
                    node.name_any()
                ),
            )
            .await;
        self.metrics.node_claim_initialized(&node_pool_of(&updated));
        Ok(())
    }

    /// A deleted claim ends after its Node: the claim gets its termination deadline
    /// annotation (from `terminationGracePeriod`), its Node is deleted and drained by the
    /// node termination controller (`crate::node::termination`), which also terminates the
    /// instance; once the Node is gone, the instance is terminated here too (a claim that
    /// never registered a Node has only this) and, when the cloud says it is gone, the
    /// claim's finalizer is released.
    async fn finalize(&self, claim: NodeClaim, node: Option<Node>) -> KubeResult<()> {
        if !claim
            .finalizers()
            .iter()
            .any(|f| f == labels::TERMINATION_FINALIZER)
        {
            return Ok(());
        }
        if !claim
            .annotations()
            .contains_key(labels::NODE_CLAIM_TERMINATION_TIMESTAMP)
            && let Some(deadline) = crate::node::termination::termination_deadline(&claim)
        {
            let patch = json!({"metadata": {"annotations": {
                labels::NODE_CLAIM_TERMINATION_TIMESTAMP: deadline.to_string()
            }}});
            let updated = self
                .claims()
                .patch(
                    &claim.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            state::write(&self.state).apply(updated);
        }
        if let Some(node) = &node {
            if node.metadata.deletion_timestamp.is_none() {
                tracing::info!(controller = "nodeclaim.termination", NodeClaim = %json!({"name": claim.name_any()}), Node = %json!({"name": node.name_any()}), "deleting node of deleted nodeclaim");
                match self
                    .nodes()
                    .delete(&node.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            if node
                .finalizers()
                .iter()
                .any(|f| f == labels::TERMINATION_FINALIZER)
            {
                // The node termination controller drains it and terminates the instance.
                return Ok(());
            }
        }
        let provider_id = claim.status.as_ref().and_then(|s| s.provider_id.clone());
        if let Some(id) = &provider_id {
            let started = std::time::Instant::now();
            let deleted = self.cloud.delete(id).await;
            self.metrics.cloud_call(
                "nodeclaim.termination",
                "Delete",
                started.elapsed().as_secs_f64(),
                deleted.as_ref().err().map(|e| e.reason()),
            );
            match deleted {
                Ok(()) | Err(CloudError::NodeClaimNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(controller = "nodeclaim.termination", NodeClaim = %json!({"name": claim.name_any()}), error = %e, "terminating instance failed, will retry");
                    return Ok(());
                }
            }
            match self.cloud.get(id).await {
                Err(CloudError::NodeClaimNotFound(_)) => {}
                Ok(i) if i.state.is_gone() => {}
                Ok(_) => return Ok(()), // still shutting down; the next pass looks again
                Err(e) => {
                    tracing::warn!(controller = "nodeclaim.termination", NodeClaim = %json!({"name": claim.name_any()}), error = %e, "checking instance failed, will retry");
                    return Ok(());
                }
            }
        }
        let finalizers: Vec<String> = claim
            .finalizers()
            .iter()
            .filter(|f| *f != labels::TERMINATION_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"resourceVersion": claim.resource_version(), "finalizers": finalizers}});
        match self
            .claims()
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        tracing::info!(
            controller = "nodeclaim.termination",
            NodeClaim = %json!({"name": claim.name_any()}),
            Node = %json!({"name": node.as_ref().map(|n| n.name_any()).unwrap_or_default()}),
            "provider-id" = %provider_id.unwrap_or_default(),
            "deleted nodeclaim"
        );
        self.metrics
            .node_claim_terminated(&node_pool_of(&claim), "deleted");
        Ok(())
    }

    /// Run [`Self::reconcile_all`] on every change and every 5 s, at most every 200 ms: a
    /// claim the provisioner just created is launched within that gap (it was 1 s, most of
    /// the pending-pod → CreateFleet latency beyond the batch window; docs/benchmarks.md).
    pub async fn run(self: Arc<Self>, mut changes: tokio::sync::watch::Receiver<u64>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tick.tick() => {},
            }
            if state::read(&self.state).synced() {
                self.reconcile_all().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Garbage collection both ways, every 30 s once the state has synced.
    pub async fn run_garbage_collection(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            if !state::read(&self.state).synced() {
                continue;
            }
            if let Err(e) = self.collect_garbage().await {
                tracing::warn!(controller = "nodeclaim.garbagecollection", error = %e, "garbage collection failed");
            }
        }
    }

    pub async fn collect_garbage(&self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let listed = self.cloud.list().await;
        self.metrics.cloud_call(
            "nodeclaim.garbagecollection",
            "List",
            started.elapsed().as_secs_f64(),
            listed.as_ref().err().map(|e| e.reason()),
        );
        let instances = listed?;
        let (orphans, missing) = {
            let s = state::read(&self.state);
            let orphans: Vec<Instance> = orphaned_instances(
                &instances,
                &s,
                std::time::SystemTime::now(),
                self.settings.instance_gc_grace,
            )
            .into_iter()
            .cloned()
            .collect();
            let missing: Vec<NodeClaim> = claims_without_instance(&instances, &s)
                .iter()
                .filter_map(|n| s.node_claim(n).cloned())
                .collect();
            (orphans, missing)
        };
        for i in orphans {
            tracing::info!(controller = "nodeclaim.garbagecollection", "provider-id" = %i.provider_id, nodeclaim = ?i.node_claim(), "garbage collecting instance with no nodeclaim");
            match self.cloud.delete(&i.provider_id).await {
                Ok(()) | Err(CloudError::NodeClaimNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(controller = "nodeclaim.garbagecollection", "provider-id" = %i.provider_id, error = %e, "terminating orphaned instance failed")
                }
            }
        }
        for claim in missing {
            let Some(id) = claim.status.as_ref().and_then(|s| s.provider_id.clone()) else {
                continue;
            };
            let gone = match self.cloud.get(&id).await {
                Err(CloudError::NodeClaimNotFound(_)) => true,
                Ok(i) => i.state.is_gone(),
                Err(_) => false,
            };
            if gone {
                tracing::info!(controller = "nodeclaim.garbagecollection", NodeClaim = %json!({"name": claim.name_any()}), "provider-id" = %id, "garbage collecting nodeclaim with no cloudprovider representation");
                self.events
                    .warning(
                        &claim,
                        reasons::GARBAGE_COLLECTED,
                        format!("Instance {id} no longer exists"),
                    )
                    .await;
                self.metrics
                    .node_claim_terminated(&node_pool_of(&claim), "garbage_collected");
                self.delete_claim(&claim).await?;
            }
        }
        Ok(())
    }
}

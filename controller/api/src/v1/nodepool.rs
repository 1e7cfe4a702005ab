//! `karpenter.sh/v1` NodePool: the template and limits Karpenter launches NodeClaims from, and
//! the rules for taking them away again (disruption).

use std::collections::BTreeMap;

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::{Condition, Conditions};
use super::duration::{Duration, NillableDuration};
use super::nodeclaim::NodeClassReference;
use super::quantity::ResourceList;
use super::requirement::NodeSelectorRequirementWithMinValues;
use super::taint::Taint;

/// Condition types a NodePool reports; `Ready` rolls up ValidationSucceeded and NodeClassReady.
pub mod condition_types {
    pub const VALIDATION_SUCCEEDED: &str = "ValidationSucceeded";
    pub const NODE_CLASS_READY: &str = "NodeClassReady";
    pub const NODE_REGISTRATION_HEALTHY: &str = "NodeRegistrationHealthy";
}

/// Bumped whenever a change to the NodePool schema changes the hash of unchanged NodePools, so
/// the controller can tell drift from a new hashing scheme (mirrors upstream's `v3`).
pub const NODE_POOL_HASH_VERSION: &str = "v3";

/// NodePoolSpec is the top level NodePool specification. NodePools launch nodes in response to
/// pods that are unschedulable. Node properties are determined from a combination of NodePool
/// and pod scheduling constraints.
// Clippy reads repeated `printcolumn(type_ = ...)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "karpenter.sh",
    version = "v1",
    kind = "NodePool",
    plural = "nodepools",
    status = "NodePoolStatus",
    category = "karpenter",
    crates(kube_core = "::kube_core"),
    derive = "PartialEq",
    doc = "NodePool is the Schema for the NodePools API",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.nodes"
    ),
    printcolumn(
        name = "NodeClass",
        type_ = "string",
        json_path = ".spec.template.spec.nodeClassRef.name"
    ),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.nodes"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".spec.weight",
        priority = 1
    ),
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".status.resources.cpu",
        priority = 1
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.resources.memory",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "Cannot transition NodePool between static (replicas set) and dynamic (replicas unset) provisioning modes", "rule": "has(self.replicas) == has(oldSelf.replicas)"},
    {"message": "only 'limits.nodes' is supported on static NodePools", "rule": "!has(self.replicas) || (!has(self.limits) || size(self.limits) == 0 || (size(self.limits) == 1 && 'nodes' in self.limits))"},
    {"message": "'weight' is not supported on static NodePools", "rule": "!has(self.replicas) || !has(self.weight)"}
]))]
pub struct NodePoolSpec {
    /// Template contains the template of possibilities for the provisioning logic to launch a
    /// NodeClaim with. NodeClaims launched from this NodePool will often be further constrained
    /// than the template specifies.
    pub template: NodeClaimTemplate,
    /// Disruption contains the parameters that relate to Karpenter's disruption logic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {"consolidateAfter": "0s"}))]
    pub disruption: Option<Disruption>,
    /// Limits define a set of bounds for provisioning capacity.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
    /// Weight is the priority given to the NodePool during scheduling. A higher weight is tried
    /// first; no weight counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<i32>,
    /// Replicas makes this a static NodePool holding that many nodes regardless of pod demand
    /// (alpha upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i64>,
}

impl NodePoolSpec {
    /// The disruption settings with the API server's defaults applied.
    pub fn disruption_or_default(&self) -> Disruption {
        self.disruption.clone().unwrap_or_default()
    }
}

/// The metadata and spec every NodeClaim from this NodePool starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeClaimTemplate {
    #[serde(default, skip_serializing_if = "NodeClaimTemplateMetadata::is_empty")]
    pub metadata: NodeClaimTemplateMetadata,
    pub spec: NodeClaimTemplateSpec,
}

/// Labels and annotations applied to every node launched from the NodePool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeClaimTemplateMetadata {
    /// Labels applied to every node; they also act as `In` requirements.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 100), transform = super::cel::template_labels, transform = label_values)]
    pub labels: BTreeMap<String, String>,
    /// Annotations applied to every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl NodeClaimTemplateMetadata {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// Label values are limited like any Kubernetes label value.
fn label_values(schema: &mut schemars::Schema) {
    if let Some(values) = schema
        .get_mut("additionalProperties")
        .and_then(|v| v.as_object_mut())
    {
        values.insert("maxLength".into(), 63.into());
        values.insert(
            "pattern".into(),
            r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$".into(),
        );
    }
}

/// NodeClaimTemplateSpec is the NodeClaim spec without resource requests, which users do not set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeClaimTemplateSpec {
    /// Taints will be applied to every node launched from the NodePool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// StartupTaints are applied at startup and expected to be removed shortly after, typically
    /// by a DaemonSet; pods need not tolerate them to have nodes provisioned for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    /// Requirements are layered with labels and applied to every node.
    #[schemars(length(max = 100), transform = super::cel::requirements)]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// NodeClassRef is a reference to an object that defines provider specific configuration.
    #[schemars(extend("x-kubernetes-validations" = [
        {"message": "nodeClassRef.group is immutable", "rule": "self.group == oldSelf.group"},
        {"message": "nodeClassRef.kind is immutable", "rule": "self.kind == oldSelf.kind"}
    ]))]
    pub node_class_ref: NodeClassReference,
    /// The maximum duration the controller will wait before forcefully deleting the pods on a
    /// node, measured from when deletion is first initiated. Unset means wait indefinitely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub termination_grace_period: Option<Duration>,
    /// The duration the controller will wait before terminating a node, measured from when the
    /// node is created. `Never` disables expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"), extend("default" = "720h"))]
    pub expire_after: Option<NillableDuration>,
}

impl NodeClaimTemplateSpec {
    /// `expireAfter` with the API server's default (`720h`) applied.
    pub fn expire_after_or_default(&self) -> NillableDuration {
        self.expire_after
            .clone()
            .unwrap_or_else(super::nodeclaim::default_expire_after)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Disruption {
    /// The duration the controller will wait before attempting to terminate nodes that are
    /// underutilized (or empty, per ConsolidationPolicy). `Never` disables consolidation.
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"))]
    pub consolidate_after: NillableDuration,
    /// Which nodes Karpenter may disrupt through consolidation; defaults to
    /// `WhenEmptyOrUnderutilized`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "WhenEmptyOrUnderutilized"))]
    pub consolidation_policy: Option<ConsolidationPolicy>,
    /// Budgets limit how many nodes may be disrupted at once. The most restrictive active budget
    /// wins; none means one budget of 10%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 50),
        extend(
            "default" = [{"nodes": "10%"}],
            "x-kubernetes-validations" = [{"message": "'schedule' must be set with 'duration'", "rule": "self.all(x, has(x.schedule) == has(x.duration))"}]
        )
    )]
    pub budgets: Option<Vec<Budget>>,
}

impl Default for Disruption {
    /// What the API server stores for a NodePool without a `disruption` block.
    fn default() -> Self {
        Self {
            consolidate_after: NillableDuration::After(Duration::from(std::time::Duration::ZERO)),
            consolidation_policy: None,
            budgets: None,
        }
    }
}

impl Disruption {
    pub fn consolidation_policy_or_default(&self) -> ConsolidationPolicy {
        self.consolidation_policy
            .unwrap_or(ConsolidationPolicy::WhenEmptyOrUnderutilized)
    }

    /// The budgets with the API server's default (one budget of 10%) applied.
    pub fn budgets_or_default(&self) -> Vec<Budget> {
        self.budgets
            .clone()
            .unwrap_or_else(|| vec![Budget::default()])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConsolidationPolicy {
    /// Only nodes without workload pods are consolidated.
    WhenEmpty,
    /// Empty nodes, and nodes whose pods fit elsewhere or on a cheaper node, are consolidated.
    WhenEmptyOrUnderutilized,
}

/// Budget limits how many NodeClaims may be disrupted at once, optionally only on a schedule
/// and only for some disruption reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Budget {
    /// The disruption reasons this budget applies to; unset means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50))]
    pub reasons: Option<Vec<DisruptionReason>>,
    /// The maximum number (`5`) or percentage (`10%`) of the NodePool's nodes that may be
    /// disrupted at once.
    #[serde(default = "ten_percent")]
    #[schemars(regex(pattern = r"^((100|[0-9]{1,2})%|[0-9]+)$"))]
    pub nodes: String,
    /// When the budget becomes active, in cron syntax (UTC). Requires `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))|((.+)\s(.+)\s(.+)\s(.+)\s(.+))$"
    ))]
    pub schedule: Option<String>,
    /// How long the budget stays active after each schedule hit (hours and minutes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$"))]
    pub duration: Option<Duration>,
}

fn ten_percent() -> String {
    "10%".to_owned()
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            reasons: None,
            nodes: ten_percent(),
            schedule: None,
            duration: None,
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum DisruptionReason {
    Underutilized,
    Empty,
    Drifted,
}

/// NodePoolStatus defines the observed state of NodePool (lenient, see `NodeClaimStatus`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// The resources provisioned by this NodePool.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub resources: ResourceList,
    /// The count of nodes associated with this NodePool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<i64>,
    /// The observed generation of the referenced node class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_class_observed_generation: Option<i64>,
    /// Conditions contains signals for health and readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Conditions for NodePoolStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

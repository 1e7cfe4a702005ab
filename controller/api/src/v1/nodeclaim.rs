//! `karpenter.sh/v1` NodeClaim: one node Karpenter has decided to launch, and the pieces a
//! NodePool template shares with it (requirements, taints, the node class reference).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::{Condition, Conditions};
use super::duration::{Duration, NillableDuration};
use super::quantity::ResourceList;
use super::requirement::NodeSelectorRequirementWithMinValues;
use super::taint::Taint;

/// Condition types a NodeClaim reports; `Ready` rolls up Launched, Registered and Initialized.
pub mod condition_types {
    pub const LAUNCHED: &str = "Launched";
    pub const REGISTERED: &str = "Registered";
    pub const INITIALIZED: &str = "Initialized";
    pub const CONSOLIDATABLE: &str = "Consolidatable";
    pub const DRIFTED: &str = "Drifted";
    pub const TERMINATING: &str = "Terminating";
    pub const CONSISTENT_STATE_FOUND: &str = "ConsistentStateFound";
    /// Termination: every pod that holds the node is gone.
    pub const DRAINED: &str = "Drained";
    /// Termination: the node's VolumeAttachments are gone.
    pub const VOLUMES_DETACHED: &str = "VolumesDetached";
    /// Termination: the instance's termination was requested.
    pub const INSTANCE_TERMINATING: &str = "InstanceTerminating";
}

/// NodeClaimSpec describes the desired state of the NodeClaim.
// Clippy reads repeated `printcolumn(type_ = ...)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "karpenter.sh",
    version = "v1",
    kind = "NodeClaim",
    plural = "nodeclaims",
    status = "NodeClaimStatus",
    category = "karpenter",
    crates(kube_core = "::kube_core"),
    derive = "PartialEq",
    doc = "NodeClaim is the Schema for the NodeClaims API",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".metadata.labels.node\\.kubernetes\\.io/instance-type"
    ),
    printcolumn(
        name = "Capacity",
        type_ = "string",
        json_path = ".metadata.labels.karpenter\\.sh/capacity-type"
    ),
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".metadata.labels.topology\\.kubernetes\\.io/zone"
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
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
        name = "ImageID",
        type_ = "string",
        json_path = ".status.imageID",
        priority = 1
    ),
    printcolumn(
        name = "ID",
        type_ = "string",
        json_path = ".status.providerID",
        priority = 1
    ),
    printcolumn(
        name = "NodePool",
        type_ = "string",
        json_path = ".metadata.labels.karpenter\\.sh/nodepool",
        priority = 1
    ),
    printcolumn(
        name = "NodeClass",
        type_ = "string",
        json_path = ".spec.nodeClassRef.name",
        priority = 1
    ),
    printcolumn(
        name = "Drifted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Drifted\")].status",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"message": "spec is immutable", "rule": "self == oldSelf"}]))]
pub struct NodeClaimSpec {
    /// Taints will be applied to the NodeClaim's node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// StartupTaints are taints that are applied to nodes upon startup which are expected to be
    /// removed automatically within a short period of time, typically by a DaemonSet that
    /// tolerates the taint. Pods need not tolerate them to have nodes provisioned for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    /// Requirements are layered with labels and applied to every node.
    #[schemars(length(max = 100), transform = super::cel::requirements)]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// Resources models the resource requirements for the NodeClaim to launch.
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    /// NodeClassRef is a reference to an object that defines provider specific configuration.
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

/// The `expireAfter` the API server fills in when a manifest leaves it out.
pub fn default_expire_after() -> NillableDuration {
    NillableDuration::After(Duration::from(std::time::Duration::from_secs(720 * 3600)))
}

/// ResourceRequirements models the required resources for the NodeClaim to launch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    /// Requests describes the minimum required resources for the NodeClaim to launch.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
}

impl ResourceRequirements {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// A reference to the provider-specific node class (for AWS, an EC2NodeClass).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeClassReference {
    /// API group of the referent, without a version (`karpenter.k8s.aws`).
    #[schemars(regex(pattern = r"^[^/]*$"), extend("x-kubernetes-validations" = [{"message": "group may not be empty", "rule": "self != ''"}]))]
    pub group: String,
    /// Kind of the referent (`EC2NodeClass`).
    #[schemars(extend("x-kubernetes-validations" = [{"message": "kind may not be empty", "rule": "self != ''"}]))]
    pub kind: String,
    /// Name of the referent.
    #[schemars(extend("x-kubernetes-validations" = [{"message": "name may not be empty", "rule": "self != ''"}]))]
    pub name: String,
}

impl NodeClassReference {
    /// A reference to the EC2NodeClass `name`.
    pub fn ec2_node_class(name: impl Into<String>) -> Self {
        Self {
            group: crate::labels::AWS_GROUP.to_owned(),
            kind: "EC2NodeClass".to_owned(),
            name: name.into(),
        }
    }
}

/// NodeClaimStatus defines the observed state of NodeClaim.
///
/// Status types accept unknown fields: status is written by controllers, and a newer upstream
/// controller's additions must not stop karpctl from reading `kubectl get -o yaml` output.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimStatus {
    /// NodeName is the name of the corresponding node object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// ProviderID of the corresponding node object.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// ImageID is an identifier for the image that runs on the node.
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Capacity is the estimated full capacity of the node.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub capacity: ResourceList,
    /// Allocatable is the estimated allocatable capacity of the node.
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub allocatable: ResourceList,
    /// Conditions contains signals for health and readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last time a pod was scheduled to or removed from the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pod_event_time: Option<Time>,
    /// karpctl's answer to "why is this node (not) being disrupted": the last verdict of the
    /// disruption controller (an extension; upstream has no such field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<DisruptionVerdict>,
}

/// The disruption controller's last verdict on one NodeClaim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionVerdict {
    /// When this verdict was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
    /// The method that reached it: `Emptiness`, `Drift`, `MultiNodeConsolidation`,
    /// `SingleNodeConsolidation`, or `Candidacy` when the claim is not a candidate at all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// `Disrupting`, `DoNotDisrupt`, `PodDisruptionBudget`, `Nominated`, `ConsolidateAfter`,
    /// `ConsolidationDisabled`, `BudgetExhausted`, `PodsCannotMove`, `NeedsSeveralNodes`,
    /// `NoCheaperOption`, `SpotToSpot`, `Drifted`, `InvalidInput`.
    pub outcome: String,
    /// What blocks it, each naming the object (a pod, a PodDisruptionBudget, a budget).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<String>,
    /// One line for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// USD per hour of this node now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// USD per hour of the best replacement found (`0` when its pods fit elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement_price: Option<String>,
}

impl Conditions for NodeClaimStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

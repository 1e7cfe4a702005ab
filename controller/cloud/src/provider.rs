//! The cloud boundary the controller's reconcilers talk to, in domain words only: launch a
//! NodeClaim, find, list and terminate instances, say which instance types a NodePool can
//! use, and whether a claim has drifted from its node class. Failures the core reacts to are
//! typed ([`CloudError`]); SDK types never cross this line.
//!
//! Implementations: the AWS one (crate `karpctl-aws`, the only place that names SDK calls)
//! and [`crate::fake::FakeCloud`] for the reconcilers' unit tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use karpctl_api::v1::{EC2NodeClass, EC2NodeClassStatus, NodeClaim, NodePool};

use crate::instancetype::{CapacityType, InstanceType};
use crate::resources::Resources;

/// One cloud instance as the core sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// `aws:///<zone>/<instance-id>`, as the kubelet reports it on the Node.
    pub provider_id: String,
    pub id: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub image_id: String,
    /// The subnet and security groups it was launched into (subnet and security-group drift).
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub state: InstanceState,
    pub launch_time: Option<SystemTime>,
    /// All tags, including `karpenter.sh/nodepool` and `karpenter.sh/nodeclaim`.
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    /// The NodeClaim this instance was launched for, from its `karpenter.sh/nodeclaim` tag.
    pub fn node_claim(&self) -> Option<&str> {
        self.tags
            .get(karpctl_api::labels::NODECLAIM_TAG)
            .map(String::as_str)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    /// Terminated or on its way there: the claim is gone as far as the core is concerned.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

/// What a successful [`CloudProvider::create`] returns: the instance and what the claim's
/// status and labels must say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Launched {
    pub instance: Instance,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// Labels the node will carry that the claim did not already pin (instance type, zone,
    /// capacity type, arch, the `karpenter.k8s.aws/instance-*` facts).
    pub labels: BTreeMap<String, String>,
}

/// One (instance type, zone, capacity type) the provider could not supply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OfferingKey {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
}

/// Failures the core reacts to differently; everything else is [`CloudError::Other`].
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The instance (or the claim's instance) does not exist any more.
    #[error("instance not found: {0}")]
    NodeClaimNotFound(String),
    /// No offering the claim allows had capacity; the listed ones are now marked unavailable.
    #[error("insufficient capacity: {message}")]
    InsufficientCapacity {
        message: String,
        offerings: Vec<OfferingKey>,
    },
    /// The claim's EC2NodeClass is missing or not Ready; `reason` says which condition failed.
    #[error("node class {name} is not ready: {reason}")]
    NodeClassNotReady { name: String, reason: String },
    /// The cloud asked us to slow down; retry later.
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("{context}: {message}")]
    Other { context: String, message: String },
}

impl CloudError {
    pub fn other(context: impl Into<String>, message: impl ToString) -> Self {
        CloudError::Other {
            context: context.into(),
            message: message.to_string(),
        }
    }

    /// The reason string used in metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            CloudError::NodeClaimNotFound(_) => "NodeClaimNotFound",
            CloudError::InsufficientCapacity { .. } => "InsufficientCapacity",
            CloudError::NodeClassNotReady { .. } => "NodeClassNotReady",
            CloudError::Throttled(_) => "Throttled",
            CloudError::Other { .. } => "CloudProviderError",
        }
    }
}

pub type CloudResult<T> = std::result::Result<T, CloudError>;

/// Why a claim no longer matches its node class (empty when it does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftReason(pub String);

/// The cloud as the reconcilers need it. Every method is safe to retry: `create` is keyed by
/// the claim's name (an instance already tagged with it is returned instead of a second
/// launch), `delete` of a gone instance is `NodeClaimNotFound`.
pub trait CloudProvider: Send + Sync + 'static {
    /// Launch one instance for `claim`, choosing among the instance types, zones and capacity
    /// types its requirements allow, cheapest first.
    fn create(
        &self,
        claim: &NodeClaim,
        node_class: &EC2NodeClass,
    ) -> impl Future<Output = CloudResult<Launched>> + Send;

    /// Terminate the instance behind `provider_id`.
    fn delete(&self, provider_id: &str) -> impl Future<Output = CloudResult<()>> + Send;

    fn get(&self, provider_id: &str) -> impl Future<Output = CloudResult<Instance>> + Send;

    /// Every live instance this controller launched for this cluster.
    fn list(&self) -> impl Future<Output = CloudResult<Vec<Instance>>> + Send;

    /// The instance types `node_pool` may launch through `node_class`, with offerings and
    /// prices (unavailable offerings marked so).
    fn instance_types(
        &self,
        node_pool: &NodePool,
        node_class: &EC2NodeClass,
    ) -> impl Future<Output = CloudResult<Vec<InstanceType>>> + Send;

    /// Whether the claim's instance no longer matches what its node class resolves to now.
    fn is_drifted(
        &self,
        claim: &NodeClaim,
        node_class: &EC2NodeClass,
    ) -> impl Future<Output = CloudResult<Option<DriftReason>>> + Send;

    /// Resolve a node class's selector terms, AMIs and instance profile into its status.
    /// Errors name the term that matched nothing.
    fn reconcile_node_class(
        &self,
        node_class: &EC2NodeClass,
    ) -> impl Future<Output = CloudResult<EC2NodeClassStatus>> + Send;

    /// Remove what `reconcile_node_class` and launches created for this node class (instance
    /// profile, launch templates) before its finalizer is released.
    fn finalize_node_class(
        &self,
        node_class: &EC2NodeClass,
    ) -> impl Future<Output = CloudResult<()>> + Send;

    /// Stop offering `offering` for a while (a spot interruption says its capacity is being
    /// reclaimed), so the replacement goes elsewhere. `reason` is for the log.
    fn mark_unavailable(&self, _offering: OfferingKey, _reason: &str) {}
}

//! `karpenter.sh/v1` (NodePool, NodeClaim) and `karpenter.k8s.aws/v1` (EC2NodeClass), field for
//! field as upstream Karpenter defines them, so upstream manifests parse unchanged.
//!
//! Spec types reject unknown fields (a typo must not silently drop a constraint); status types
//! accept them (status is written by controllers, possibly newer ones).

mod cel;
mod condition;
mod duration;
mod ec2nodeclass;
mod kubelet;
mod nodeclaim;
mod nodepool;
mod quantity;
mod requirement;
mod taint;

pub use condition::{Condition, ConditionStatus, Conditions, READY};
pub use duration::{Duration, InvalidDuration, NillableDuration};
pub use ec2nodeclass::{
    Ami, AmiFamily, AmiSelectorTerm, BlockDevice, BlockDeviceMapping, CapacityReservation,
    CapacityReservationSelectorTerm, EC2_NODE_CLASS_HASH_VERSION, EC2NodeClass, EC2NodeClassSpec,
    EC2NodeClassStatus, EnclaveOptions, InstanceStorePolicy, MetadataOptions, SecurityGroup,
    SecurityGroupSelectorTerm, Subnet, SubnetSelectorTerm,
};
pub use kubelet::KubeletConfiguration;
pub use nodeclaim::{
    DisruptionVerdict, NodeClaim, NodeClaimSpec, NodeClaimStatus, NodeClassReference,
    ResourceRequirements, default_expire_after,
};
pub use nodepool::{
    Budget, ConsolidationPolicy, Disruption, DisruptionReason, NODE_POOL_HASH_VERSION,
    NodeClaimTemplate, NodeClaimTemplateMetadata, NodeClaimTemplateSpec, NodePool, NodePoolSpec,
    NodePoolStatus,
};
pub use quantity::{InvalidQuantity, QUANTITY_PATTERN, Quantity, ResourceList};
pub use requirement::{
    LABEL_KEY_PATTERN, NodeSelectorRequirement, NodeSelectorRequirementWithMinValues,
};
pub use taint::{Taint, TaintEffect};

/// Condition type names per kind.
pub mod condition_types {
    pub use super::ec2nodeclass::condition_types as ec2_node_class;
    pub use super::nodeclaim::condition_types as node_claim;
    pub use super::nodepool::condition_types as node_pool;
}

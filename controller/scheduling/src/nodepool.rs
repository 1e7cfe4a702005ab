//! The scheduler's inputs besides pods: the NodePools it may launch from (a domain type
//! converted from `karpctl_api::v1::NodePool` at the edge) and the nodes that already exist
//! or are being launched.

use std::collections::BTreeMap;
use std::sync::Arc;

use karpctl_cloud::{InstanceType, Resources};

use crate::pod::Pod;
use crate::requirements::Requirements;
use crate::taints::Taint;

/// A template for NodeClaims.
#[derive(Clone, Debug, Default)]
pub struct NodePool {
    pub name: String,
    /// Higher weights are tried first; lower ones only for pods the higher cannot take.
    pub weight: i32,
    pub requirements: Requirements,
    /// Labels every node of the pool carries (also constrain which pods fit).
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Taints removed once the node is initialized; pods need not tolerate them.
    pub startup_taints: Vec<Taint>,
    /// Caps on the summed capacity of the pool's nodes, by resource name (`cpu` in
    /// millicores, `memory` in bytes, `nodes` as a count, others in units).
    pub limits: BTreeMap<String, i64>,
    /// What the pool's node class can launch (allocatable depends on its kubelet settings);
    /// filtered by `requirements` during scheduling.
    pub instance_types: Arc<Vec<InstanceType>>,
}

impl NodePool {
    pub fn new(name: &str, instance_types: Arc<Vec<InstanceType>>) -> Self {
        Self {
            name: name.to_string(),
            instance_types,
            ..Self::default()
        }
    }
}

/// A node that exists, or a NodeClaim already being launched (`in_flight`), with its pods.
#[derive(Clone, Debug, Default)]
pub struct ExistingNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    /// Pods bound to it, DaemonSet pods included. Shared: a controller plans every batch
    /// against the whole cluster, and copying each bound pod into every plan was most of the
    /// memory a scheduling pass took.
    pub pods: Vec<Arc<Pod>>,
    pub in_flight: bool,
}

//! The scheduling core: a pure simulation from pending pods, existing capacity and NodePools
//! to a plan of NodeClaims. No kube client and no cloud SDK, so it is tested as plain data and
//! reused by provisioning, disruption and `karpctl simulate`.
//!
//! Entry point: [`Scheduler::new`] with NodePools, existing nodes and DaemonSets, then
//! [`Scheduler::solve`] with the pending pods; [`checker::verify`] re-checks any plan
//! independently and [`explain`] says why a pod cannot go somewhere.

pub mod checker;
mod classes;
pub mod disruption;
pub mod drain;
pub mod explain;
mod firstfit;
pub mod kubernetes;
pub mod lowerbound;
mod merge;
pub mod nodepool;
mod packing;
pub mod pod;
pub mod requirements;
pub mod scheduler;
pub mod selector;
pub mod taints;
mod topology;

pub use karpctl_cloud::{CapacityType, InstanceType, Offering, Resources};
pub use nodepool::{ExistingNode, NodePool};
pub use pod::{HostPort, Pod, PodAffinityTerm, TopologySpread, WhenUnsatisfiable, pod};
pub use requirements::{Incompatibility, Operator, Requirement, RequirementError, Requirements};
pub use scheduler::{
    Budget, ExistingPlacement, InstanceTypeOption, NodeClaimPlan, Results, Scheduler,
    SchedulerOptions, Unschedulable,
};
pub use selector::{LabelSelector, SelectorExpression, SelectorOperator};
pub use taints::{Effect, Taint, Toleration};

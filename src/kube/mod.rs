//! The Kubernetes side of karpctl: `aws-auth`, which lets nodes join a cluster whose
//! authentication mode is CONFIG_MAP — the pure merge and the read-merge-write around it —
//! and init's cluster state: CRDs, the Cluster Autoscaler, and the karpctl-state record.

pub mod aws_auth;
pub mod cluster_state;
pub mod config_map;
pub mod nodes;
pub mod objects;

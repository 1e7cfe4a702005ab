//! The Kubernetes side of karpctl. Today: `aws-auth`, which lets nodes join a cluster whose
//! authentication mode is CONFIG_MAP — the pure merge and the read-merge-write around it.

pub mod aws_auth;
pub mod config_map;

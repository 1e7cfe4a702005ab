//! The Kubernetes side of karpctl. Today: the pure `aws-auth` merge that lets nodes join a
//! cluster whose authentication mode is CONFIG_MAP; the client-side writes come with the
//! Kubernetes half of `init`.

// Called by the Kubernetes half of `init` and by `uninstall`, which land in later changes.
#[allow(dead_code)]
pub mod aws_auth;

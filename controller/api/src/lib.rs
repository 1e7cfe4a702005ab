//! The Karpenter v1 APIs (`karpenter.sh/v1` NodePool and NodeClaim, `karpenter.k8s.aws/v1`
//! EC2NodeClass) and the well-known labels, as plain types with no client attached, so the
//! scheduler, the controller and the CLI share one definition.

pub mod convert;
pub mod crd;
pub mod labels;
pub mod manifest;
pub mod requirements;
pub mod v1;
pub mod validation;

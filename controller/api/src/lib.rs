//! The Karpenter v1 APIs (`karpenter.sh/v1` NodePool and NodeClaim, `karpenter.k8s.aws/v1`
//! EC2NodeClass) and the well-known labels, as plain types with no client attached, so the
//! scheduler, the controller and the CLI share one definition.
//!
//! - [`v1`]: the CRD types, field for field with upstream (spec types reject unknown fields).
//! - [`labels`]: well-known labels, annotations, taints, finalizers and restricted domains.
//! - [`requirements`]: requirements parsed into validated [`requirements::Requirement`]s.
//! - [`validation`]: field-addressed errors and the checks the API server would make.
//! - [`convert`] and [`manifest`]: reading manifests (v1beta1 converted to v1, with notes).
//! - [`crd`]: the generated CustomResourceDefinitions (`crds()`, `crds_yaml()`).

pub mod convert;
pub mod crd;
pub mod hash;
pub mod labels;
pub mod manifest;
pub mod requirements;
pub mod v1;
pub mod validation;

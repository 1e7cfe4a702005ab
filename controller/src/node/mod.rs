//! Node controllers. [`termination`]: the `karpenter.sh/termination` finalizer (drain, volume
//! detachment, instance termination).

pub mod termination;

//! The bundled controller as a library, so its reconcilers are unit-tested with a fake cloud
//! and benchmarked in memory; `main.rs` only wires them to a real cluster and AWS.
//!
//! Operations (process plumbing): [`settings`], [`logging`], [`metrics`], [`health`], [`leader`].
//! Reconcilers (the domain): [`state`] (the cluster as watched), [`provisioning`] (pending pods
//! to NodeClaims), [`nodeclaim`] (launch, registration, initialization, liveness, garbage
//! collection, termination), [`nodeclass`] (EC2NodeClass status), [`nodepool`] (NodePool
//! status), [`podstate`] (the `karpenter_pods_state` gauge), [`events`].

pub mod events;
pub mod health;
pub mod intern;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod nodeclaim;
pub mod nodeclass;
pub mod nodepool;
pub mod podstate;
pub mod provisioning;
pub mod settings;
pub mod state;

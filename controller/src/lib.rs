//! The bundled controller as a library, so its reconcilers are unit-tested with a fake cloud
//! and benchmarked in memory; `main.rs` only wires them to a real cluster and AWS.
//!
//! Start at [`wiring`]: the list of controllers the binary runs, on one [`context`] (clients,
//! cluster state, cloud provider, events, metrics, settings, [`clock`]), driven by one
//! [`reconcile`] driver.
//!
//! Operations (process plumbing): [`settings`], [`logging`], [`metrics`], [`health`], [`leader`].
//! Reconcilers (the domain): [`state`] (the cluster as watched), [`provisioning`] (pending pods
//! to NodeClaims), [`nodeclaim`] (launch, registration, initialization, liveness, garbage
//! collection, expiration), [`node`] (termination: drain, volumes, instance),
//! [`interruption`] (spot interruptions and instance events), [`nodeclass`] (EC2NodeClass
//! status), [`nodepool`] (NodePool status), [`podstate`] (the `karpenter_pods_state` gauge),
//! [`events`].

pub mod clock;
pub mod context;
pub mod disruption;
pub mod events;
pub mod health;
pub mod intern;
pub mod interruption;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod nodeclaim;
pub mod nodeclass;
pub mod nodepool;
pub mod podstate;
pub mod provisioning;
pub mod reconcile;
pub mod settings;
pub mod state;
pub mod wiring;

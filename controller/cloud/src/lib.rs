//! The cloud-provider boundary: the instance-type catalogue the scheduler chooses from, the
//! [`CloudProvider`] trait the controller's reconcilers call, and an in-memory fake of it. The
//! AWS implementation lives in `karpctl-aws` so this crate (and the scheduler) stay SDK-free.
//!
//! Everything here is plain data so the scheduler and `karpctl simulate` can use it without
//! an SDK: [`InstanceType`] and [`Offering`] are the model, [`Catalogue`] loads the shipped EC2
//! facts, [`Resources`] is the arithmetic both sides share.

pub mod catalogue;
pub mod fake;
pub mod instancetype;
pub mod interruption;
pub mod labels;
pub mod provider;
pub mod resources;

pub use catalogue::{Catalogue, CatalogueOptions, InstanceTypeInfo};
pub use instancetype::{CapacityType, InstanceType, NodeSettings, Offering, Overhead};
pub use interruption::{
    InterruptionAction, InterruptionKind, InterruptionMessage, InterruptionQueue, Received,
};
pub use provider::{
    CloudError, CloudProvider, CloudResult, DriftReason, Instance, InstanceState, Launched,
    OfferingKey,
};
pub use resources::{Resources, parse_quantity_milli};

/// Failures of this crate; each names what it was reading so a CLI can print one useful line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("parsing instance-type data: {0}")]
    InstanceTypeData(#[source] serde_json::Error),
    #[error("parsing price data: {0}")]
    PriceData(#[source] serde_json::Error),
    #[error("invalid quantity {quantity:?}: {reason}")]
    Quantity {
        quantity: String,
        reason: &'static str,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

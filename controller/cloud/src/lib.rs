//! The cloud-provider boundary: the instance-type catalogue the scheduler chooses from, and
//! (later) the `CloudProvider` trait with its AWS implementation and in-memory fake.
//!
//! Everything here is plain data so the scheduler and `karpctl simulate` can use it without
//! an SDK: [`InstanceType`] and [`Offering`] are the model, [`Catalogue`] loads the shipped EC2
//! facts, [`Resources`] is the arithmetic both sides share.

pub mod catalogue;
pub mod instancetype;
pub mod labels;
pub mod resources;

pub use catalogue::{Catalogue, CatalogueOptions, InstanceTypeInfo};
pub use instancetype::{CapacityType, InstanceType, NodeSettings, Offering, Overhead};
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

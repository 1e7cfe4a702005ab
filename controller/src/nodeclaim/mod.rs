//! NodeClaim controllers: [`lifecycle`] (launch, registration, initialization, liveness,
//! garbage collection, and the claim's side of termination) and [`expiration`]
//! (`expireAfter`).

pub mod expiration;
pub mod lifecycle;

pub use lifecycle::*;

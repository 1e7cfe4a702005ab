//! The scheduling core: a pure simulation from pending pods, existing capacity and NodePools
//! to a plan of NodeClaims. No kube client and no cloud SDK, so it is tested as plain data and
//! reused by provisioning, disruption and `karpctl simulate`.

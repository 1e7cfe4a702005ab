//! The well-known node labels the scheduler matches requirements against.
//!
//! The strings have one home, `karpctl_api::labels` (upstream Karpenter v1's names); this
//! module re-exports the ones the catalogue and the scheduler use, under short names.

pub use karpctl_api::labels::{
    ARCH, CAPACITY_TYPE, HOSTNAME, INSTANCE_ACCELERATOR_COUNT, INSTANCE_ACCELERATOR_MANUFACTURER,
    INSTANCE_ACCELERATOR_NAME, INSTANCE_CAPABILITY_FLEX, INSTANCE_CATEGORY, INSTANCE_CPU,
    INSTANCE_CPU_MANUFACTURER, INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ, INSTANCE_EBS_BANDWIDTH,
    INSTANCE_ENCRYPTION_IN_TRANSIT_SUPPORTED, INSTANCE_FAMILY, INSTANCE_GENERATION,
    INSTANCE_GPU_COUNT, INSTANCE_GPU_MANUFACTURER, INSTANCE_GPU_MEMORY, INSTANCE_GPU_NAME,
    INSTANCE_HYPERVISOR, INSTANCE_LOCAL_NVME, INSTANCE_MEMORY, INSTANCE_NETWORK_BANDWIDTH,
    INSTANCE_SIZE, INSTANCE_TYPE, NODE_POOL as NODEPOOL, OS, TOPOLOGY_REGION as REGION,
    TOPOLOGY_ZONE as ZONE,
};

/// Whether every node carries `key` whether or not a NodePool mentions it: a pod requiring
/// such a key against a NodePool that leaves it open is compatible (upstream's
/// `WellKnownLabels`), and so is the hostname, which every node has; any other key must be
/// defined by the NodePool to be matched.
pub fn is_well_known(key: &str) -> bool {
    key == HOSTNAME || karpctl_api::labels::is_well_known(key)
}

//! The label, annotation, taint and finalizer names Karpenter gives meaning to.
//!
//! Pods, NodePools and nodes only interoperate with upstream Karpenter if every component spells
//! these keys exactly as upstream does, so they live in one place and are never retyped.
//! The sets at the bottom decide which keys a NodePool may constrain and which it may not set,
//! mirroring upstream's `RestrictedLabelDomains`, `WellKnownLabels` and `RestrictedLabels`.

/// API group of NodePool and NodeClaim.
pub const KARPENTER_GROUP: &str = "karpenter.sh";
/// API group of EC2NodeClass.
pub const AWS_GROUP: &str = "karpenter.k8s.aws";
/// Group of the short-lived compatibility annotations written during the v1beta1 → v1 move.
pub const COMPATIBILITY_GROUP: &str = "compatibility.karpenter.sh";

// --- Kubernetes well-known node labels ---------------------------------------------------------

pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";
pub const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
pub const ARCH: &str = "kubernetes.io/arch";
pub const OS: &str = "kubernetes.io/os";
pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const WINDOWS_BUILD: &str = "node.kubernetes.io/windows-build";

// Deprecated aliases still found in pod specs; the scheduler rewrites them (see `normalized`).
pub const BETA_INSTANCE_TYPE: &str = "beta.kubernetes.io/instance-type";
pub const BETA_ARCH: &str = "beta.kubernetes.io/arch";
pub const BETA_OS: &str = "beta.kubernetes.io/os";
pub const FAILURE_DOMAIN_BETA_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
pub const FAILURE_DOMAIN_BETA_REGION: &str = "failure-domain.beta.kubernetes.io/region";

// --- karpenter.sh labels -----------------------------------------------------------------------

pub const NODE_POOL: &str = "karpenter.sh/nodepool";
pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
pub const NODE_INITIALIZED: &str = "karpenter.sh/initialized";
pub const NODE_REGISTERED: &str = "karpenter.sh/registered";

/// Values of [`CAPACITY_TYPE`].
pub const CAPACITY_TYPE_ON_DEMAND: &str = "on-demand";
pub const CAPACITY_TYPE_SPOT: &str = "spot";
pub const CAPACITY_TYPE_RESERVED: &str = "reserved";

/// Values of [`ARCH`] Karpenter launches.
pub const ARCH_AMD64: &str = "amd64";
pub const ARCH_ARM64: &str = "arm64";

// --- karpenter.sh annotations, taints and finalizers --------------------------------------------

pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
pub const NODE_POOL_HASH: &str = "karpenter.sh/nodepool-hash";
pub const NODE_POOL_HASH_VERSION: &str = "karpenter.sh/nodepool-hash-version";
pub const NODE_CLAIM_TERMINATION_TIMESTAMP: &str = "karpenter.sh/nodeclaim-termination-timestamp";
/// Holds a v1beta1 NodePool's kubelet block (JSON) while nodes migrate to the EC2NodeClass one.
pub const KUBELET_COMPATIBILITY: &str = "compatibility.karpenter.sh/v1beta1-kubelet-conversion";

/// `NoExecute` taint on a node until Karpenter has registered it to its NodeClaim.
pub const UNREGISTERED_TAINT: &str = "karpenter.sh/unregistered";
/// `NoSchedule` taint on a node Karpenter has decided to disrupt.
pub const DISRUPTED_TAINT: &str = "karpenter.sh/disrupted";
/// Finalizer on nodes and NodeClaims so the instance is terminated before the object goes.
pub const TERMINATION_FINALIZER: &str = "karpenter.sh/termination";

// --- karpenter.k8s.aws labels ------------------------------------------------------------------

pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
pub const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
pub const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
pub const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
pub const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
pub const INSTANCE_CPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-cpu-manufacturer";
pub const INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ: &str =
    "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz";
pub const INSTANCE_MEMORY: &str = "karpenter.k8s.aws/instance-memory";
pub const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
pub const INSTANCE_ENCRYPTION_IN_TRANSIT_SUPPORTED: &str =
    "karpenter.k8s.aws/instance-encryption-in-transit-supported";
pub const INSTANCE_NETWORK_BANDWIDTH: &str = "karpenter.k8s.aws/instance-network-bandwidth";
pub const INSTANCE_EBS_BANDWIDTH: &str = "karpenter.k8s.aws/instance-ebs-bandwidth";
pub const INSTANCE_LOCAL_NVME: &str = "karpenter.k8s.aws/instance-local-nvme";
pub const INSTANCE_GPU_NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
pub const INSTANCE_GPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
pub const INSTANCE_GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
pub const INSTANCE_GPU_MEMORY: &str = "karpenter.k8s.aws/instance-gpu-memory";
pub const INSTANCE_ACCELERATOR_NAME: &str = "karpenter.k8s.aws/instance-accelerator-name";
pub const INSTANCE_ACCELERATOR_MANUFACTURER: &str =
    "karpenter.k8s.aws/instance-accelerator-manufacturer";
pub const INSTANCE_ACCELERATOR_COUNT: &str = "karpenter.k8s.aws/instance-accelerator-count";
/// `"true"` on instance types sold as EC2 "flex" (capacity-flexible) instances.
pub const INSTANCE_CAPABILITY_FLEX: &str = "karpenter.k8s.aws/instance-capability-flex";
pub const CAPACITY_RESERVATION_ID: &str = "karpenter.k8s.aws/capacity-reservation-id";
pub const CAPACITY_RESERVATION_TYPE: &str = "karpenter.k8s.aws/capacity-reservation-type";
/// The EC2NodeClass a node was launched from.
pub const EC2_NODE_CLASS: &str = "karpenter.k8s.aws/ec2nodeclass";
pub const TOPOLOGY_ZONE_ID: &str = "topology.k8s.aws/zone-id";

// --- karpenter.k8s.aws annotations ---------------------------------------------------------------

pub const EC2_NODE_CLASS_HASH: &str = "karpenter.k8s.aws/ec2nodeclass-hash";
pub const EC2_NODE_CLASS_HASH_VERSION: &str = "karpenter.k8s.aws/ec2nodeclass-hash-version";
pub const INSTANCE_TAGGED: &str = "karpenter.k8s.aws/tagged";

// --- EC2 tags on what the controller launches ----------------------------------------------------

/// The NodeClaim an instance was launched for (also on its launch template's requests).
pub const NODECLAIM_TAG: &str = "karpenter.sh/nodeclaim";
/// The cluster an instance or launch template belongs to (the value is the cluster name).
pub const EKS_CLUSTER_NAME_TAG: &str = "eks:eks-cluster-name";
/// `kubernetes.io/cluster/<name>=owned` marks resources the cluster owns.
pub fn cluster_owned_tag(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

// --- Sets --------------------------------------------------------------------------------------

/// Domains reserved by the kubelet or by Karpenter: a NodePool may only set labels in these
/// domains if they are [`WELL_KNOWN`], or fall under a [`LABEL_DOMAIN_EXCEPTIONS`] suffix.
pub const RESTRICTED_LABEL_DOMAINS: &[&str] =
    &["kubernetes.io", "k8s.io", KARPENTER_GROUP, AWS_GROUP];

/// Sub-domains of the restricted domains that users may still use: the kubelet lets nodes
/// carry `node.kubernetes.io/*` and `node-restriction.kubernetes.io/*`, and kOps owns its own.
pub const LABEL_DOMAIN_EXCEPTIONS: &[&str] = &[
    "kops.k8s.io",
    "node.kubernetes.io",
    "node-restriction.kubernetes.io",
];

/// Labels Karpenter knows the values of for every instance type, so pods and NodePools can
/// constrain on them even though they sit in restricted domains.
pub const WELL_KNOWN: &[&str] = &[
    NODE_POOL,
    TOPOLOGY_ZONE,
    TOPOLOGY_REGION,
    INSTANCE_TYPE,
    ARCH,
    OS,
    CAPACITY_TYPE,
    WINDOWS_BUILD,
    CAPACITY_RESERVATION_ID,
    CAPACITY_RESERVATION_TYPE,
    INSTANCE_HYPERVISOR,
    INSTANCE_ENCRYPTION_IN_TRANSIT_SUPPORTED,
    INSTANCE_CATEGORY,
    INSTANCE_FAMILY,
    INSTANCE_GENERATION,
    INSTANCE_SIZE,
    INSTANCE_LOCAL_NVME,
    INSTANCE_CPU,
    INSTANCE_CPU_MANUFACTURER,
    INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ,
    INSTANCE_MEMORY,
    INSTANCE_EBS_BANDWIDTH,
    INSTANCE_NETWORK_BANDWIDTH,
    INSTANCE_GPU_NAME,
    INSTANCE_GPU_MANUFACTURER,
    INSTANCE_GPU_COUNT,
    INSTANCE_GPU_MEMORY,
    INSTANCE_ACCELERATOR_NAME,
    INSTANCE_ACCELERATOR_MANUFACTURER,
    INSTANCE_ACCELERATOR_COUNT,
    INSTANCE_CAPABILITY_FLEX,
    TOPOLOGY_ZONE_ID,
];

/// Labels no NodePool may set or require: the hostname is only known once a node exists.
pub const RESTRICTED: &[&str] = &[HOSTNAME];

/// Deprecated keys and the well-known key each means; pod requirements are rewritten through
/// this table so `beta.kubernetes.io/arch` and `kubernetes.io/arch` constrain the same thing.
pub const NORMALIZED: &[(&str, &str)] = &[
    (FAILURE_DOMAIN_BETA_ZONE, TOPOLOGY_ZONE),
    (BETA_ARCH, ARCH),
    (BETA_OS, OS),
    (BETA_INSTANCE_TYPE, INSTANCE_TYPE),
    (FAILURE_DOMAIN_BETA_REGION, TOPOLOGY_REGION),
];

/// The well-known key `key` stands for, or `key` itself.
pub fn normalized(key: &str) -> &str {
    NORMALIZED
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, canonical)| canonical)
}

pub fn is_well_known(key: &str) -> bool {
    WELL_KNOWN.contains(&key)
}

/// The domain (prefix before `/`) of a label key, or `""` for an unprefixed key.
pub fn domain(key: &str) -> &str {
    key.split_once('/').map_or("", |(domain, _)| domain)
}

/// Whether Karpenter must not write `key` onto a node itself: well-known labels come from the
/// instance type, and restricted domains belong to the kubelet or to Karpenter.
pub fn is_restricted_node_label(key: &str) -> bool {
    if is_well_known(key) {
        return true;
    }
    let domain = domain(key);
    if LABEL_DOMAIN_EXCEPTIONS
        .iter()
        .any(|exception| domain.ends_with(exception))
    {
        return false;
    }
    RESTRICTED_LABEL_DOMAINS
        .iter()
        .any(|restricted| domain.ends_with(restricted))
        || RESTRICTED.contains(&key)
}

/// Why a NodePool or pod may not use `key` in a requirement, if it may not.
pub fn restriction(key: &str) -> Option<LabelRestriction> {
    if is_well_known(key) {
        return None;
    }
    if RESTRICTED.contains(&key) {
        return Some(LabelRestriction::Label);
    }
    if is_restricted_node_label(key) {
        return Some(LabelRestriction::Domain(
            RESTRICTED_LABEL_DOMAINS
                .iter()
                .find(|d| domain(key).ends_with(*d))
                .copied()
                .unwrap_or_default(),
        ));
    }
    None
}

/// The reason a label key is refused; displayed in validation errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelRestriction {
    /// The key itself is reserved (e.g. `kubernetes.io/hostname`).
    Label,
    /// The key is in a reserved domain and is not well known.
    Domain(&'static str),
}

impl std::fmt::Display for LabelRestriction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Label => write!(f, "the label is restricted"),
            Self::Domain(domain) => write!(f, "label domain {domain:?} is restricted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restriction_follows_upstream_rules() {
        let cases: &[(&str, Option<LabelRestriction>)] = &[
            (INSTANCE_TYPE, None),
            (CAPACITY_TYPE, None),
            (NODE_POOL, None),
            (INSTANCE_FAMILY, None),
            (INSTANCE_CAPABILITY_FLEX, None),
            ("team", None),
            ("example.com/team", None),
            ("node.kubernetes.io/lifecycle", None),
            ("node-restriction.kubernetes.io/pool", None),
            ("kops.k8s.io/instancegroup", None),
            (HOSTNAME, Some(LabelRestriction::Label)),
            (
                "kubernetes.io/custom",
                Some(LabelRestriction::Domain("kubernetes.io")),
            ),
            (
                "foo.kubernetes.io/bar",
                Some(LabelRestriction::Domain("kubernetes.io")),
            ),
            ("k8s.io/bar", Some(LabelRestriction::Domain("k8s.io"))),
            (
                "karpenter.sh/other",
                Some(LabelRestriction::Domain("karpenter.sh")),
            ),
            (
                "karpenter.k8s.aws/other",
                Some(LabelRestriction::Domain("karpenter.k8s.aws")),
            ),
        ];
        for (key, want) in cases {
            assert_eq!(restriction(key), *want, "{key}");
        }
    }

    #[test]
    fn normalizes_deprecated_aliases() {
        let cases = [
            (BETA_ARCH, ARCH),
            (BETA_OS, OS),
            (FAILURE_DOMAIN_BETA_ZONE, TOPOLOGY_ZONE),
            (FAILURE_DOMAIN_BETA_REGION, TOPOLOGY_REGION),
            (BETA_INSTANCE_TYPE, INSTANCE_TYPE),
            (ARCH, ARCH),
            ("team", "team"),
        ];
        for (key, want) in cases {
            assert_eq!(normalized(key), want, "{key}");
        }
    }

    #[test]
    fn well_known_labels_are_listed_once() {
        let mut keys = WELL_KNOWN.to_vec();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), WELL_KNOWN.len());
    }
}

//! The instance-type model: what a node of a given EC2 type offers to pods once the kubelet
//! and the hypervisor have taken their share, with which labels, and where it can be bought
//! at what price. The scheduler only ever sees this, never EC2's own descriptions.
//!
//! Allocatable is computed the way the EKS-optimized AMIs configure the kubelet, so a plan
//! made here fits on the node that is actually launched:
//!
//! ```text
//! allocatable = capacity − kube-reserved − system-reserved − eviction threshold
//! ```
//!
//! with the formulas cited on each function below.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resources::Resources;

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

/// Whether capacity is bought on demand or from the spot market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    Spot,
    OnDemand,
}

impl CapacityType {
    /// The value of the `karpenter.sh/capacity-type` label.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
        }
    }
}

impl fmt::Display for CapacityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way to buy an instance type: a zone, a capacity type, and its price there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offering {
    pub zone: String,
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub price: f64,
    /// False when the provider last reported insufficient capacity here.
    pub available: bool,
}

/// What the node reserves for itself, split as the kubelet configures it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    pub kube_reserved: Resources,
    pub system_reserved: Resources,
    pub eviction_threshold: Resources,
}

impl Overhead {
    pub fn total(&self) -> Resources {
        self.kube_reserved
            .plus(&self.system_reserved)
            .plus(&self.eviction_threshold)
    }
}

/// An instance type as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceType {
    pub name: String,
    /// Every well-known label with a single value (`kubernetes.io/arch: arm64`, ...). Zone and
    /// capacity type are per offering and therefore not here.
    pub labels: BTreeMap<String, String>,
    pub capacity: Resources,
    pub overhead: Overhead,
    /// `capacity − overhead`: what pods (DaemonSets included) can request.
    pub allocatable: Resources,
    pub offerings: Vec<Offering>,
}

impl InstanceType {
    /// The cheapest available offering accepted by `allow`.
    pub fn cheapest_offering(&self, mut allow: impl FnMut(&Offering) -> bool) -> Option<&Offering> {
        self.offerings
            .iter()
            .filter(|o| o.available && allow(o))
            .min_by(|a, b| {
                a.price
                    .total_cmp(&b.price)
                    .then_with(|| a.zone.cmp(&b.zone))
            })
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Node-level settings that change allocatable: the kubelet's max-pods policy, the VPC CNI
/// mode and the root volume. Mirrors the knobs of an EC2NodeClass's `kubelet` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// `kubelet.maxPods`: overrides the ENI-derived limit.
    pub max_pods: Option<i64>,
    /// `kubelet.podsPerCore`: caps max pods at `vCPUs × podsPerCore`.
    pub pods_per_core: Option<i64>,
    /// VPC CNI prefix delegation (`ENABLE_PREFIX_DELEGATION=true`).
    pub prefix_delegation: bool,
    /// ENIs kept away from pods (upstream `RESERVED_ENIS`).
    pub reserved_enis: i64,
    /// Share of memory the hypervisor keeps; upstream Karpenter's `VM_MEMORY_OVERHEAD_PERCENT`
    /// defaults to 7.5%.
    pub vm_memory_overhead_percent: f64,
    /// Size of the root volume pods' ephemeral storage lives on; upstream's default block
    /// device mapping for AL2023 is 20Gi.
    pub root_volume_bytes: i64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            max_pods: None,
            pods_per_core: None,
            prefix_delegation: false,
            reserved_enis: 0,
            vm_memory_overhead_percent: 0.075,
            root_volume_bytes: 20 * GIB,
        }
    }
}

/// The facts about one EC2 type needed to compute its capacity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hardware {
    pub vcpu: i64,
    pub memory_mib: i64,
    pub max_enis: Option<i64>,
    pub ipv4_per_eni: Option<i64>,
    /// Pre-computed `max_enis × (ipv4_per_eni − 1) + 2` from the shipped data.
    pub eni_limited_max_pods: Option<i64>,
    /// Extended resources the type exposes (`nvidia.com/gpu: 4`).
    pub extended: BTreeMap<String, i64>,
}

/// Max pods the kubelet is configured with.
///
/// Without prefix delegation the VPC CNI gives each pod a secondary IP, so the EKS AMI's
/// `max-pods-calculator.sh` uses `ENIs × (IPv4 addresses per ENI − 1) + 2` (the +2 are the
/// host-network aws-node and kube-proxy pods). With prefix delegation every slot is a /28
/// (16 addresses) and the calculator caps the result at 110 for types with fewer than 30
/// vCPUs and 250 otherwise. An explicit `maxPods` wins; `podsPerCore` caps the result.
pub fn max_pods(hw: &Hardware, settings: &NodeSettings) -> i64 {
    let enis = hw.max_enis.map(|e| (e - settings.reserved_enis).max(0));
    let ips = hw.ipv4_per_eni;
    let eni_limited = match (enis, ips) {
        (Some(enis), Some(ips))
            if settings.reserved_enis > 0 || hw.eni_limited_max_pods.is_none() =>
        {
            enis * (ips - 1) + 2
        }
        _ => hw.eni_limited_max_pods.unwrap_or(110),
    };
    let mut pods = if let Some(max) = settings.max_pods {
        max
    } else if settings.prefix_delegation {
        let by_prefixes = match (enis, ips) {
            (Some(enis), Some(ips)) => enis * (ips - 1) * 16 + 2,
            _ => eni_limited,
        };
        by_prefixes.min(if hw.vcpu < 30 { 110 } else { 250 })
    } else {
        eni_limited
    };
    if let Some(per_core) = settings.pods_per_core.filter(|p| *p > 0) {
        pods = pods.min(hw.vcpu * per_core);
    }
    pods.max(0)
}

/// CPU the kubelet reserves for itself, in millicores: 6% of the first core, 1% of the
/// second, 0.5% of the third and fourth, 0.25% of every core above four. This is the EKS
/// AMI bootstrap's `get_cpu_millicores_to_reserve` and upstream Karpenter's
/// `kubeReservedResources`; each range's share is truncated to whole millicores as there.
pub fn kube_reserved_cpu(vcpu: i64) -> i64 {
    let cpu = vcpu * 1000;
    let ranges: [(i64, i64, f64); 4] = [
        (0, 1000, 0.06),
        (1000, 2000, 0.01),
        (2000, 4000, 0.005),
        (4000, i64::MAX, 0.0025),
    ];
    ranges
        .iter()
        .filter(|(start, _, _)| cpu >= *start)
        .map(|(start, end, pct)| {
            let span = if cpu < *end { cpu - start } else { end - start };
            (span as f64 * pct) as i64
        })
        .sum()
}

/// Memory the kubelet reserves: `11 MiB × max pods + 255 MiB` (EKS AMI bootstrap and
/// upstream Karpenter's `kubeReservedResources`).
pub fn kube_reserved_memory(max_pods: i64) -> i64 {
    (11 * max_pods + 255) * MIB
}

/// Memory the operating system sees: EC2's figure less the hypervisor's share, rounded up to
/// whole MiB (upstream Karpenter's `memory()`; `VM_MEMORY_OVERHEAD_PERCENT`).
pub fn usable_memory(memory_mib: i64, vm_overhead_percent: f64) -> i64 {
    let overhead_mib = (memory_mib as f64 * vm_overhead_percent).ceil() as i64;
    (memory_mib - overhead_mib) * MIB
}

/// Capacity and overhead of a node of this hardware under these settings.
///
/// Eviction thresholds are the kubelet's hard-eviction defaults the EKS AMIs keep:
/// `memory.available<100Mi` and `nodefs.available<10%`.
pub fn capacity_and_overhead(hw: &Hardware, settings: &NodeSettings) -> (Resources, Overhead) {
    let pods = max_pods(hw, settings);
    let capacity = Resources {
        cpu: hw.vcpu * 1000,
        memory: usable_memory(hw.memory_mib, settings.vm_memory_overhead_percent),
        ephemeral_storage: settings.root_volume_bytes,
        pods,
        extended: hw.extended.clone(),
    };
    let overhead = Overhead {
        kube_reserved: Resources {
            cpu: kube_reserved_cpu(hw.vcpu),
            memory: kube_reserved_memory(pods),
            ..Resources::default()
        },
        system_reserved: Resources::default(),
        eviction_threshold: Resources {
            memory: 100 * MIB,
            ephemeral_storage: (settings.root_volume_bytes as f64 * 0.10).ceil() as i64,
            ..Resources::default()
        },
    };
    (capacity, overhead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reserved_cpu_matches_the_eks_ami() {
        // (vCPUs, millicores) as the EKS AMI's bootstrap computes them.
        let cases = [
            (1, 60),
            (2, 70),
            (4, 80),
            (8, 90),
            (16, 110),
            (48, 190),
            (96, 310),
            (5, 82),
        ];
        for (vcpu, want) in cases {
            assert_eq!(kube_reserved_cpu(vcpu), want, "{vcpu} vCPUs");
        }
    }

    #[test]
    fn kube_reserved_memory_is_11mib_per_pod_plus_255() {
        for (pods, want_mib) in [(29, 574), (58, 893), (110, 1465), (234, 2829), (737, 8362)] {
            assert_eq!(kube_reserved_memory(pods), want_mib * MIB, "{pods} pods");
        }
    }

    fn hw(vcpu: i64, memory_mib: i64, enis: i64, ips: i64) -> Hardware {
        Hardware {
            vcpu,
            memory_mib,
            max_enis: Some(enis),
            ipv4_per_eni: Some(ips),
            eni_limited_max_pods: Some(enis * (ips - 1) + 2),
            extended: BTreeMap::new(),
        }
    }

    #[test]
    fn max_pods_policies() {
        let m5_large = hw(2, 8192, 3, 10);
        let m5_24xlarge = hw(96, 393216, 15, 50);
        let cases: &[(&str, &Hardware, NodeSettings, i64)] = &[
            ("eni limited", &m5_large, NodeSettings::default(), 29),
            (
                "eni limited large",
                &m5_24xlarge,
                NodeSettings::default(),
                737,
            ),
            (
                "prefix delegation under 30 vcpu caps at 110",
                &m5_large,
                NodeSettings {
                    prefix_delegation: true,
                    ..NodeSettings::default()
                },
                110,
            ),
            (
                "prefix delegation from 30 vcpu caps at 250",
                &m5_24xlarge,
                NodeSettings {
                    prefix_delegation: true,
                    ..NodeSettings::default()
                },
                250,
            ),
            (
                "explicit max pods",
                &m5_large,
                NodeSettings {
                    max_pods: Some(110),
                    ..NodeSettings::default()
                },
                110,
            ),
            (
                "pods per core",
                &m5_24xlarge,
                NodeSettings {
                    pods_per_core: Some(4),
                    ..NodeSettings::default()
                },
                384,
            ),
            (
                "reserved enis",
                &m5_large,
                NodeSettings {
                    reserved_enis: 1,
                    ..NodeSettings::default()
                },
                20,
            ),
        ];
        for (name, hw, settings, want) in cases {
            assert_eq!(max_pods(hw, settings), *want, "{name}");
        }
    }

    #[test]
    fn m5_large_allocatable() {
        let (capacity, overhead) =
            capacity_and_overhead(&hw(2, 8192, 3, 10), &NodeSettings::default());
        let allocatable = capacity.minus(&overhead.total());
        assert_eq!(capacity.cpu, 2000);
        assert_eq!(allocatable.cpu, 1930);
        // 8192 − ceil(8192 × 7.5%) = 7577 MiB; − (11 × 29 + 255) − 100 = 6903 MiB.
        assert_eq!(capacity.memory, 7577 * MIB);
        assert_eq!(allocatable.memory, 6903 * MIB);
        assert_eq!(allocatable.pods, 29);
        assert_eq!(allocatable.ephemeral_storage, 18 * GIB);
    }
}

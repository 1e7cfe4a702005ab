//! The instance-type catalogue: the shipped EC2 facts (or a user's file in the same format)
//! turned into [`InstanceType`]s with offerings for one region.
//!
//! Zone availability and spot prices are not in the shipped data, so the catalogue makes
//! them up deterministically for simulation: every priced type is offered in every
//! configured zone, and when spot is on, each (type, zone) gets a spot price of 25–40% of
//! on-demand, a discount drawn from a hash of the type and zone name so runs are
//! reproducible. Prices for regions other than us-east-1 fall back to the us-east-1 figures,
//! as upstream Karpenter falls back to its bundled prices when the Pricing API is unreachable.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::instancetype::{
    CapacityType, Hardware, InstanceType, NodeSettings, Offering, capacity_and_overhead,
};
use crate::labels;
use crate::{Error, Result};

const SHIPPED_TYPES: &str = include_str!("../data/instance-types.json");
const SHIPPED_PRICES: &str = include_str!("../data/ondemand-prices-us-east-1.json");

/// One entry of `instance-types.json`; unknown fields are ignored so newer data still loads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct InstanceTypeInfo {
    pub name: Option<String>,
    pub vcpu: Option<i64>,
    pub memory_mib: Option<i64>,
    pub arch: Option<String>,
    pub os: Option<String>,
    pub family: Option<String>,
    pub category: Option<String>,
    pub generation: Option<i64>,
    pub size: Option<String>,
    pub hypervisor: Option<String>,
    pub bare_metal: Option<bool>,
    pub cpu_manufacturer: Option<String>,
    pub cpu_sustained_clock_mhz: Option<i64>,
    pub ebs_bandwidth_mbps: Option<i64>,
    pub network_bandwidth_mbps: Option<i64>,
    pub encryption_in_transit: Option<String>,
    pub capability_flex: Option<String>,
    pub gpu_count: Option<i64>,
    pub gpu_manufacturer: Option<String>,
    pub gpu_memory_mib: Option<i64>,
    pub gpu_name: Option<String>,
    pub accelerator_count: Option<i64>,
    pub accelerator_manufacturer: Option<String>,
    pub accelerator_name: Option<String>,
    pub local_nvme_gib: Option<i64>,
    pub max_enis: Option<i64>,
    pub ipv4_per_eni: Option<i64>,
    pub eni_limited_max_pods: Option<i64>,
    pub branch_enis: Option<i64>,
    pub trunking_compatible: Option<bool>,
    pub ondemand_usd_hr_us_east_1: Option<f64>,
}

/// How to build a catalogue.
#[derive(Clone, Debug)]
pub struct CatalogueOptions {
    pub region: String,
    /// Zones every type is offered in; defaults to `<region>a`, `<region>b`, `<region>c`.
    pub zones: Vec<String>,
    /// Whether to synthesize spot offerings.
    pub spot: bool,
    pub node: NodeSettings,
}

impl CatalogueOptions {
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
            zones: ["a", "b", "c"]
                .iter()
                .map(|z| format!("{region}{z}"))
                .collect(),
            spot: true,
            node: NodeSettings::default(),
        }
    }
}

impl Default for CatalogueOptions {
    fn default() -> Self {
        Self::new("us-east-1")
    }
}

/// Instance types for one region, sorted by name.
#[derive(Clone, Debug)]
pub struct Catalogue {
    pub region: String,
    pub instance_types: Vec<InstanceType>,
    /// Types in the data that could not be offered (no price, unknown vCPU/memory/arch),
    /// with why.
    pub skipped: Vec<(String, String)>,
}

impl Catalogue {
    /// The shipped EC2 data.
    pub fn shipped(options: &CatalogueOptions) -> Result<Self> {
        Self::from_json(SHIPPED_TYPES, Some(SHIPPED_PRICES), options)
    }

    /// Data in the shipped format: an object keyed by type name (or an array of entries), and
    /// optionally a `{name: usd_per_hour}` price list that overrides the entries' prices.
    pub fn from_json(
        types_json: &str,
        prices_json: Option<&str>,
        options: &CatalogueOptions,
    ) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(types_json).map_err(Error::InstanceTypeData)?;
        let infos: Vec<(String, InstanceTypeInfo)> = match value {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| {
                    let info: InstanceTypeInfo =
                        serde_json::from_value(v).map_err(Error::InstanceTypeData)?;
                    Ok((info.name.clone().unwrap_or_default(), info))
                })
                .collect::<Result<_>>()?,
            other => {
                let map: BTreeMap<String, InstanceTypeInfo> =
                    serde_json::from_value(other).map_err(Error::InstanceTypeData)?;
                map.into_iter().collect()
            }
        };
        let prices: BTreeMap<String, f64> = match prices_json {
            Some(json) => serde_json::from_str(json).map_err(Error::PriceData)?,
            None => BTreeMap::new(),
        };
        Ok(Self::from_infos(infos, &prices, options))
    }

    pub fn from_infos(
        infos: impl IntoIterator<Item = (String, InstanceTypeInfo)>,
        prices: &BTreeMap<String, f64>,
        options: &CatalogueOptions,
    ) -> Self {
        let mut instance_types = Vec::new();
        let mut skipped = Vec::new();
        for (name, info) in infos {
            let price = prices
                .get(&name)
                .copied()
                .or(info.ondemand_usd_hr_us_east_1);
            match build(&name, &info, price, options) {
                Ok(it) => instance_types.push(it),
                Err(why) => skipped.push((name, why)),
            }
        }
        instance_types.sort_by(|a, b| a.name.cmp(&b.name));
        Catalogue {
            region: options.region.clone(),
            instance_types,
            skipped,
        }
    }

    pub fn get(&self, name: &str) -> Option<&InstanceType> {
        self.instance_types
            .binary_search_by(|it| it.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.instance_types[i])
    }
}

/// A deterministic spot discount in [0.60, 0.75] for (type, zone): FNV-1a of both names.
pub fn spot_discount(instance_type: &str, zone: &str) -> f64 {
    let hash = karpctl_api::hash::fnv1a64(format!("{instance_type}/{zone}"));
    0.60 + 0.15 * ((hash % 1000) as f64 / 1000.0)
}

fn build(
    name: &str,
    info: &InstanceTypeInfo,
    price: Option<f64>,
    options: &CatalogueOptions,
) -> Result<InstanceType, String> {
    let vcpu = info.vcpu.ok_or("vCPU count unknown")?;
    let memory_mib = info.memory_mib.ok_or("memory unknown")?;
    let arch = info.arch.as_deref().ok_or("architecture unknown")?;
    let price = price.ok_or("no on-demand price")?;
    let mut extended = BTreeMap::new();
    let gpus = info.gpu_count.unwrap_or(0);
    match info.gpu_manufacturer.as_deref() {
        Some("nvidia") if gpus > 0 => {
            extended.insert("nvidia.com/gpu".to_string(), gpus);
        }
        Some("amd") if gpus > 0 => {
            extended.insert("amd.com/gpu".to_string(), gpus);
        }
        _ => {}
    }
    let accelerators = info.accelerator_count.unwrap_or(0);
    if accelerators > 0 && info.accelerator_manufacturer.as_deref() == Some("aws") {
        extended.insert("aws.amazon.com/neuron".to_string(), accelerators);
    }
    if info.trunking_compatible == Some(true)
        && let Some(branch) = info.branch_enis.filter(|b| *b > 0)
    {
        extended.insert("vpc.amazonaws.com/pod-eni".to_string(), branch);
    }
    let hw = Hardware {
        vcpu,
        memory_mib,
        max_enis: info.max_enis,
        ipv4_per_eni: info.ipv4_per_eni,
        eni_limited_max_pods: info.eni_limited_max_pods,
        extended,
    };
    let (capacity, overhead) = capacity_and_overhead(&hw, &options.node);
    let allocatable = capacity.minus(&overhead.total());

    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            l.insert(k.to_string(), v);
        }
    };
    put(labels::INSTANCE_TYPE, Some(name.to_string()));
    put(labels::ARCH, Some(arch.to_string()));
    put(
        labels::OS,
        Some(info.os.clone().unwrap_or_else(|| "linux".into())),
    );
    put(labels::REGION, Some(options.region.clone()));
    put(labels::INSTANCE_CATEGORY, info.category.clone());
    put(labels::INSTANCE_FAMILY, info.family.clone());
    put(
        labels::INSTANCE_GENERATION,
        info.generation.map(|g| g.to_string()),
    );
    put(labels::INSTANCE_SIZE, info.size.clone());
    put(labels::INSTANCE_CPU, Some(vcpu.to_string()));
    put(
        labels::INSTANCE_CPU_MANUFACTURER,
        info.cpu_manufacturer.clone(),
    );
    put(
        labels::INSTANCE_CPU_SUSTAINED_CLOCK_SPEED_MHZ,
        info.cpu_sustained_clock_mhz.map(|v| v.to_string()),
    );
    put(labels::INSTANCE_MEMORY, Some(memory_mib.to_string()));
    put(
        labels::INSTANCE_EBS_BANDWIDTH,
        info.ebs_bandwidth_mbps.map(|v| v.to_string()),
    );
    put(
        labels::INSTANCE_NETWORK_BANDWIDTH,
        info.network_bandwidth_mbps.map(|v| v.to_string()),
    );
    put(labels::INSTANCE_HYPERVISOR, info.hypervisor.clone());
    put(
        labels::INSTANCE_ENCRYPTION_IN_TRANSIT_SUPPORTED,
        info.encryption_in_transit.clone(),
    );
    put(
        labels::INSTANCE_CAPABILITY_FLEX,
        info.capability_flex.clone(),
    );
    if gpus > 0 {
        put(labels::INSTANCE_GPU_NAME, info.gpu_name.clone());
        put(
            labels::INSTANCE_GPU_MANUFACTURER,
            info.gpu_manufacturer.clone(),
        );
        put(labels::INSTANCE_GPU_COUNT, Some(gpus.to_string()));
        put(
            labels::INSTANCE_GPU_MEMORY,
            info.gpu_memory_mib.map(|v| v.to_string()),
        );
    }
    if accelerators > 0 {
        put(
            labels::INSTANCE_ACCELERATOR_NAME,
            info.accelerator_name.clone(),
        );
        put(
            labels::INSTANCE_ACCELERATOR_MANUFACTURER,
            info.accelerator_manufacturer.clone(),
        );
        put(
            labels::INSTANCE_ACCELERATOR_COUNT,
            Some(accelerators.to_string()),
        );
    }
    put(
        labels::INSTANCE_LOCAL_NVME,
        info.local_nvme_gib
            .filter(|v| *v > 0)
            .map(|v| v.to_string()),
    );

    let mut offerings = Vec::new();
    for zone in &options.zones {
        offerings.push(Offering {
            zone: zone.clone(),
            capacity_type: CapacityType::OnDemand,
            price,
            available: true,
        });
        if options.spot {
            let spot = price * (1.0 - spot_discount(name, zone));
            offerings.push(Offering {
                zone: zone.clone(),
                capacity_type: CapacityType::Spot,
                price: (spot * 1e5).round() / 1e5,
                available: true,
            });
        }
    }
    Ok(InstanceType {
        name: name.to_string(),
        labels: l,
        capacity,
        overhead,
        allocatable,
        offerings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_catalogue_loads() {
        let cat = Catalogue::shipped(&CatalogueOptions::default()).unwrap();
        assert!(
            cat.instance_types.len() > 1300,
            "{}",
            cat.instance_types.len()
        );
        let m5 = cat.get("m5.large").unwrap();
        assert_eq!(m5.label(labels::ARCH), Some("amd64"));
        assert_eq!(m5.label(labels::INSTANCE_FAMILY), Some("m5"));
        assert_eq!(m5.label(labels::INSTANCE_CPU), Some("2"));
        assert_eq!(m5.allocatable.cpu, 1930);
        assert_eq!(m5.allocatable.pods, 29);
        assert_eq!(m5.offerings.len(), 6);
        let od = m5
            .cheapest_offering(|o| o.capacity_type == CapacityType::OnDemand)
            .unwrap();
        assert!((od.price - 0.096).abs() < 1e-9);
        let spot = m5
            .cheapest_offering(|o| o.capacity_type == CapacityType::Spot)
            .unwrap();
        assert!(spot.price < od.price * 0.41 && spot.price > od.price * 0.24);
        let gpu = cat.get("g4dn.xlarge").unwrap();
        assert_eq!(gpu.allocatable.get("nvidia.com/gpu"), 1);
        assert_eq!(gpu.label(labels::INSTANCE_GPU_NAME), Some("t4"));
        assert!(cat.skipped.iter().any(|(n, _)| n == "c7g-flex.large"));
    }

    #[test]
    fn spot_is_optional_and_deterministic() {
        let opts = CatalogueOptions {
            spot: false,
            ..CatalogueOptions::new("eu-west-1")
        };
        let cat = Catalogue::shipped(&opts).unwrap();
        let m5 = cat.get("m5.large").unwrap();
        assert!(
            m5.offerings
                .iter()
                .all(|o| o.capacity_type == CapacityType::OnDemand)
        );
        assert_eq!(m5.offerings[0].zone, "eu-west-1a");
        assert_eq!(
            spot_discount("m5.large", "a"),
            spot_discount("m5.large", "a")
        );
    }
}

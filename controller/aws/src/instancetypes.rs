//! The instance types a node class can launch, as the scheduler sees them: EC2's facts
//! (DescribeInstanceTypes) turned into capacity, overhead and labels by the catalogue's own
//! code (so they match the shipped data's exactly), offered only in the zones of the node
//! class's subnets where EC2 offers the type (DescribeInstanceTypeOfferings), priced from the
//! Pricing API (on-demand) and DescribeSpotPriceHistory (spot).
//!
//! Price fallbacks, as upstream: when the Pricing API cannot be read, the shipped us-east-1
//! table; when a spot price is missing, the catalogue's deterministic discount. Offerings in
//! the insufficient-capacity cache are marked unavailable on every read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use karpctl_api::v1::{AmiFamily, EC2NodeClass};
use karpctl_cloud::catalogue::spot_discount;
use karpctl_cloud::{
    CapacityType, Catalogue, CatalogueOptions, CloudError, CloudResult, InstanceType,
    InstanceTypeInfo, NodeSettings, Offering, OfferingKey,
};

use crate::AwsCloud;
use crate::api::{AwsApi, volume_size_gib};
use crate::cache::{Clock, TtlCache};

const GIB: i64 = 1 << 30;

/// Instance-type facts by name, as DescribeInstanceTypes gave them.
type Infos = Vec<(String, InstanceTypeInfo)>;
/// The zones EC2 offers each instance type in.
type Offered = BTreeMap<String, BTreeSet<String>>;
/// Spot price per (instance type, zone).
type SpotPrices = BTreeMap<(String, String), f64>;

/// What AWS said, cached as read (one entry each).
pub struct RawCache {
    infos: TtlCache<(), Arc<Infos>>,
    offered: TtlCache<(), Arc<Offered>>,
    on_demand: TtlCache<(), Arc<BTreeMap<String, f64>>>,
    spot: TtlCache<(), Arc<SpotPrices>>,
}

impl RawCache {
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            infos: TtlCache::new(ttl, clock.clone()),
            offered: TtlCache::new(ttl, clock.clone()),
            on_demand: TtlCache::new(ttl, clock.clone()),
            spot: TtlCache::new(ttl, clock),
        }
    }
}

/// Prices as read from AWS; missing entries fall back (see [`build`]).
#[derive(Clone, Debug, Default)]
pub struct PriceBook {
    pub on_demand: BTreeMap<String, f64>,
    pub spot: BTreeMap<(String, String), f64>,
}

/// The shipped us-east-1 on-demand prices, for types the Pricing API did not price.
pub fn shipped_prices() -> &'static BTreeMap<String, f64> {
    static PRICES: OnceLock<BTreeMap<String, f64>> = OnceLock::new();
    PRICES.get_or_init(|| {
        let options = CatalogueOptions {
            zones: vec!["z".to_owned()],
            spot: false,
            ..CatalogueOptions::default()
        };
        Catalogue::shipped(&options)
            .map(|c| {
                c.instance_types
                    .iter()
                    .filter_map(|t| Some((t.name.clone(), t.offerings.first()?.price)))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Family, category, generation and size from the type's name (`m5d.large`: family `m5d`,
/// category `m`, generation `5`, size `large`), for facts DescribeInstanceTypes lacks.
pub fn fill_name_facts(name: &str, info: &mut InstanceTypeInfo) {
    let Some((family, size)) = name.split_once('.') else {
        return;
    };
    info.family.get_or_insert_with(|| family.to_owned());
    info.size.get_or_insert_with(|| size.to_owned());
    let category: String = family
        .chars()
        .take_while(|c| c.is_ascii_lowercase())
        .collect();
    let generation: String = family[category.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if !category.is_empty() {
        info.category.get_or_insert(category);
    }
    if let Ok(g) = generation.parse() {
        info.generation.get_or_insert(g);
    }
}

/// Instance types offered in `zones`, priced: the pure part of [`AwsCloud::instance_types`].
pub fn build(
    infos: &[(String, InstanceTypeInfo)],
    offered: &BTreeMap<String, BTreeSet<String>>,
    zones: &BTreeSet<String>,
    prices: &PriceBook,
    region: &str,
    node: &NodeSettings,
) -> Vec<InstanceType> {
    let usable = infos
        .iter()
        .filter(|(name, _)| {
            offered
                .get(name)
                .is_some_and(|z| z.iter().any(|z| zones.contains(z)))
        })
        .map(|(name, info)| {
            let mut info = info.clone();
            fill_name_facts(name, &mut info);
            (name.clone(), info)
        });
    let mut on_demand = shipped_prices().clone();
    on_demand.extend(prices.on_demand.iter().map(|(k, v)| (k.clone(), *v)));
    let options = CatalogueOptions {
        region: region.to_owned(),
        zones: zones.iter().cloned().collect(),
        spot: false,
        node: node.clone(),
    };
    let catalogue = Catalogue::from_infos(usable, &on_demand, &options);
    catalogue
        .instance_types
        .into_iter()
        .map(|mut it| {
            let price = on_demand.get(&it.name).copied().unwrap_or_default();
            let type_zones = &offered[&it.name];
            it.offerings = zones
                .iter()
                .filter(|z| type_zones.contains(*z))
                .flat_map(|zone| {
                    let spot = prices
                        .spot
                        .get(&(it.name.clone(), zone.clone()))
                        .copied()
                        .filter(|p| *p > 0.0)
                        .unwrap_or_else(|| {
                            ((price * (1.0 - spot_discount(&it.name, zone))) * 1e5).round() / 1e5
                        });
                    [
                        Offering {
                            zone: zone.clone(),
                            capacity_type: CapacityType::OnDemand,
                            price,
                            available: true,
                        },
                        Offering {
                            zone: zone.clone(),
                            capacity_type: CapacityType::Spot,
                            price: spot,
                            available: true,
                        },
                    ]
                })
                .collect();
            it
        })
        .collect()
}

/// Bytes of the volume pods' ephemeral storage lives on: the mapping marked `rootVolume`,
/// else the family's default device (Bottlerocket keeps data on its second volume).
pub fn root_volume_bytes(node_class: &EC2NodeClass) -> i64 {
    let mappings = &node_class.spec.block_device_mappings;
    let size = |m: &karpctl_api::v1::BlockDeviceMapping| {
        m.ebs
            .as_ref()
            .and_then(|e| e.volume_size.as_deref())
            .and_then(volume_size_gib)
            .map(|g| i64::from(g) * GIB)
    };
    if let Some(root) = mappings.iter().find(|m| m.root_volume) {
        return size(root).unwrap_or(20 * GIB);
    }
    let index = match node_class.spec.effective_ami_family() {
        AmiFamily::Bottlerocket => 1,
        _ => 0,
    };
    mappings.get(index).and_then(size).unwrap_or(20 * GIB)
}

impl<A: AwsApi> AwsCloud<A> {
    pub(crate) fn node_settings(&self, node_class: &EC2NodeClass) -> NodeSettings {
        let kubelet = node_class.spec.kubelet.clone().unwrap_or_default();
        NodeSettings {
            max_pods: kubelet.max_pods.map(i64::from),
            pods_per_core: kubelet.pods_per_core.map(i64::from),
            prefix_delegation: false,
            reserved_enis: self.settings.reserved_enis,
            vm_memory_overhead_percent: self.settings.vm_memory_overhead_percent,
            root_volume_bytes: root_volume_bytes(node_class),
        }
    }

    pub(crate) fn is_unavailable(&self, key: &OfferingKey) -> bool {
        self.unavailable.contains(key)
    }

    pub(crate) fn mark_unavailable(&self, key: OfferingKey) {
        self.unavailable.mark(key);
    }

    pub(crate) async fn instance_types_for(
        &self,
        node_class: &EC2NodeClass,
    ) -> CloudResult<Vec<InstanceType>> {
        let types = self.cached_instance_types(node_class).await?;
        Ok(types
            .iter()
            .map(|it| {
                let mut it = it.clone();
                for o in &mut it.offerings {
                    let key = OfferingKey {
                        instance_type: it.name.clone(),
                        zone: o.zone.clone(),
                        capacity_type: o.capacity_type,
                    };
                    if self.is_unavailable(&key) {
                        o.available = false;
                    }
                }
                it
            })
            .collect())
    }

    /// The node class's instance types as cached, shared rather than copied, and without
    /// the offerings marked unavailable since: for callers that check
    /// [`Self::is_unavailable`] themselves (a launch), so each launch does not copy the
    /// whole catalogue.
    pub(crate) async fn cached_instance_types(
        &self,
        node_class: &EC2NodeClass,
    ) -> CloudResult<Arc<Vec<InstanceType>>> {
        let zones: BTreeSet<String> = node_class
            .status
            .as_ref()
            .map(|s| s.subnets.iter().map(|s| s.zone.clone()).collect())
            .unwrap_or_default();
        if zones.is_empty() {
            return Err(CloudError::NodeClassNotReady {
                name: node_class.metadata.name.clone().unwrap_or_default(),
                reason: "SubnetsReady: no subnets resolved yet".to_owned(),
            });
        }
        let node = self.node_settings(node_class);
        let key = format!("{zones:?}/{node:?}");
        let types = match self.instance_types.get(&key) {
            Some(types) => types,
            None => {
                let infos = self.raw_infos().await?;
                let offered = self.raw_offered().await?;
                let prices = PriceBook {
                    on_demand: (*self.raw_on_demand().await).clone(),
                    spot: (*self.raw_spot().await).clone(),
                };
                let types = Arc::new(build(
                    &infos,
                    &offered,
                    &zones,
                    &prices,
                    &self.region,
                    &node,
                ));
                self.instance_types.put(key, types.clone());
                types
            }
        };
        Ok(types)
    }

    async fn raw_infos(&self) -> CloudResult<Arc<Infos>> {
        if let Some(v) = self.raw.infos.get(&()) {
            return Ok(v);
        }
        let v = Arc::new(self.api.describe_instance_types().await?);
        self.raw.infos.put((), v.clone());
        Ok(v)
    }

    async fn raw_offered(&self) -> CloudResult<Arc<Offered>> {
        if let Some(v) = self.raw.offered.get(&()) {
            return Ok(v);
        }
        let mut offered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (t, zone) in self.api.describe_instance_type_offerings().await? {
            offered.entry(t).or_default().insert(zone);
        }
        let v = Arc::new(offered);
        self.raw.offered.put((), v.clone());
        Ok(v)
    }

    /// Pricing API prices; empty (so the shipped table applies) when it cannot be read.
    async fn raw_on_demand(&self) -> Arc<BTreeMap<String, f64>> {
        if let Some(v) = self.raw.on_demand.get(&()) {
            return v;
        }
        if self.settings.isolated_vpc {
            return Arc::new(BTreeMap::new());
        }
        match self.api.on_demand_prices(self.region.clone()).await {
            Ok(prices) => {
                let v = Arc::new(prices);
                self.raw.on_demand.put((), v.clone());
                v
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading on-demand prices failed; using the shipped prices");
                Arc::new(BTreeMap::new())
            }
        }
    }

    async fn raw_spot(&self) -> Arc<SpotPrices> {
        if let Some(v) = self.raw.spot.get(&()) {
            return v;
        }
        match self.api.describe_spot_price_history().await {
            Ok(prices) => {
                let v = Arc::new(prices);
                self.raw.spot.put((), v.clone());
                v
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading spot prices failed; using estimated spot prices");
                Arc::new(BTreeMap::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use karpctl_api::labels;

    use super::*;

    fn m5_large() -> (String, InstanceTypeInfo) {
        (
            "m5.large".to_owned(),
            InstanceTypeInfo {
                name: Some("m5.large".into()),
                vcpu: Some(2),
                memory_mib: Some(8192),
                arch: Some("amd64".into()),
                max_enis: Some(3),
                ipv4_per_eni: Some(10),
                eni_limited_max_pods: Some(29),
                hypervisor: Some("nitro".into()),
                ..InstanceTypeInfo::default()
            },
        )
    }

    fn zones(z: &[&str]) -> BTreeSet<String> {
        z.iter().map(|z| z.to_string()).collect()
    }

    #[test]
    fn name_facts_fill_what_ec2_does_not_say() {
        let mut info = InstanceTypeInfo::default();
        fill_name_facts("m5d.2xlarge", &mut info);
        assert_eq!(info.family.as_deref(), Some("m5d"));
        assert_eq!(info.category.as_deref(), Some("m"));
        assert_eq!(info.generation, Some(5));
        assert_eq!(info.size.as_deref(), Some("2xlarge"));
    }

    #[test]
    fn offerings_only_where_ec2_offers_the_type_and_the_node_class_has_subnets() {
        let offered = BTreeMap::from([(
            "m5.large".to_owned(),
            zones(&["us-west-2a", "us-west-2b", "us-west-2d"]),
        )]);
        let types = build(
            &[m5_large()],
            &offered,
            &zones(&["us-west-2a", "us-west-2c", "us-west-2d"]),
            &PriceBook::default(),
            "us-west-2",
            &NodeSettings::default(),
        );
        assert_eq!(types.len(), 1);
        let it = &types[0];
        let offering_zones: BTreeSet<&str> = it.offerings.iter().map(|o| o.zone.as_str()).collect();
        assert_eq!(offering_zones, BTreeSet::from(["us-west-2a", "us-west-2d"]));
        assert_eq!(it.offerings.len(), 4);
        assert_eq!(it.label(labels::INSTANCE_FAMILY), Some("m5"));
        assert_eq!(it.label(labels::TOPOLOGY_REGION), Some("us-west-2"));
        assert_eq!(it.allocatable.cpu, 1930);
        assert_eq!(it.allocatable.pods, 29);
    }

    #[test]
    fn prices_come_from_aws_and_fall_back_to_the_shipped_table() {
        let offered = BTreeMap::from([("m5.large".to_owned(), zones(&["us-west-2a"]))]);
        let price = |book: &PriceBook, ct: CapacityType| {
            let types = build(
                &[m5_large()],
                &offered,
                &zones(&["us-west-2a"]),
                book,
                "us-west-2",
                &NodeSettings::default(),
            );
            types[0]
                .offerings
                .iter()
                .find(|o| o.capacity_type == ct)
                .unwrap()
                .price
        };
        let shipped = PriceBook::default();
        assert!((price(&shipped, CapacityType::OnDemand) - 0.096).abs() < 1e-9);
        let spot = price(&shipped, CapacityType::Spot);
        assert!(spot > 0.096 * 0.24 && spot < 0.096 * 0.41, "{spot}");

        let read = PriceBook {
            on_demand: BTreeMap::from([("m5.large".to_owned(), 0.1)]),
            spot: BTreeMap::from([(("m5.large".to_owned(), "us-west-2a".to_owned()), 0.03)]),
        };
        assert!((price(&read, CapacityType::OnDemand) - 0.1).abs() < 1e-9);
        assert!((price(&read, CapacityType::Spot) - 0.03).abs() < 1e-9);
    }

    #[test]
    fn unpriced_types_are_left_out() {
        let mut unknown = m5_large();
        unknown.0 = "zz9.huge".to_owned();
        unknown.1.name = Some("zz9.huge".into());
        let offered = BTreeMap::from([("zz9.huge".to_owned(), zones(&["us-west-2a"]))]);
        let types = build(
            &[unknown],
            &offered,
            &zones(&["us-west-2a"]),
            &PriceBook::default(),
            "us-west-2",
            &NodeSettings::default(),
        );
        assert!(types.is_empty());
    }
}

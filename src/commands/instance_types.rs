//! `karpctl instance-types`: the catalogue the scheduler chooses from — all of it, or what
//! one NodePool allows — with capacity, allocatable (after kube-reserved, eviction threshold
//! and VM overhead), max pods, the price of every offering and the well-known labels.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use karpctl_cloud::resources::{format_bytes, format_cpu};
use karpctl_cloud::{CapacityType, InstanceType, NodeSettings, labels};
use karpctl_scheduling::Requirements;
use serde::Serialize;

use crate::cli::CatalogueArgs;
use crate::commands::simulate::{ResourceReport, source};
use crate::nodepools::node_pools;
use crate::printer::{Printer, schema};
use crate::workloads;

/// The `--output json` document (`docs/json.md`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    region: String,
    instance_types: Vec<TypeReport>,
    /// The catalogue entries themselves, for the text table.
    #[serde(skip)]
    types: Vec<InstanceType>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeReport {
    name: String,
    capacity: ResourceReport,
    /// `capacity` minus `overhead`: what pods (DaemonSets included) can request.
    allocatable: ResourceReport,
    overhead: OverheadReport,
    offerings: Vec<OfferingReport>,
    /// Well-known labels a node of this type carries (zone and capacity type are per offering).
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OverheadReport {
    kube_reserved: ResourceReport,
    system_reserved: ResourceReport,
    eviction_threshold: ResourceReport,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OfferingReport {
    zone: String,
    capacity_type: &'static str,
    price_per_hour: f64,
    available: bool,
}

impl From<&InstanceType> for TypeReport {
    fn from(it: &InstanceType) -> Self {
        Self {
            name: it.name.clone(),
            capacity: (&it.capacity).into(),
            allocatable: (&it.allocatable).into(),
            overhead: OverheadReport {
                kube_reserved: (&it.overhead.kube_reserved).into(),
                system_reserved: (&it.overhead.system_reserved).into(),
                eviction_threshold: (&it.overhead.eviction_threshold).into(),
            },
            offerings: it
                .offerings
                .iter()
                .map(|o| OfferingReport {
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type.as_str(),
                    price_per_hour: o.price,
                    available: o.available,
                })
                .collect(),
            labels: it.labels.clone(),
        }
    }
}

fn cheapest(it: &InstanceType, kind: CapacityType) -> String {
    it.cheapest_offering(|o| o.capacity_type == kind)
        .map(|o| format!("{:.4}", o.price))
        .unwrap_or_else(|| "-".into())
}

fn text(listing: &Listing) -> String {
    let types = &listing.types;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>5} {:>9} {:>9} {:>10} {:>8} {:<6} {:>10} {:>10}",
        "NAME",
        "VCPU",
        "MEMORY",
        "ALLOC CPU",
        "ALLOC MEM",
        "MAX PODS",
        "ARCH",
        "OD $/H",
        "SPOT $/H"
    );
    for it in types {
        let _ = writeln!(
            out,
            "{:<22} {:>5} {:>9} {:>9} {:>10} {:>8} {:<6} {:>10} {:>10}",
            it.name,
            it.capacity.cpu / 1000,
            format_bytes(it.capacity.memory),
            format_cpu(it.allocatable.cpu),
            format_bytes(it.allocatable.memory),
            it.allocatable.pods,
            it.label(labels::ARCH).unwrap_or("-"),
            cheapest(it, CapacityType::OnDemand),
            cheapest(it, CapacityType::Spot),
        );
    }
    let _ = writeln!(out, "{} instance types", types.len());
    out
}

/// Whether a pool's requirements (name, labels and requirements folded in) admit the type.
fn allowed(requirements: &Requirements, it: &InstanceType) -> bool {
    requirements.iter().all(|r| match r.key.as_str() {
        labels::ZONE | labels::CAPACITY_TYPE => it.offerings.iter().any(|o| {
            requirements.allows(labels::ZONE, &o.zone)
                && requirements.allows(labels::CAPACITY_TYPE, o.capacity_type.as_str())
        }),
        key => match it.labels.get(key) {
            Some(v) => r.has(v),
            None => !labels::is_well_known(key) || r.allows_absent(),
        },
    })
}

pub fn run(
    files: &[PathBuf],
    node_pool: Option<&str>,
    args: &CatalogueArgs,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let source = source(args)?;
    let types: Vec<InstanceType> = match node_pool {
        None if files.is_empty() => source.load(NodeSettings::default())?.instance_types,
        _ => {
            let cluster = workloads::read(files)?;
            let (pools, _) = node_pools(&cluster.node_pools, &cluster.node_classes, &source)?;
            let wanted = match node_pool {
                Some(name) => pools.iter().find(|p| p.name == name).ok_or_else(|| {
                    let known: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                    anyhow!(
                        "no NodePool named {name:?} in the input (found: {})",
                        known.join(", ")
                    )
                })?,
                None => match pools.as_slice() {
                    [one] => one,
                    _ => {
                        return Err(anyhow!(
                            "the input has {} NodePools; choose one with --node-pool",
                            pools.len()
                        ));
                    }
                },
            };
            let mut requirements = wanted.requirements.clone();
            for (k, v) in &wanted.labels {
                requirements.add(karpctl_scheduling::Requirement::exactly(k, v));
            }
            wanted
                .instance_types
                .iter()
                .filter(|it| allowed(&requirements, it))
                .cloned()
                .collect()
        }
    };
    let listing = Listing {
        region: source.region,
        instance_types: types.iter().map(TypeReport::from).collect(),
        types,
    };
    printer.result(schema::INSTANCE_TYPES, &listing, text)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpctl_scheduling::{Operator, Requirement};

    #[test]
    fn pool_requirements_filter_the_catalogue() {
        let catalogue = karpctl_cloud::Catalogue::shipped(&Default::default()).unwrap();
        let m5 = catalogue.get("m5.large").unwrap();
        let g4 = catalogue.get("g4dn.xlarge").unwrap();
        let req = |key: &str, op, values: &[&str]| -> Requirements {
            [Requirement::new(key, op, values).unwrap()]
                .into_iter()
                .collect()
        };
        let cases = [
            (
                req(labels::INSTANCE_FAMILY, Operator::In, &["m5"]),
                m5,
                true,
            ),
            (
                req(labels::INSTANCE_FAMILY, Operator::In, &["m5"]),
                g4,
                false,
            ),
            (
                req(labels::INSTANCE_GPU_MANUFACTURER, Operator::In, &["nvidia"]),
                m5,
                false,
            ),
            (
                req(labels::INSTANCE_GPU_MANUFACTURER, Operator::In, &["nvidia"]),
                g4,
                true,
            ),
            (
                req(labels::CAPACITY_TYPE, Operator::In, &["spot"]),
                m5,
                true,
            ),
            (req(labels::ZONE, Operator::In, &["mars-1a"]), m5, false),
            (req("team", Operator::In, &["a"]), m5, true),
        ];
        for (r, it, want) in cases {
            assert_eq!(allowed(&r, it), want, "{r} vs {}", it.name);
        }
        let listing = Listing {
            region: "us-east-1".into(),
            instance_types: vec![m5.into()],
            types: vec![m5.clone()],
        };
        let table = text(&listing);
        assert!(table.contains("m5.large") && table.contains("1 instance types"));
    }

    /// Regression: `-o json` printed the catalogue's own structs — snake_case fields, CPU in
    /// bare millicores and memory in bare bytes — unlike every other document.
    #[test]
    fn the_json_listing_is_camel_case_with_quantity_strings() {
        let catalogue = karpctl_cloud::Catalogue::shipped(&Default::default()).unwrap();
        let m5 = catalogue.get("m5.large").unwrap();
        let listing = Listing {
            region: "us-east-1".into(),
            instance_types: vec![m5.into()],
            types: vec![m5.clone()],
        };
        let json = crate::printer::document(schema::INSTANCE_TYPES, &listing);
        assert_eq!(
            crate::printer::non_camel_case_fields(&json, &["labels", "extended"]),
            Vec::<String>::new()
        );
        assert_eq!(json["schema"], "karpctl.instance-types/v1");
        let m5 = &json["instanceTypes"][0];
        assert_eq!(m5["capacity"]["cpu"], "2");
        assert_eq!(m5["allocatable"]["pods"], 29);
        for amount in [
            &m5["capacity"]["memory"],
            &m5["allocatable"]["cpu"],
            &m5["allocatable"]["memory"],
        ] {
            let q = amount.as_str().expect("a quantity string");
            karpctl_cloud::parse_quantity_milli(q).expect("a Kubernetes quantity");
        }
        let offerings = m5["offerings"].as_array().unwrap();
        assert!(offerings.iter().any(|o| o["capacityType"] == "on-demand"));
        assert!(
            offerings
                .iter()
                .all(|o| o["pricePerHour"].as_f64().unwrap() > 0.0)
        );
        assert_eq!(m5["labels"]["kubernetes.io/arch"], "amd64");
    }
}

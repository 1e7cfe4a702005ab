//! `karpctl status`: what the controller launched and what it costs — every NodeClaim with
//! its NodePool, instance type, capacity type, zone, node, readiness and hourly price — and how
//! many pods run and wait. Prices are on-demand list prices from the shipped table; spot prices
//! are that table's estimate (the controller itself reads live spot prices from EC2).

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use karpctl_api::labels;
use karpctl_api::v1::NodeClaim;
use karpctl_cloud::{CapacityType, Catalogue, CatalogueOptions};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::kube::config_map as kube_config;
use crate::printer::{Printer, schema};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Claim {
    name: String,
    node_pool: String,
    instance_type: String,
    capacity_type: String,
    zone: String,
    node: String,
    ready: String,
    price_per_hour: Option<f64>,
    /// The disruption controller's last verdict (`status.disruption.outcome`), if any.
    disruption: String,
    /// Why (`status.disruption.message`).
    disruption_message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    node_claims: Vec<Claim>,
    ready: usize,
    price_per_hour: f64,
    pods_running: usize,
    pods_pending: usize,
}

pub fn run(context: Option<&str>, printer: &Printer) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let status = runtime.block_on(read(context))?;
    printer.result(schema::STATUS, &status, text)?;
    Ok(ExitCode::SUCCESS)
}

async fn read(context: Option<&str>) -> anyhow::Result<Status> {
    let client = kube_config::client(context).await?;
    let claims = match Api::<NodeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            anyhow::bail!("this cluster has no NodeClaim API; run `karpctl init` first")
        }
        Err(e) => return Err(e).context("listing NodeClaims"),
    };
    let pods = Api::<Pod>::all(client)
        .list(&ListParams::default())
        .await
        .context("listing Pods")?
        .items;
    let mut catalogues: std::collections::BTreeMap<String, Option<Catalogue>> = Default::default();
    let mut out = Vec::new();
    for c in claims {
        let label = |k: &str| {
            c.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let zone = label(labels::TOPOLOGY_ZONE);
        let instance_type = label(labels::INSTANCE_TYPE);
        let capacity_type = label(labels::CAPACITY_TYPE);
        let region = zone
            .trim_end_matches(|ch: char| ch.is_ascii_lowercase())
            .to_owned();
        let catalogue = catalogues
            .entry(region.clone())
            .or_insert_with(|| {
                (!region.is_empty())
                    .then(|| Catalogue::shipped(&CatalogueOptions::new(&region)).ok())
                    .flatten()
            })
            .as_ref();
        let price = catalogue
            .and_then(|cat| cat.get(&instance_type))
            .and_then(|it| {
                let kind = if capacity_type == labels::CAPACITY_TYPE_SPOT {
                    CapacityType::Spot
                } else {
                    CapacityType::OnDemand
                };
                it.offerings
                    .iter()
                    .find(|o| o.zone == zone && o.capacity_type == kind)
                    .or_else(|| it.offerings.iter().find(|o| o.capacity_type == kind))
                    .map(|o| o.price)
            });
        let status = c.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|cond| cond.type_ == "Ready")
            .map(|cond| format!("{:?}", cond.status))
            .unwrap_or_else(|| "Unknown".into());
        out.push(Claim {
            name: c.metadata.name.clone().unwrap_or_default(),
            node_pool: label(labels::NODE_POOL),
            instance_type,
            capacity_type,
            zone,
            node: status.node_name.clone().unwrap_or_default(),
            ready,
            price_per_hour: price,
            disruption: if c.metadata.deletion_timestamp.is_some() {
                "Deleting".to_owned()
            } else {
                status
                    .disruption
                    .as_ref()
                    .map(|d| d.outcome.clone())
                    .unwrap_or_default()
            },
            disruption_message: status
                .disruption
                .as_ref()
                .map(|d| d.message.clone())
                .unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| (&a.node_pool, &a.name).cmp(&(&b.node_pool, &b.name)));
    let phase = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    Ok(Status {
        ready: out.iter().filter(|c| c.ready == "True").count(),
        price_per_hour: out
            .iter()
            .filter_map(|c| c.price_per_hour)
            .fold(0.0, |a, b| a + b),
        pods_running: pods.iter().filter(|p| phase(p) == "Running").count(),
        pods_pending: pods.iter().filter(|p| phase(p) == "Pending").count(),
        node_claims: out,
    })
}

fn text(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<24} {:<14} {:<10} {:<12} {:<44} {:<6} {:>8}  DISRUPTION",
        "NODEPOOL", "NODECLAIM", "TYPE", "CAPACITY", "ZONE", "NODE", "READY", "$/HOUR"
    );
    for c in &s.node_claims {
        let _ = writeln!(
            out,
            "{:<12} {:<24} {:<14} {:<10} {:<12} {:<44} {:<6} {:>8}  {}",
            c.node_pool,
            c.name,
            c.instance_type,
            c.capacity_type,
            c.zone,
            c.node,
            c.ready,
            c.price_per_hour
                .map(|p| format!("{p:.4}"))
                .unwrap_or_else(|| "-".into()),
            if c.disruption.is_empty() {
                "-"
            } else {
                &c.disruption
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{} NodeClaims, {} Ready, ${:.4}/hour. Pods: {} Running, {} Pending.",
        s.node_claims.len(),
        s.ready,
        s.price_per_hour,
        s.pods_running,
        s.pods_pending
    );
    out
}

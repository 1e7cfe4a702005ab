//! `karpctl explain POD`: for one pending pod, why each existing node and each instance type
//! of each NodePool is or is not a place for it — the solver's own predicates, one pod at a
//! time, so "why is my pod pending?" has an answer before anything is launched.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use karpctl_scheduling::Scheduler;
use karpctl_scheduling::explain::{Explanation, NodePoolVerdict, Verdict};

use crate::cli::CatalogueArgs;
use crate::commands::simulate::{ResourceReport, source};
use crate::nodepools::node_pools;
use crate::printer::{Printer, schema};
use crate::workloads;

fn text(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Pod {} requests {}", e.pod, e.request);
    if !e.nodes.is_empty() {
        out.push_str("\nExisting nodes:\n");
        for n in &e.nodes {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                if n.fits { "✓" } else { "✗" },
                n.name,
                n.reason
            );
        }
    }
    for p in &e.node_pools {
        let _ = write!(out, "\nNodePool {}: ", p.node_pool);
        if let Some(why) = &p.excluded {
            let _ = writeln!(out, "excluded: {why}");
            continue;
        }
        let fitting = p.instance_types.iter().filter(|t| t.fits).count();
        let _ = writeln!(
            out,
            "{fitting} of {} instance types fit",
            p.instance_types.len()
        );
        for t in p.instance_types.iter().filter(|t| t.fits).take(10) {
            let _ = writeln!(out, "  ✓ {}: {}", t.name, t.reason);
        }
        if fitting > 10 {
            let _ = writeln!(out, "  ... {} more fit (see --output json)", fitting - 10);
        }
        for t in p.instance_types.iter().filter(|t| !t.fits) {
            let _ = writeln!(out, "  ✗ {}: {}", t.name, t.reason);
        }
    }
    out
}

pub fn run(
    pod: &str,
    files: &[PathBuf],
    args: &CatalogueArgs,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let cluster = workloads::read(files)?;
    let (pools, _) = node_pools(&cluster.node_pools, &cluster.node_classes, &source(args)?)?;
    let target = workloads::find_pod(&cluster, pod)?;
    let scheduler = Scheduler::new(pools, cluster.nodes.clone(), cluster.daemon_sets.clone());
    let explanation = scheduler.explain(target);
    printer.result(schema::EXPLAIN_POD, &PodReport::from(&explanation), |r| {
        text(r.explanation)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What `explain POD --output json` prints (`docs/json.md`): the request as quantities.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PodReport<'a> {
    pod: &'a str,
    requests: ResourceReport,
    nodes: &'a [Verdict],
    node_pools: &'a [NodePoolVerdict],
    #[serde(skip)]
    explanation: &'a Explanation,
}

impl<'a> From<&'a Explanation> for PodReport<'a> {
    fn from(e: &'a Explanation) -> Self {
        Self {
            pod: &e.pod,
            requests: (&e.requests).into(),
            nodes: &e.nodes,
            node_pools: &e.node_pools,
            explanation: e,
        }
    }
}

/// What `explain node` prints: the claim's disruption verdict as the controller wrote it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeVerdict {
    pub node: String,
    pub node_claim: String,
    pub node_pool: String,
    pub deleting: bool,
    pub drifted: Option<String>,
    pub verdict: Option<karpctl_api::v1::DisruptionVerdict>,
}

fn node_text(v: &NodeVerdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Node {} (NodeClaim {}, NodePool {})",
        if v.node.is_empty() { "-" } else { &v.node },
        v.node_claim,
        v.node_pool
    );
    if v.deleting {
        let _ = writeln!(
            out,
            "  being deleted (see `kubectl describe nodeclaim {}`)",
            v.node_claim
        );
    }
    if let Some(d) = &v.drifted {
        let _ = writeln!(out, "  drifted: {d}");
    }
    match &v.verdict {
        None => {
            let _ = writeln!(
                out,
                "  no disruption verdict yet: the controller writes one for each initialized node it evaluates (every 10s)"
            );
        }
        Some(d) => {
            let _ = writeln!(out, "  outcome:     {} ({})", d.outcome, d.method);
            let _ = writeln!(out, "  why:         {}", d.message);
            for b in &d.blockers {
                let _ = writeln!(out, "  blocked by:  {b}");
            }
            if let Some(p) = &d.price {
                let _ = writeln!(out, "  price:       ${p}/hour");
            }
            if let Some(p) = &d.replacement_price {
                let _ = writeln!(out, "  replacement: ${p}/hour");
            }
            if let Some(t) = &d.last_evaluated {
                let _ = writeln!(out, "  evaluated:   {}", t.0);
            }
        }
    }
    out
}

/// `karpctl explain node NAME`: read the NodeClaim of a Node (or the NodeClaim itself) from
/// the live cluster and print its disruption verdict.
pub fn node(name: &str, context: Option<&str>, printer: &Printer) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    use karpctl_api::v1::{Conditions, NodeClaim};
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let verdict = runtime.block_on(async {
        let client = crate::kube::config_map::client(context).await?;
        let claims = match kube::Api::<NodeClaim>::all(client)
            .list(&kube::api::ListParams::default())
            .await
        {
            Ok(list) => list.items,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                anyhow::bail!("this cluster has no NodeClaim API; run `karpctl init` first")
            }
            Err(e) => return Err(e).context("listing NodeClaims"),
        };
        let claim = claims
            .into_iter()
            .find(|c| {
                c.metadata.name.as_deref() == Some(name)
                    || c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name)
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no NodeClaim named {name} or launched as Node {name}; nodes the controller did not launch (node groups, Fargate) are never disrupted by it"
                )
            })?;
        let status = claim.status.clone().unwrap_or_default();
        Ok::<_, anyhow::Error>(NodeVerdict {
            node: status.node_name.clone().unwrap_or_default(),
            node_claim: claim.metadata.name.clone().unwrap_or_default(),
            node_pool: claim
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(karpctl_api::labels::NODE_POOL))
                .cloned()
                .unwrap_or_default(),
            deleting: claim.metadata.deletion_timestamp.is_some(),
            drifted: status
                .condition("Drifted")
                .filter(|c| c.status == karpctl_api::v1::ConditionStatus::True)
                .map(|c| format!("{}: {}", c.reason, c.message)),
            verdict: status.disruption.clone(),
        })
    })?;
    printer.result(schema::EXPLAIN_NODE, &verdict, node_text)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_a_gpu_pod_against_every_pool() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/simulate");
        let cluster =
            workloads::read(&[dir.join("nodepools.yaml"), dir.join("workloads.yaml")]).unwrap();
        let args = CatalogueArgs {
            region: Some("us-east-1".into()),
            profile: None,
            zones: Vec::new(),
            instance_types: None,
            spot: false,
            no_spot: false,
        };
        let (pools, _) = node_pools(
            &cluster.node_pools,
            &cluster.node_classes,
            &source(&args).unwrap(),
        )
        .unwrap();
        let pod = workloads::find_pod(&cluster, "ml/inference-0").unwrap();
        let e = Scheduler::new(pools, Vec::new(), cluster.daemon_sets.clone()).explain(pod);
        let general = e
            .node_pools
            .iter()
            .find(|p| p.node_pool == "general")
            .unwrap();
        assert!(general.instance_types.iter().all(|t| !t.fits));
        let gpu = e.node_pools.iter().find(|p| p.node_pool == "gpu").unwrap();
        assert!(
            gpu.instance_types
                .iter()
                .any(|t| t.fits && t.name == "g4dn.xlarge")
        );
        assert!(text(&e).contains("NodePool gpu:"));
        let json = crate::printer::document(schema::EXPLAIN_POD, &PodReport::from(&e));
        assert_eq!(
            crate::printer::non_camel_case_fields(&json, &["extended"]),
            Vec::<String>::new()
        );
        assert_eq!(json["pod"], "ml/inference-0");
        assert_eq!(json["nodePools"][1]["nodePool"], "gpu", "{json}");
        karpctl_cloud::parse_quantity_milli(json["requests"]["memory"].as_str().unwrap())
            .expect("a Kubernetes quantity");
        assert!(workloads::find_pod(&cluster, "nope").is_err());
    }
}

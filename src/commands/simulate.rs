//! `karpctl simulate`: what Karpenter would launch for these workloads, and what it costs.
//! Reads manifests, runs the same `Scheduler::solve` the controller uses, prints the plan as a
//! table (or the JSON document described in `docs/simulate-json.md`), and re-checks the plan
//! with the independent checker so a wrong plan is never shown as right.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use karpctl_cloud::resources::{format_cpu, quantity_bytes};
use karpctl_scheduling::checker::{Input, verify};
use karpctl_scheduling::{Pod, Resources, Results, Scheduler};
use serde::Serialize;

use crate::cli::CatalogueArgs;
use crate::nodepools::{CatalogueSource, node_pools};
use crate::printer::{Printer, schema};
use crate::workloads;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub region: String,
    pub summary: Summary,
    pub node_claims: Vec<NodeClaimReport>,
    pub existing_nodes: Vec<ExistingReport>,
    pub unschedulable: Vec<UnschedulableReport>,
    pub notes: Vec<String>,
    /// With Nodes in the input: what consolidation would do with them (a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consolidation: Option<ConsolidationReport>,
}

/// A consolidation dry run: the command the controller's next pass would carry out, and
/// what single-node consolidation says about each node of a NodePool.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsolidationReport {
    /// Upstream's command string, or none.
    pub command: Option<String>,
    /// USD per hour the command saves.
    pub saves_per_hour: f64,
    pub nodes: Vec<NodeVerdictReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeVerdictReport {
    pub node: String,
    pub node_pool: String,
    pub instance_type: String,
    pub capacity_type: String,
    pub price_per_hour: Option<f64>,
    /// `delete`, `replace`, or `keep`.
    pub action: String,
    pub reason: String,
    pub replacement_price_per_hour: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub pods: usize,
    pub node_claims: usize,
    pub price_per_hour: f64,
    pub pods_on_new_nodes: usize,
    pub pods_on_existing_nodes: usize,
    pub unschedulable_pods: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimReport {
    pub name: String,
    pub node_pool: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
    pub price_per_hour: f64,
    pub pods: Vec<String>,
    pub requests: ResourceReport,
    pub daemon_set_overhead: ResourceReport,
    pub allocatable: ResourceReport,
    pub utilization: Utilization,
    pub instance_type_options: Vec<OptionReport>,
    pub requirements: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceReport {
    pub cpu: String,
    pub memory: String,
    pub pods: i64,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extended: std::collections::BTreeMap<String, i64>,
}

impl From<&Resources> for ResourceReport {
    fn from(r: &Resources) -> Self {
        Self {
            cpu: format_cpu(r.cpu),
            memory: quantity_bytes(r.memory),
            pods: r.pods,
            extended: r.extended.clone(),
        }
    }
}

#[derive(Serialize)]
pub struct Utilization {
    pub cpu: f64,
    pub memory: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OptionReport {
    pub name: String,
    pub price_per_hour: f64,
}

#[derive(Serialize)]
pub struct ExistingReport {
    pub node: String,
    pub pods: Vec<String>,
}

#[derive(Serialize)]
pub struct UnschedulableReport {
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub reason: String,
}

/// The consolidation dry run over the input's Nodes that belong to a NodePool (label
/// `karpenter.sh/nodepool`), with the same simulator the controller uses.
pub fn consolidation(
    pools: &[karpctl_scheduling::NodePool],
    cluster: &workloads::Cluster,
) -> Option<ConsolidationReport> {
    use karpctl_scheduling::disruption::{Candidate, Options, Outcome, Simulator};
    let label = |n: &karpctl_scheduling::ExistingNode, k: &str| {
        n.labels.get(k).cloned().unwrap_or_default()
    };
    let mut candidates: Vec<Candidate> = cluster
        .nodes
        .iter()
        .filter_map(|n| {
            let pool_name = n.labels.get("karpenter.sh/nodepool")?;
            let pool = pools.iter().find(|p| &p.name == pool_name)?;
            let instance_type = label(n, "node.kubernetes.io/instance-type");
            let zone = label(n, "topology.kubernetes.io/zone");
            let capacity_type = match label(n, "karpenter.sh/capacity-type").as_str() {
                "spot" => Some(karpctl_cloud::CapacityType::Spot),
                _ => Some(karpctl_cloud::CapacityType::OnDemand),
            };
            let price = pool
                .instance_types
                .iter()
                .find(|t| t.name == instance_type)
                .and_then(|t| {
                    t.offerings.iter().find(|o| {
                        Some(o.capacity_type) == capacity_type
                            && (zone.is_empty() || o.zone == zone)
                    })
                })
                .map(|o| o.price)
                .unwrap_or(f64::NAN);
            Some(Candidate {
                node: n.name.clone(),
                claim: n.name.clone(),
                node_pool: pool_name.clone(),
                instance_type,
                capacity_type,
                zone,
                price,
                pod_keys: n
                    .pods
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect(),
                disruption_cost: 1.0 + n.pods.len() as f64,
                pods: n.pods.clone(),
            })
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates.sort_by(|a, b| {
        a.disruption_cost
            .total_cmp(&b.disruption_cost)
            .then_with(|| a.node.cmp(&b.node))
    });
    let sim = Simulator::new(
        pools.to_vec(),
        cluster.nodes.clone(),
        cluster.daemon_sets.clone(),
        cluster.pods.clone(),
        Options::default(),
    );
    let priced: Vec<Candidate> = candidates
        .iter()
        .filter(|c| c.price.is_finite())
        .cloned()
        .collect();
    let describe = |cands: &[&Candidate], outcome: &Outcome| {
        let nodes: Vec<String> = cands
            .iter()
            .map(|c| {
                format!(
                    "{}/{}/{}",
                    c.node,
                    c.instance_type,
                    c.capacity_type.map(|t| t.as_str()).unwrap_or("")
                )
            })
            .collect();
        let pods: usize = cands.iter().map(|c| c.pods.len()).sum();
        let kind = match outcome {
            Outcome::Replace(p) => format!(
                "Replace, terminating {} nodes ({pods} pods) {} and replacing with {} node from types {}",
                cands.len(),
                nodes.join(", "),
                p.capacity_type,
                p.instance_type_options
                    .iter()
                    .take(5)
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => format!(
                "Delete, terminating {} nodes ({pods} pods) {}",
                cands.len(),
                nodes.join(", ")
            ),
        };
        format!("Underutilized/{kind}")
    };
    let saves = |cands: &[&Candidate], outcome: &Outcome| {
        cands.iter().map(|c| c.price).sum::<f64>() - outcome.replacement_price().unwrap_or(0.0)
    };
    let empties: Vec<&Candidate> = priced.iter().filter(|c| c.pods.is_empty()).collect();
    let (command, saves_per_hour) = if !empties.is_empty() {
        let nodes: Vec<String> = empties.iter().map(|c| c.node.clone()).collect();
        (
            Some(format!(
                "Empty/Delete, terminating {} nodes (0 pods) {}",
                empties.len(),
                nodes.join(", ")
            )),
            empties.iter().map(|c| c.price).sum(),
        )
    } else if let Some((chosen, outcome)) = sim.multi_node(&priced) {
        (Some(describe(&chosen, &outcome)), saves(&chosen, &outcome))
    } else {
        match sim.single_node(&priced).0 {
            Some((c, outcome)) => (Some(describe(&[c], &outcome)), saves(&[c], &outcome)),
            None => (None, 0.0),
        }
    };
    let nodes = candidates
        .iter()
        .map(|c| {
            let (action, reason, replacement) = if !c.price.is_finite() {
                (
                    "keep".to_owned(),
                    format!(
                        "instance type {} is not offered to NodePool {}",
                        c.instance_type, c.node_pool
                    ),
                    None,
                )
            } else {
                let outcome = sim.simulate(&[c]);
                match &outcome {
                    Outcome::Delete => (
                        "delete".to_owned(),
                        "its pods fit on other nodes".to_owned(),
                        Some(0.0),
                    ),
                    Outcome::Replace(p) => (
                        "replace".to_owned(),
                        format!(
                            "a cheaper {} {} fits its pods",
                            p.capacity_type, p.instance_type
                        ),
                        Some(p.price),
                    ),
                    Outcome::Blocked(b) => (
                        "keep".to_owned(),
                        b.to_string(),
                        outcome.replacement_price(),
                    ),
                }
            };
            NodeVerdictReport {
                node: c.node.clone(),
                node_pool: c.node_pool.clone(),
                instance_type: c.instance_type.clone(),
                capacity_type: c
                    .capacity_type
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
                price_per_hour: c.price.is_finite().then_some(c.price),
                action,
                reason,
                replacement_price_per_hour: replacement,
            }
        })
        .collect();
    Some(ConsolidationReport {
        command,
        saves_per_hour,
        nodes,
    })
}

/// Where the catalogue comes from. The region is resolved as `init` resolves it (`--region`,
/// `AWS_REGION`, the profile), without credentials or the network; us-east-1 when nothing
/// names one.
pub fn source(args: &CatalogueArgs) -> anyhow::Result<CatalogueSource> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let region = runtime
        .block_on(crate::aws::Aws::region_name(
            args.profile.as_deref(),
            args.region.as_deref(),
        ))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    Ok(CatalogueSource {
        region,
        zones: args.zones.clone(),
        spot: !args.no_spot,
        file: args.instance_types.clone(),
    })
}

/// The region of the shipped price list, used when nothing names a region.
const DEFAULT_REGION: &str = "us-east-1";

fn ratio(used: i64, of: i64) -> f64 {
    if of > 0 {
        (used as f64 / of as f64 * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

pub fn report(pods: &[Pod], results: &Results, region: &str, notes: Vec<String>) -> Report {
    let node_claims: Vec<NodeClaimReport> = results
        .node_claims
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let total = c.requests.plus(&c.daemon_overhead);
            NodeClaimReport {
                name: format!("{}-{}", c.node_pool, i + 1),
                node_pool: c.node_pool.clone(),
                instance_type: c.instance_type.clone(),
                zone: c.zone.clone(),
                capacity_type: c.capacity_type.as_str().to_string(),
                price_per_hour: c.price,
                pods: c.pods.iter().map(|p| pods[*p].to_string()).collect(),
                requests: (&c.requests).into(),
                daemon_set_overhead: (&c.daemon_overhead).into(),
                allocatable: (&c.allocatable).into(),
                utilization: Utilization {
                    cpu: ratio(total.cpu, c.allocatable.cpu),
                    memory: ratio(total.memory, c.allocatable.memory),
                },
                instance_type_options: c
                    .instance_type_options
                    .iter()
                    .map(|o| OptionReport {
                        name: o.name.clone(),
                        price_per_hour: o.price,
                    })
                    .collect(),
                requirements: c.requirements.iter().map(|r| r.to_string()).collect(),
            }
        })
        .collect();
    let on_existing: usize = results.existing.iter().map(|e| e.pods.len()).sum();
    let on_new: usize = results.node_claims.iter().map(|c| c.pods.len()).sum();
    Report {
        region: region.to_string(),
        summary: Summary {
            pods: pods.len(),
            node_claims: node_claims.len(),
            price_per_hour: (results.total_price() * 1e6).round() / 1e6,
            pods_on_new_nodes: on_new,
            pods_on_existing_nodes: on_existing,
            unschedulable_pods: results.unschedulable.len(),
        },
        node_claims,
        existing_nodes: results
            .existing
            .iter()
            .map(|e| ExistingReport {
                node: e.node.clone(),
                pods: e.pods.iter().map(|p| pods[*p].to_string()).collect(),
            })
            .collect(),
        unschedulable: results
            .unschedulable
            .iter()
            .map(|u| UnschedulableReport {
                pod: pods[u.pod].to_string(),
                owner: pods[u.pod].owner.clone(),
                reason: u.reason.clone(),
            })
            .collect(),
        notes,
        consolidation: None,
    }
}

fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

pub fn text(r: &Report) -> String {
    let mut out = String::new();
    if r.node_claims.is_empty() {
        out.push_str("No new NodeClaims.\n");
    } else {
        let rows: Vec<[String; 9]> = r
            .node_claims
            .iter()
            .map(|c| {
                [
                    c.name.clone(),
                    c.instance_type.clone(),
                    c.zone.clone(),
                    c.capacity_type.clone(),
                    format!("{:.4}", c.price_per_hour),
                    c.pods.len().to_string(),
                    percent(c.utilization.cpu),
                    percent(c.utilization.memory),
                    c.instance_type_options.len().to_string(),
                ]
            })
            .collect();
        let header = [
            "NODECLAIM",
            "INSTANCE TYPE",
            "ZONE",
            "CAPACITY",
            "$/HOUR",
            "PODS",
            "CPU",
            "MEMORY",
            "OPTIONS",
        ];
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                // Numbers right-aligned, words left-aligned.
                if i >= 4 {
                    let _ = write!(s, "{cell:>w$}  ");
                } else {
                    let _ = write!(s, "{cell:<w$}  ");
                }
            }
            s.trim_end().to_string() + "\n"
        };
        out.push_str(&line(&header.map(String::from)));
        for row in &rows {
            out.push_str(&line(row));
        }
    }
    for e in &r.existing_nodes {
        let _ = writeln!(out, "existing node {}: {} pod(s)", e.node, e.pods.len());
    }
    let s = &r.summary;
    let _ = writeln!(
        out,
        "\nPlan: {} NodeClaim(s), ${:.4}/hour (${:.2}/month); {} pod(s): {} on new nodes, {} on existing nodes, {} unschedulable.",
        s.node_claims,
        s.price_per_hour,
        s.price_per_hour * 730.0,
        s.pods,
        s.pods_on_new_nodes,
        s.pods_on_existing_nodes,
        s.unschedulable_pods
    );
    if !r.unschedulable.is_empty() {
        out.push_str("\nUnschedulable:\n");
        for u in &r.unschedulable {
            let _ = writeln!(out, "  {}: {}", u.pod, u.reason);
        }
    }
    if let Some(c) = &r.consolidation {
        out.push_str("\nConsolidation (dry run; nothing is changed):\n");
        match &c.command {
            Some(cmd) => {
                let _ = writeln!(out, "  next: {cmd}\n  saves ${:.4}/hour", c.saves_per_hour);
            }
            None => out.push_str("  next: nothing to consolidate\n"),
        }
        for n in &c.nodes {
            let _ = writeln!(
                out,
                "  {:<40} {:<14} {:<10} {:>9}  {:<8} {}",
                n.node,
                n.instance_type,
                n.capacity_type,
                n.price_per_hour
                    .map(|p| format!("${p:.4}"))
                    .unwrap_or_else(|| "-".into()),
                n.action,
                n.reason
            );
        }
    }
    out
}

pub fn run(files: &[PathBuf], args: &CatalogueArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let cluster = workloads::read(files)?;
    let source = source(args)?;
    let (pools, pool_notes) = node_pools(&cluster.node_pools, &cluster.node_classes, &source)?;
    let mut notes = cluster.notes.clone();
    notes.extend(pool_notes);
    if pools.is_empty() {
        notes.push("no NodePools in the input: only existing nodes can take pods".to_string());
    }
    for n in &notes {
        printer.progress(format!("note: {n}"));
    }
    let scheduler = Scheduler::new(
        pools.clone(),
        cluster.nodes.clone(),
        cluster.daemon_sets.clone(),
    );
    // A person waits for this answer once: the cost planning gets time to finish.
    let results = scheduler.solve_within(&cluster.pods, std::time::Duration::from_secs(30));
    let input = Input {
        pods: &cluster.pods,
        node_pools: &pools,
        nodes: &cluster.nodes,
        daemon_sets: &cluster.daemon_sets,
    };
    let violations = verify(&input, &results);
    if !violations.is_empty() {
        anyhow::bail!(
            "internal error: the plan failed its own check: {}",
            violations.join("; ")
        );
    }
    let mut report = report(&cluster.pods, &results, &source.region, notes);
    report.consolidation = consolidation(&pools, &cluster);
    printer.result(schema::SIMULATE, &report, text)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples/simulate")
            .join(name)
    }

    fn args() -> CatalogueArgs {
        CatalogueArgs {
            region: Some("us-east-1".into()),
            profile: None,
            zones: Vec::new(),
            instance_types: None,
            spot: false,
            no_spot: false,
        }
    }

    #[test]
    fn the_example_plans_every_pod_and_keeps_its_schema() {
        let files = [
            example("nodepools.yaml"),
            example("workloads.yaml"),
            example("nodes.yaml"),
        ];
        let cluster = workloads::read(&files).unwrap();
        let (pools, _) = node_pools(
            &cluster.node_pools,
            &cluster.node_classes,
            &source(&args()).unwrap(),
        )
        .unwrap();
        let results = Scheduler::new(pools, cluster.nodes.clone(), cluster.daemon_sets.clone())
            .solve(&cluster.pods);
        let report = report(&cluster.pods, &results, "us-east-1", Vec::new());
        assert_eq!(report.summary.pods, 17);
        assert_eq!(
            report.summary.unschedulable_pods,
            0,
            "{:?}",
            report
                .unschedulable
                .iter()
                .map(|u| &u.reason)
                .collect::<Vec<_>>()
        );
        assert!(
            report
                .node_claims
                .iter()
                .any(|c| c.node_pool == "gpu" && c.instance_type.starts_with('g'))
        );
        // The documented top-level shape (docs/simulate-json.md).
        let json = crate::printer::document(schema::SIMULATE, &report);
        assert_eq!(
            crate::printer::non_camel_case_fields(&json, &["extended"]),
            Vec::<String>::new()
        );
        let memory = json["nodeClaims"][0]["allocatable"]["memory"]
            .as_str()
            .unwrap();
        karpctl_cloud::parse_quantity_milli(memory).expect("a Kubernetes quantity");
        for key in [
            "schema",
            "region",
            "summary",
            "nodeClaims",
            "existingNodes",
            "unschedulable",
            "notes",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        for key in [
            "name",
            "nodePool",
            "instanceType",
            "zone",
            "capacityType",
            "pricePerHour",
            "pods",
            "requests",
            "daemonSetOverhead",
            "allocatable",
            "utilization",
            "instanceTypeOptions",
            "requirements",
        ] {
            assert!(
                json["nodeClaims"][0].get(key).is_some(),
                "missing nodeClaims[].{key}"
            );
        }
        assert_eq!(json["schema"], "karpctl.simulate/v1");
        let text = text(&report);
        assert!(text.contains("Plan: "), "{text}");
    }

    /// Regression: NodePool and EC2NodeClass errors found after reading (an instance type the
    /// catalogue lacks, a limit or volume size that does not parse) named the object but not
    /// the file or line, unlike every error of reading itself.
    #[test]
    fn pool_and_class_errors_name_file_line_object_and_field() {
        const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n";
        const CLASS: &str = "apiVersion: karpenter.k8s.aws/v1\nkind: EC2NodeClass\nmetadata: {name: d}\nspec:\n  amiSelectorTerms: [{alias: al2023@latest}]\n  role: r\n  subnetSelectorTerms: [{tags: {a: b}}]\n  securityGroupSelectorTerms: [{tags: {a: b}}]\n";
        let pool = |requirements: &str, limits: &str| {
            format!(
                "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {{name: p}}\nspec:\n  template:\n    spec:\n      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: d}}\n      requirements: [{requirements}]\n  limits: {{{limits}}}\n"
            )
        };
        // (file contents, what the error must name after the file)
        let cases = [
            (
                format!(
                    "{NAMESPACE}{}",
                    pool(
                        "{key: node.kubernetes.io/instance-type, operator: In, values: [m5.huge]}",
                        ""
                    )
                ),
                "document 2 (line 5), NodePool/p: spec.template.spec.requirements[0]: unknown instance type \"m5.huge\"",
            ),
            (
                format!("{NAMESPACE}{}", pool("", "nodes: 1.5")),
                "document 2 (line 5), NodePool/p: spec.limits.nodes: ",
            ),
            (
                format!("{NAMESPACE}{}", pool("", "cpu: lots")),
                "document 2 (line 5), NodePool/p: spec.limits.cpu: ",
            ),
            (
                format!(
                    "{NAMESPACE}{CLASS}  blockDeviceMappings:\n    - {{deviceName: /dev/xvda, rootVolume: true, ebs: {{volumeSize: huge}}}}\n---\n{}",
                    pool("", "")
                ),
                "document 2 (line 5), EC2NodeClass/d: spec.blockDeviceMappings[0].ebs.volumeSize: ",
            ),
        ];
        let dir = std::env::temp_dir().join(format!("karpctl-bad-pools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (yaml, want)) in cases.iter().enumerate() {
            let path = dir.join(format!("case-{i}.yaml"));
            std::fs::write(&path, yaml).unwrap();
            let err = workloads::read(std::slice::from_ref(&path))
                .and_then(|c| node_pools(&c.node_pools, &c.node_classes, &source(&args())?))
                .map(|_| ())
                .unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.starts_with(&format!("{}: {want}", path.display())),
                "case {i}: {text}\nshould start with the file, then: {want}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

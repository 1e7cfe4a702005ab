//! `karpctl migrate-from-cas`, decided as plain data: from the node groups, their nodes and
//! the pods, PodDisruptionBudgets and the controller's placement as read from the cluster, to
//! a [`Migration`] — the preflight findings per workload, one NodePool (with its
//! EC2NodeClass, as `init` renders them) per node group that accepts the same pods, and the
//! waves each group is drained in. The command executes it; nothing here talks to a cluster.
//!
//! Why a separate plan and not init's `Plan<Op>` alone: the NodePools go through init's
//! engine (the command runs init with them), but waves are decided again before each wave from
//! what the cluster then is (a re-run resumes from the nodes that are left, cordoned first),
//! so they are a pure function of the current nodes ([`next_wave`]), not a list fixed up front.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use karpctl_api::v1::{Taint, TaintEffect};
use karpctl_scheduling::drain::cas_safe_to_evict_false;
use serde::Serialize;

use super::controller::{NodeClassSettings, NodePoolSettings};

/// The label EKS puts on every managed node group node.
pub const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";
/// Labels every node has whatever launched it; a pod asking for them is satisfiable anywhere
/// the NodePool's requirements allow (instance type, zone, arch, os and capacity type are
/// requirements of the proposed pools).
const WELL_KNOWN: &[&str] = &[
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "kubernetes.io/hostname",
    "karpenter.sh/capacity-type",
];

/// One managed node group as EKS describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    pub name: String,
    pub instance_types: Vec<String>,
    /// `ON_DEMAND` or `SPOT`.
    pub capacity_type: String,
    /// The group's own (custom) labels, as `CreateNodegroup` set them.
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// `AL2023_x86_64_STANDARD`, `AL2_ARM_64`, `BOTTLEROCKET_x86_64`, `CUSTOM`, ...
    pub ami_type: String,
    pub disk_size_gib: Option<i32>,
    pub scaling: Scaling,
    pub auto_scaling_groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// A node group's scaling config: what is recorded before the migration touches it and
/// what `--rollback` restores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    pub min_size: i32,
    pub max_size: i32,
    pub desired_size: i32,
}

/// Everything the plan reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub node_groups: Vec<NodeGroup>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub pdbs: Vec<PodDisruptionBudget>,
    /// vCPUs and memory (MiB) per instance type, for the pools' limits.
    pub instance_sizes: BTreeMap<String, (u32, u64)>,
    /// The controller's namespace and the labels of its pods (init's Deployment).
    pub controller_namespace: String,
    pub controller_replicas: i32,
    /// Groups the user keeps (`--keep`); empty: the group running the most critical pods.
    pub keep: Vec<String>,
    pub wave_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Stops the run unless accepted (`--accept-blockers`).
    Blocker,
    Warning,
    Info,
}

/// What moving one workload (or a group, or the controller) means.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Problem {
    /// No PodDisruptionBudget selects its pods: a wave may evict all of them at once.
    NoPdb,
    /// One replica: it is down while its pod restarts elsewhere.
    SingleReplica,
    /// A budget that can never allow an eviction: the drain waits for the deadline.
    PdbAllowsNoEviction { pdb: String },
    /// `safe-to-evict: "false"`: treated as do-not-disrupt, so it holds its node until the
    /// drain deadline (`--drain-timeout`), then it is deleted.
    SafeToEvictFalse,
    /// A hostPath volume: what it wrote on the node is lost.
    HostPath { volume: String },
    /// A nodeSelector or required node affinity no proposed NodePool satisfies.
    Pinned { label: String, value: String },
    /// A critical add-on (CoreDNS and the like) and where it will run.
    CriticalAddon { stays_on: String },
    /// Where the controller runs during and after the migration.
    ControllerPlacement { group: String, floor: i32 },
    /// The node group is managed by infrastructure as code, which will fight the new sizes.
    ManagedByIac { tool: String },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `namespace/name` of a workload, `node-group/NAME`, or `controller`.
    pub subject: String,
    #[serde(flatten)]
    pub problem: Problem,
    pub fix: String,
}

/// What happens to one node group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupPlan {
    pub name: String,
    pub current: Scaling,
    /// Nodes the group keeps: the controller's floor for the kept group, 0 otherwise.
    pub floor: i32,
    /// The NodePool its pods move to (same labels, taints and instance types).
    pub node_pool: String,
    /// The waves as of now, by node name (recomputed before each wave).
    pub waves: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    pub findings: Vec<Finding>,
    pub node_pools: Vec<NodePoolSettings>,
    pub groups: Vec<GroupPlan>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MigrateError {
    #[error(
        "the cluster has no managed node groups: there is nothing to migrate (karpctl migrate-from-cas moves managed node groups onto NodePools)"
    )]
    NoNodeGroups,
    #[error("--keep {0}: no managed node group of that name (groups: {1})")]
    UnknownGroup(String, String),
    #[error("node group {group}: instance type {instance_type} is not in karpctl's catalogue")]
    UnknownInstanceType {
        group: String,
        instance_type: String,
    },
    #[error("--wave-size must be at least 1")]
    ZeroWaveSize,
}

impl Migration {
    pub fn blockers(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
    }
}

/// The migration as of the inputs.
pub fn plan(inputs: &Inputs) -> Result<Migration, MigrateError> {
    if inputs.node_groups.is_empty() {
        return Err(MigrateError::NoNodeGroups);
    }
    if inputs.wave_size == 0 {
        return Err(MigrateError::ZeroWaveSize);
    }
    let names: Vec<&str> = inputs.node_groups.iter().map(|g| g.name.as_str()).collect();
    if let Some(unknown) = inputs.keep.iter().find(|k| !names.contains(&k.as_str())) {
        return Err(MigrateError::UnknownGroup(
            unknown.clone(),
            names.join(", "),
        ));
    }
    let group_of_node: BTreeMap<String, String> = inputs
        .nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let group = n.metadata.labels.as_ref()?.get(NODEGROUP_LABEL)?.clone();
            Some((name, group))
        })
        .collect();
    let kept = kept_groups(inputs, &group_of_node);
    let floor = inputs.controller_replicas.max(1);

    let node_pools = inputs
        .node_groups
        .iter()
        .map(|g| node_pool_for(g, &inputs.instance_sizes))
        .collect::<Result<Vec<_>, _>>()?;

    let mut findings = Vec::new();
    findings.extend(workload_findings(
        inputs,
        &group_of_node,
        &kept,
        &node_pools,
    ));
    for g in &inputs.node_groups {
        if let Some(tool) = iac_owner(&g.tags) {
            findings.push(Finding {
                severity: Severity::Warning,
                subject: format!("node-group/{}", g.name),
                fix: format!(
                    "{tool} manages this group and will set its sizes back on its next apply: after the migration set its min/desired to {} in {tool}'s configuration (or remove the group there)",
                    if kept.contains(&g.name) { floor } else { 0 }
                ),
                problem: Problem::ManagedByIac { tool },
            });
        }
    }
    for k in &kept {
        findings.push(Finding {
            severity: Severity::Info,
            subject: "controller".into(),
            problem: Problem::ControllerPlacement {
                group: k.clone(),
                floor,
            },
            fix: format!(
                "the controller's {} replica(s) run outside NodePools; node group {k} keeps {floor} node(s) for them (--keep chooses another group)",
                inputs.controller_replicas
            ),
        });
    }
    findings.sort();

    let groups = inputs
        .node_groups
        .iter()
        .map(|g| {
            let group_floor = if kept.contains(&g.name) { floor } else { 0 };
            let nodes: Vec<&Node> = inputs
                .nodes
                .iter()
                .filter(|n| group_of_node.get(&name_of(n)) == Some(&g.name))
                .collect();
            let mut waves = Vec::new();
            let mut left: Vec<&Node> = nodes.clone();
            while let Some(wave) = next_wave(&left, group_floor, inputs.wave_size, &inputs.pods) {
                left.retain(|n| !wave.contains(&name_of(n)));
                waves.push(wave);
            }
            GroupPlan {
                name: g.name.clone(),
                current: g.scaling,
                floor: group_floor,
                node_pool: g.name.clone(),
                waves,
            }
        })
        .collect();
    Ok(Migration {
        findings,
        node_pools,
        groups,
    })
}

fn name_of(n: &Node) -> String {
    n.metadata.name.clone().unwrap_or_default()
}

/// Every node the group will lose (all but its `floor`), in wave order: cordoned up front,
/// so pods evicted in one wave do not land on a node of the next one and move twice.
pub fn to_drain(nodes: &[&Node], floor: i32, pods: &[Pod]) -> Vec<String> {
    next_wave(nodes, floor, usize::MAX, pods).unwrap_or_default()
}

/// The next wave of a group: up to `wave_size` of its nodes beyond the `floor`. Nodes already
/// cordoned come first (an interrupted wave is finished before a new one starts), then those
/// running no critical pod (the kept nodes are the ones the add-ons already run on), then by
/// name. `None` when the group is down to its floor.
pub fn next_wave(
    nodes: &[&Node],
    floor: i32,
    wave_size: usize,
    pods: &[Pod],
) -> Option<Vec<String>> {
    let excess = nodes
        .len()
        .saturating_sub(usize::try_from(floor).unwrap_or(0));
    if excess == 0 {
        return None;
    }
    let critical_on = |name: &str| {
        pods.iter().any(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.node_name.as_deref() == Some(name)
                    && matches!(
                        s.priority_class_name.as_deref(),
                        Some("system-cluster-critical" | "system-node-critical")
                    )
                    && !owned_by(p, "DaemonSet")
            })
        })
    };
    let mut order: Vec<(bool, bool, String)> = nodes
        .iter()
        .map(|n| {
            let name = name_of(n);
            let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
            (!cordoned, critical_on(&name), name)
        })
        .collect();
    order.sort();
    Some(
        order
            .into_iter()
            .take(excess.min(wave_size))
            .map(|(_, _, n)| n)
            .collect(),
    )
}

fn owned_by(p: &Pod, kind: &str) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == kind)
}

/// The groups that keep a floor for the controller: `--keep`, else the group running the
/// most critical (non-DaemonSet) pods, ties by name.
fn kept_groups(inputs: &Inputs, group_of_node: &BTreeMap<String, String>) -> BTreeSet<String> {
    if !inputs.keep.is_empty() {
        return inputs.keep.iter().cloned().collect();
    }
    let mut critical: BTreeMap<&str, usize> = inputs
        .node_groups
        .iter()
        .map(|g| (g.name.as_str(), 0))
        .collect();
    for p in &inputs.pods {
        let Some(spec) = &p.spec else { continue };
        let is_critical = matches!(
            spec.priority_class_name.as_deref(),
            Some("system-cluster-critical" | "system-node-critical")
        );
        if !is_critical || owned_by(p, "DaemonSet") {
            continue;
        }
        if let Some(g) = spec.node_name.as_ref().and_then(|n| group_of_node.get(n))
            && let Some(c) = critical.get_mut(g.as_str())
        {
            *c += 1;
        }
    }
    critical
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(g, _)| BTreeSet::from([g.to_string()]))
        .unwrap_or_default()
}

/// The NodePool that accepts what the group accepts: its instance types, capacity type,
/// architecture, custom labels and taints; limits from its max size.
pub fn node_pool_for(
    g: &NodeGroup,
    sizes: &BTreeMap<String, (u32, u64)>,
) -> Result<NodePoolSettings, MigrateError> {
    let mut cpu: u64 = 0;
    let mut memory_mib: u64 = 0;
    for t in &g.instance_types {
        let (vcpus, mib) =
            sizes
                .get(t)
                .copied()
                .ok_or_else(|| MigrateError::UnknownInstanceType {
                    group: g.name.clone(),
                    instance_type: t.clone(),
                })?;
        cpu = cpu.max(u64::from(vcpus));
        memory_mib = memory_mib.max(mib);
    }
    let max = u64::try_from(g.scaling.max_size.max(0)).unwrap_or(0);
    let ami = g.ami_type.to_ascii_uppercase();
    let architecture = if ami.contains("ARM") {
        "arm64"
    } else {
        "amd64"
    };
    let ami_alias = if ami.starts_with("BOTTLEROCKET") {
        "bottlerocket@latest"
    } else if ami.starts_with("AL2_") {
        "al2@latest"
    } else {
        "al2023@latest"
    };
    Ok(NodePoolSettings {
        name: g.name.clone(),
        capacity_types: vec![if g.capacity_type == "SPOT" {
            "spot".into()
        } else {
            "on-demand".into()
        }],
        instance_categories: vec![],
        min_generation_above: 0,
        architectures: vec![architecture.into()],
        instance_types: g.instance_types.clone(),
        labels: g.labels.clone(),
        taints: g.taints.clone(),
        limits: BTreeMap::from([
            ("cpu".into(), (cpu * max).to_string()),
            ("memory".into(), format!("{}Mi", memory_mib * max)),
        ]),
        node_class: NodeClassSettings {
            name: None,
            ami_alias: ami_alias.into(),
            volume_size: format!("{}Gi", g.disk_size_gib.unwrap_or(20)),
            ..NodeClassSettings::default()
        },
        ..NodePoolSettings::default()
    })
}

/// eksctl, Terraform, CloudFormation, Pulumi: the tags they leave on a node group.
fn iac_owner(tags: &BTreeMap<String, String>) -> Option<String> {
    let keys = || tags.keys().map(|k| k.to_ascii_lowercase());
    if keys().any(|k| k.starts_with("alpha.eksctl.io/") || k.starts_with("eksctl.")) {
        return Some("eksctl".into());
    }
    if keys().any(|k| k.starts_with("aws:cloudformation:")) {
        return Some("CloudFormation".into());
    }
    if tags.iter().any(|(k, v)| {
        let (k, v) = (k.to_ascii_lowercase(), v.to_ascii_lowercase());
        k.contains("terraform")
            || (k == "managedby" || k == "managed-by") && v.contains("terraform")
    }) {
        return Some("Terraform".into());
    }
    if keys().any(|k| k.starts_with("pulumi")) {
        return Some("Pulumi".into());
    }
    None
}

/// The workload a pod belongs to: its Deployment (ReplicaSet name minus the template hash),
/// StatefulSet or other owner; a bare pod is its own workload.
fn workload_of(p: &Pod) -> String {
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let owner = p
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let name = match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            let hash = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            match hash {
                Some(h) => o
                    .name
                    .strip_suffix(&format!("-{h}"))
                    .unwrap_or(&o.name)
                    .to_string(),
                None => o.name.clone(),
            }
        }
        Some(o) => o.name.clone(),
        None => p.metadata.name.clone().unwrap_or_default(),
    };
    format!("{ns}/{name}")
}

fn pdb_selects(pdb: &PodDisruptionBudget, p: &Pod) -> bool {
    if pdb.metadata.namespace != p.metadata.namespace {
        return false;
    }
    let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = p.metadata.labels.clone().unwrap_or_default();
    let match_labels = selector.match_labels.clone().unwrap_or_default();
    let labels_ok = match_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    // An empty selector selects every pod in the namespace (policy/v1).
    labels_ok && exprs_ok
}

/// A budget that can never allow an eviction: maxUnavailable 0 (or 0%), or minAvailable at
/// least the workload's replicas (or 100%).
fn never_allows(pdb: &PodDisruptionBudget, replicas: usize) -> bool {
    let Some(spec) = &pdb.spec else { return false };
    let zero = |v: &IntOrString| match v {
        IntOrString::Int(i) => *i <= 0,
        IntOrString::String(s) => s.trim_end_matches('%').trim() == "0",
    };
    if let Some(max) = &spec.max_unavailable {
        return zero(max);
    }
    match &spec.min_available {
        Some(IntOrString::Int(i)) => usize::try_from(*i).unwrap_or(0) >= replicas,
        Some(IntOrString::String(s)) => s.trim_end_matches('%').trim() == "100",
        None => false,
    }
}

fn workload_findings(
    inputs: &Inputs,
    group_of_node: &BTreeMap<String, String>,
    kept: &BTreeSet<String>,
    pools: &[NodePoolSettings],
) -> Vec<Finding> {
    // Pods by workload; a workload moves when any of its pods is on a group node.
    let mut workloads: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &inputs.pods {
        if owned_by(p, "DaemonSet") || owned_by(p, "Node") {
            continue;
        }
        if matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        workloads.entry(workload_of(p)).or_default().push(p);
    }
    let mut out = Vec::new();
    for (workload, pods) in workloads {
        let groups: BTreeSet<&String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.as_ref())
            .filter_map(|n| group_of_node.get(n))
            .collect();
        if groups.is_empty() {
            continue;
        }
        let first = pods[0];
        let in_controller_ns = first.metadata.namespace.as_deref()
            == Some(inputs.controller_namespace.as_str())
            && first
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/name"))
                .is_some_and(|n| n == "karpenter");
        if in_controller_ns {
            continue;
        }
        let critical = matches!(
            first
                .spec
                .as_ref()
                .and_then(|s| s.priority_class_name.as_deref()),
            Some("system-cluster-critical" | "system-node-critical")
        );
        let moving = groups.iter().any(|g| !kept.contains(*g));
        if critical {
            let stays_on = groups
                .iter()
                .find(|g| kept.contains(**g))
                .map(|g| format!("node group {g}"))
                .unwrap_or_else(|| "NodePool nodes".into());
            out.push(Finding {
                severity: Severity::Info,
                subject: workload.clone(),
                fix: if moving {
                    format!("critical add-on: moves within its budget; its kept replicas stay on {stays_on}")
                } else {
                    format!("critical add-on: stays on {stays_on}")
                },
                problem: Problem::CriticalAddon { stays_on },
            });
        }
        if !moving {
            continue;
        }
        let replicas = pods.len();
        let pdbs: Vec<&PodDisruptionBudget> = inputs
            .pdbs
            .iter()
            .filter(|b| pdb_selects(b, first))
            .collect();
        if pdbs.is_empty() {
            out.push(Finding {
                severity: Severity::Warning,
                subject: workload.clone(),
                problem: Problem::NoPdb,
                fix: "add a PodDisruptionBudget (e.g. maxUnavailable: 1): without one, a wave may evict every replica at once".into(),
            });
        }
        for b in &pdbs {
            if never_allows(b, replicas) {
                let name = format!(
                    "{}/{}",
                    b.metadata.namespace.as_deref().unwrap_or_default(),
                    b.metadata.name.as_deref().unwrap_or_default()
                );
                out.push(Finding {
                    severity: Severity::Blocker,
                    subject: workload.clone(),
                    fix: format!("PodDisruptionBudget {name} never allows an eviction: lower minAvailable / raise maxUnavailable, or scale the workload up, for the migration"),
                    problem: Problem::PdbAllowsNoEviction { pdb: name },
                });
            }
        }
        if replicas == 1 {
            out.push(Finding {
                severity: Severity::Warning,
                subject: workload.clone(),
                problem: Problem::SingleReplica,
                fix: "one replica: it is unavailable while its pod restarts on a new node; run 2 replicas with a PodDisruptionBudget to avoid that".into(),
            });
        }
        if pods.iter().any(|p| cas_safe_to_evict_false(p)) {
            out.push(Finding {
                severity: Severity::Warning,
                subject: workload.clone(),
                problem: Problem::SafeToEvictFalse,
                fix: "cluster-autoscaler.kubernetes.io/safe-to-evict: \"false\" is honoured as karpenter.sh/do-not-disrupt: its pods hold their node until --hold-timeout, then are evicted within their PodDisruptionBudget; annotate it karpenter.sh/do-not-disrupt: \"true\" to keep that promise afterwards".into(),
            });
        }
        let spec = first.spec.clone().unwrap_or_default();
        for v in spec.volumes.iter().flatten() {
            if v.host_path.is_some() {
                out.push(Finding {
                    severity: Severity::Warning,
                    subject: workload.clone(),
                    fix: format!("volume {} is a hostPath: what it keeps on the node is lost when the pod moves; use a PersistentVolume", v.name),
                    problem: Problem::HostPath { volume: v.name.clone() },
                });
            }
        }
        for (label, value) in pinned_labels(&spec) {
            if !satisfiable(&label, &value, pools) {
                let fix = if label == NODEGROUP_LABEL {
                    format!(
                        "it asks for node group {value} by {NODEGROUP_LABEL}, which no NodePool node carries: select the group's own label instead (the proposed NodePool {value} sets its custom labels), or add it to the NodePool in karpctl.yaml"
                    )
                } else {
                    format!(
                        "no proposed NodePool sets {label}={value}: add the label to a node group (and so its NodePool) or to a NodePool in karpctl.yaml"
                    )
                };
                out.push(Finding {
                    severity: Severity::Blocker,
                    subject: workload.clone(),
                    problem: Problem::Pinned { label, value },
                    fix,
                });
            }
        }
    }
    out
}

/// Labels a pod requires by nodeSelector or required node affinity (`In` with one value).
fn pinned_labels(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = spec
        .node_selector
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.clone())
        .unwrap_or_default();
    // Only a single term binds (several are ORed: any may be met by a well-known label).
    if let [term] = terms.as_slice() {
        for e in term.match_expressions.iter().flatten() {
            if e.operator == "In"
                && let Some([v]) = e.values.as_deref()
            {
                out.push((e.key.clone(), v.clone()));
            }
        }
    }
    out
}

fn satisfiable(label: &str, value: &str, pools: &[NodePoolSettings]) -> bool {
    if WELL_KNOWN.contains(&label) || label.starts_with("karpenter.k8s.aws/") {
        return true;
    }
    pools
        .iter()
        .any(|p| p.labels.get(label).map(String::as_str) == Some(value))
}

/// EKS spells taint effects `NO_SCHEDULE`; Kubernetes `NoSchedule`.
pub fn taint_effect(eks: &str) -> Option<TaintEffect> {
    match eks {
        "NO_SCHEDULE" => Some(TaintEffect::NoSchedule),
        "PREFER_NO_SCHEDULE" => Some(TaintEffect::PreferNoSchedule),
        "NO_EXECUTE" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// The text preflight: findings by severity with their fix, then the groups and pools.
pub fn render(m: &Migration) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("Preflight:\n");
    if m.findings.is_empty() {
        out.push_str("  nothing to report\n");
    }
    for f in &m.findings {
        let tag = match f.severity {
            Severity::Blocker => "BLOCKER",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(
            out,
            "  {tag:<7} {:<24} {}: {}",
            f.subject,
            problem_name(&f.problem),
            f.fix
        );
    }
    out.push_str("\nNode groups:\n");
    for g in &m.groups {
        let _ = writeln!(
            out,
            "  {:<12} min {} / desired {} / max {} -> {} (NodePool {}); {} wave(s): {}",
            g.name,
            g.current.min_size,
            g.current.desired_size,
            g.current.max_size,
            g.floor,
            g.node_pool,
            g.waves.len(),
            g.waves
                .iter()
                .map(|w| format!("[{}]", w.join(", ")))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    out.push_str("\nNodePools (with an EC2NodeClass each):\n");
    for p in &m.node_pools {
        let _ = writeln!(
            out,
            "  {:<12} types {}, {}, {}, labels {:?}, {} taint(s), limits cpu {} memory {}",
            p.name,
            p.instance_types.join(","),
            p.capacity_types.join(","),
            p.architectures.join(","),
            p.labels,
            p.taints.len(),
            p.limits.get("cpu").map(String::as_str).unwrap_or("-"),
            p.limits.get("memory").map(String::as_str).unwrap_or("-"),
        );
    }
    out
}

pub fn problem_name(p: &Problem) -> &'static str {
    match p {
        Problem::NoPdb => "no-pdb",
        Problem::SingleReplica => "single-replica",
        Problem::PdbAllowsNoEviction { .. } => "pdb-allows-no-eviction",
        Problem::SafeToEvictFalse => "safe-to-evict-false",
        Problem::HostPath { .. } => "host-path",
        Problem::Pinned { .. } => "pinned",
        Problem::CriticalAddon { .. } => "critical-addon",
        Problem::ControllerPlacement { .. } => "controller-placement",
        Problem::ManagedByIac { .. } => "managed-by-iac",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(name: &str, desired: i32, labels: &[(&str, &str)]) -> NodeGroup {
        NodeGroup {
            name: name.into(),
            instance_types: vec!["m5.large".into()],
            capacity_type: "ON_DEMAND".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: vec![],
            ami_type: "AL2023_x86_64_STANDARD".into(),
            disk_size_gib: None,
            scaling: Scaling {
                min_size: desired,
                max_size: desired + 2,
                desired_size: desired,
            },
            auto_scaling_groups: vec![format!("eks-{name}")],
            tags: BTreeMap::new(),
        }
    }

    fn node(name: &str, group: &str, cordoned: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {NODEGROUP_LABEL: group}},
            "spec": {"unschedulable": cordoned}
        }))
        .unwrap()
    }

    /// A pod of Deployment `app` (through its ReplicaSet) on `node`.
    struct PodBuilder(serde_json::Value);

    fn pod(ns: &str, app: &str, i: usize, node: &str) -> PodBuilder {
        PodBuilder(json!({
            "metadata": {
                "name": format!("{app}-abc12-{i}"), "namespace": ns,
                "labels": {"app": app, "pod-template-hash": "abc12"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-abc12"), "uid": "u", "controller": true}]
            },
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running"}
        }))
    }

    impl PodBuilder {
        fn annotate(mut self, k: &str, v: &str) -> Self {
            self.0["metadata"]["annotations"] = json!({k: v});
            self
        }
        fn critical(mut self) -> Self {
            self.0["spec"]["priorityClassName"] = json!("system-cluster-critical");
            self
        }
        fn select(mut self, k: &str, v: &str) -> Self {
            self.0["spec"]["nodeSelector"] = json!({k: v});
            self
        }
        fn host_path(mut self) -> Self {
            self.0["spec"]["volumes"] = json!([{"name": "logs", "hostPath": {"path": "/var/log"}}]);
            self
        }
        fn build(self) -> Pod {
            serde_json::from_value(self.0).unwrap()
        }
    }

    fn pdb(ns: &str, app: &str, spec: serde_json::Value) -> PodDisruptionBudget {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": app}});
        serde_json::from_value(json!({"metadata": {"name": app, "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn inputs() -> Inputs {
        Inputs {
            node_groups: vec![
                group("system", 2, &[]),
                group("workers", 4, &[("role", "workers")]),
            ],
            nodes: vec![
                node("sys-1", "system", false),
                node("sys-2", "system", false),
                node("w-1", "workers", false),
                node("w-2", "workers", false),
                node("w-3", "workers", false),
                node("w-4", "workers", false),
            ],
            pods: vec![
                pod("kube-system", "coredns", 0, "sys-1").critical().build(),
                pod("kube-system", "coredns", 1, "sys-2").critical().build(),
            ],
            pdbs: vec![],
            instance_sizes: BTreeMap::from([("m5.large".into(), (2, 8192))]),
            controller_namespace: "kube-system".into(),
            controller_replicas: 2,
            keep: vec![],
            wave_size: 2,
        }
    }

    fn problems(m: &Migration, subject: &str) -> Vec<&'static str> {
        m.findings
            .iter()
            .filter(|f| f.subject == subject && f.severity != Severity::Info)
            .map(|f| problem_name(&f.problem))
            .collect()
    }

    #[test]
    fn each_planted_problem_is_reported_once_with_its_fix_and_nothing_else() {
        let mut i = inputs();
        for n in 0..4 {
            i.pods.push(
                pod("shop", "web", n, &format!("w-{}", n + 1))
                    .select("role", "workers")
                    .build(),
            );
        }
        i.pdbs
            .push(pdb("shop", "web", json!({"maxUnavailable": 1})));
        i.pods.push(pod("shop", "api", 0, "w-1").build());
        i.pods.push(pod("shop", "api", 1, "w-2").build());
        i.pods.push(pod("shop", "leader", 0, "w-3").build());
        for n in 0..2 {
            i.pods.push(
                pod("shop", "report", n, "w-4")
                    .annotate("cluster-autoscaler.kubernetes.io/safe-to-evict", "false")
                    .build(),
            );
        }
        i.pdbs
            .push(pdb("shop", "report", json!({"maxUnavailable": 1})));
        let m = plan(&i).unwrap();
        assert!(problems(&m, "shop/web").is_empty(), "{:?}", m.findings);
        assert_eq!(problems(&m, "shop/api"), ["no-pdb"]);
        assert_eq!(problems(&m, "shop/leader"), ["no-pdb", "single-replica"]);
        assert_eq!(problems(&m, "shop/report"), ["safe-to-evict-false"]);
        assert_eq!(m.blockers().count(), 0);
        assert!(m.findings.iter().all(|f| !f.fix.is_empty()));
    }

    #[test]
    fn budgets_that_never_allow_an_eviction_are_blockers() {
        for (spec, replicas, blocked) in [
            (json!({"maxUnavailable": 0}), 3, true),
            (json!({"maxUnavailable": "0%"}), 3, true),
            (json!({"minAvailable": 3}), 3, true),
            (json!({"minAvailable": "100%"}), 3, true),
            (json!({"minAvailable": 2}), 3, false),
            (json!({"maxUnavailable": 1}), 3, false),
        ] {
            let mut i = inputs();
            for n in 0..replicas {
                i.pods.push(pod("shop", "db", n, "w-1").build());
            }
            i.pdbs.push(pdb("shop", "db", spec.clone()));
            let m = plan(&i).unwrap();
            assert_eq!(
                problems(&m, "shop/db").contains(&"pdb-allows-no-eviction"),
                blocked,
                "{spec}"
            );
            assert_eq!(m.blockers().count() == 1, blocked, "{spec}");
        }
    }

    #[test]
    fn a_pod_pinned_to_a_label_no_node_pool_offers_is_a_blocker_naming_the_label() {
        let mut i = inputs();
        i.pods.push(
            pod("shop", "gpu", 0, "w-1")
                .select("accelerator", "a100")
                .build(),
        );
        i.pods.push(
            pod("shop", "byname", 0, "w-2")
                .select(NODEGROUP_LABEL, "workers")
                .build(),
        );
        i.pods.push(
            pod("shop", "ok", 0, "w-3")
                .select("role", "workers")
                .build(),
        );
        i.pods.push(
            pod("shop", "zonal", 0, "w-3")
                .select("topology.kubernetes.io/zone", "us-west-2a")
                .build(),
        );
        let m = plan(&i).unwrap();
        let pinned: Vec<(&str, &Problem)> = m
            .blockers()
            .map(|f| (f.subject.as_str(), &f.problem))
            .collect();
        assert_eq!(
            pinned,
            vec![
                (
                    "shop/byname",
                    &Problem::Pinned {
                        label: NODEGROUP_LABEL.into(),
                        value: "workers".into()
                    }
                ),
                (
                    "shop/gpu",
                    &Problem::Pinned {
                        label: "accelerator".into(),
                        value: "a100".into()
                    }
                ),
            ]
        );
        let byname = m.blockers().next().unwrap();
        assert!(
            byname.fix.contains("select the group's own label"),
            "{}",
            byname.fix
        );
    }

    #[test]
    fn host_paths_and_critical_addons_are_reported() {
        let mut i = inputs();
        i.pods
            .push(pod("shop", "logger", 0, "w-1").host_path().build());
        i.pods
            .push(pod("shop", "logger", 1, "w-2").host_path().build());
        let m = plan(&i).unwrap();
        assert!(problems(&m, "shop/logger").contains(&"host-path"));
        let dns: Vec<_> = m
            .findings
            .iter()
            .filter(|f| f.subject == "kube-system/coredns")
            .collect();
        assert_eq!(dns.len(), 1);
        assert_eq!(
            dns[0].problem,
            Problem::CriticalAddon {
                stays_on: "node group system".into()
            }
        );
    }

    #[test]
    fn the_group_running_the_critical_add_ons_keeps_the_controllers_floor() {
        let m = plan(&inputs()).unwrap();
        let system = m.groups.iter().find(|g| g.name == "system").unwrap();
        let workers = m.groups.iter().find(|g| g.name == "workers").unwrap();
        assert_eq!(system.floor, 2);
        assert!(
            system.waves.is_empty(),
            "2 nodes, floor 2: nothing to drain"
        );
        assert_eq!(workers.floor, 0);
        assert_eq!(workers.waves, vec![vec!["w-1", "w-2"], vec!["w-3", "w-4"]]);
        let placement: Vec<_> = m
            .findings
            .iter()
            .filter(|f| matches!(f.problem, Problem::ControllerPlacement { .. }))
            .collect();
        assert_eq!(placement.len(), 1);
        assert_eq!(
            placement[0].problem,
            Problem::ControllerPlacement {
                group: "system".into(),
                floor: 2
            }
        );
        let mut i = inputs();
        i.keep = vec!["nope".into()];
        assert_eq!(
            plan(&i).unwrap_err().to_string(),
            "--keep nope: no managed node group of that name (groups: system, workers)"
        );
    }

    #[test]
    fn a_resumed_run_finishes_the_cordoned_nodes_first() {
        let nodes = [
            node("w-1", "workers", false),
            node("w-2", "workers", false),
            node("w-3", "workers", true),
        ];
        let refs: Vec<&Node> = nodes.iter().collect();
        assert_eq!(
            next_wave(&refs, 0, 2, &[]),
            Some(vec!["w-3".into(), "w-1".into()])
        );
        assert_eq!(next_wave(&refs, 3, 2, &[]), None);
        assert_eq!(next_wave(&refs, 2, 2, &[]), Some(vec!["w-3".into()]));
        assert_eq!(to_drain(&refs, 1, &[]), ["w-3", "w-1"]);
        assert!(to_drain(&refs, 3, &[]).is_empty());
    }

    #[test]
    fn a_node_group_becomes_a_node_pool_accepting_the_same_pods() {
        let mut g = group("gpu", 3, &[("team", "ml")]);
        g.instance_types = vec!["m5.large".into(), "m5.xlarge".into()];
        g.capacity_type = "SPOT".into();
        g.ami_type = "AL2023_ARM_64_STANDARD".into();
        g.disk_size_gib = Some(80);
        g.scaling.max_size = 10;
        g.taints = vec![Taint {
            key: "dedicated".into(),
            value: Some("ml".into()),
            effect: TaintEffect::NoSchedule,
            time_added: None,
        }];
        let sizes = BTreeMap::from([
            ("m5.large".to_string(), (2, 8192)),
            ("m5.xlarge".to_string(), (4, 16384)),
        ]);
        let p = node_pool_for(&g, &sizes).unwrap();
        assert_eq!(p.name, "gpu");
        assert_eq!(p.instance_types, ["m5.large", "m5.xlarge"]);
        assert_eq!(p.capacity_types, ["spot"]);
        assert_eq!(p.architectures, ["arm64"]);
        assert!(p.instance_categories.is_empty() && p.min_generation_above == 0);
        assert_eq!(p.labels.get("team").map(String::as_str), Some("ml"));
        assert_eq!(p.taints, g.taints);
        assert_eq!(p.limits.get("cpu").map(String::as_str), Some("40"));
        assert_eq!(p.limits.get("memory").map(String::as_str), Some("163840Mi"));
        assert_eq!(p.node_class.volume_size, "80Gi");
        assert_eq!(p.node_class.ami_alias, "al2023@latest");
        g.instance_types.push("x9.huge".into());
        assert_eq!(
            node_pool_for(&g, &sizes).unwrap_err().to_string(),
            "node group gpu: instance type x9.huge is not in karpctl's catalogue"
        );
    }

    #[test]
    fn groups_managed_by_infrastructure_as_code_are_warned_about() {
        let mut i = inputs();
        i.node_groups[1]
            .tags
            .insert("alpha.eksctl.io/nodegroup-name".into(), "workers".into());
        i.node_groups[0]
            .tags
            .insert("ManagedBy".into(), "Terraform".into());
        let m = plan(&i).unwrap();
        let iac: Vec<_> = m
            .findings
            .iter()
            .filter_map(|f| match &f.problem {
                Problem::ManagedByIac { tool } => Some((f.subject.as_str(), tool.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            iac,
            vec![
                ("node-group/system", "Terraform"),
                ("node-group/workers", "eksctl")
            ]
        );
    }

    #[test]
    fn a_cluster_without_node_groups_has_nothing_to_migrate() {
        let i = Inputs {
            wave_size: 1,
            ..Inputs::default()
        };
        assert_eq!(plan(&i).unwrap_err(), MigrateError::NoNodeGroups);
    }
}

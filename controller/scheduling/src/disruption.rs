//! Consolidation as a pure search over the scheduling core: "if these nodes were gone, where
//! would their pods go, and what would that cost?" The controller's disruption methods and
//! `karpctl simulate` both ask it, so they decide the same thing for the same cluster.
//!
//! A simulation removes the candidates from the cluster, schedules their pods (and the
//! pending pods, which keep priority on free room) onto the other nodes, in-flight claims
//! and new claims, and judges the result as upstream Karpenter does:
//! - every candidate pod fits on other capacity: **delete** the candidates;
//! - they need exactly one new node that is strictly cheaper than the candidates together:
//!   **replace** them with it (its instance-type options cut to the cheaper ones);
//! - anything else (a pod that fits nowhere, several new nodes, nothing cheaper): not
//!   consolidatable, with the reason.
//!
//! Beyond upstream (the churn guard): a single node is never replaced by its own instance
//! type and capacity type, and a replacement must save at least `min_savings` of the price
//! (default 0: strictly cheaper, as upstream).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use karpctl_cloud::CapacityType;
use serde::Serialize;

use crate::nodepool::{ExistingNode, NodePool};
use crate::pod::Pod;
use crate::scheduler::{NodeClaimPlan, Results, Scheduler};

/// Upstream's spot-to-spot flexibility rule: a spot node is only replaced by a spot node
/// when at least this many cheaper instance types remain, so the new node is not the next
/// one interrupted.
pub const MIN_SPOT_TO_SPOT_OPTIONS: usize = 15;

/// Upstream's cap on how many candidates multi-node consolidation considers at once.
pub const MAX_MULTI_NODE_CANDIDATES: usize = 100;

/// A node disruption may remove.
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    /// The Node's name (as in the simulation's existing nodes).
    pub node: String,
    pub claim: String,
    pub node_pool: String,
    pub instance_type: String,
    pub capacity_type: Option<CapacityType>,
    pub zone: String,
    /// USD per hour.
    pub price: f64,
    /// The pods that would have to move, with their full constraints.
    pub pods: Vec<Arc<Pod>>,
    /// `namespace/name` of each of `pods`, for reasons.
    pub pod_keys: Vec<String>,
    /// Upstream's ordering: cheaper to disrupt first (fewer pods, closer to expiry).
    pub disruption_cost: f64,
}

/// Tuning beyond upstream, with upstream's behaviour as the default.
#[derive(Clone, Debug)]
pub struct Options {
    /// Upstream's `SpotToSpotConsolidation` feature gate (off by default).
    pub spot_to_spot: bool,
    /// A replacement must cost at most `(1 - min_savings)` of what it replaces (0..1).
    pub min_savings: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            spot_to_spot: false,
            min_savings: 0.0,
        }
    }
}

/// Why candidates cannot be consolidated.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Blocked {
    /// A pod of the candidates fits no other capacity.
    #[serde(rename_all = "camelCase")]
    PodUnschedulable { pod: String, reason: String },
    /// Their pods need more than one new node.
    #[serde(rename_all = "camelCase")]
    NeedsSeveralNodes { count: usize },
    /// No replacement is cheaper (after the churn guard).
    #[serde(rename_all = "camelCase")]
    NoCheaperOption { replacement_price: f64 },
    /// Spot would be replaced by spot and the SpotToSpotConsolidation gate is off.
    SpotToSpotDisabled,
    /// Spot to spot with fewer than [`MIN_SPOT_TO_SPOT_OPTIONS`] cheaper types.
    #[serde(rename_all = "camelCase")]
    TooFewSpotOptions { options: usize },
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocked::PodUnschedulable { pod, reason } => {
                write!(f, "pod {pod} fits no other capacity: {reason}")
            }
            Blocked::NeedsSeveralNodes { count } => {
                write!(f, "its pods would need {count} new nodes")
            }
            Blocked::NoCheaperOption { replacement_price } => write!(
                f,
                "no cheaper replacement (the best fit costs ${replacement_price:.4}/h)"
            ),
            Blocked::SpotToSpotDisabled => f.write_str(
                "a spot node would be replaced by spot and SpotToSpotConsolidation is disabled",
            ),
            Blocked::TooFewSpotOptions { options } => write!(
                f,
                "spot-to-spot needs {MIN_SPOT_TO_SPOT_OPTIONS} cheaper instance types, {options} found"
            ),
        }
    }
}

/// What a simulation decided for a set of candidates.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Every pod fits elsewhere.
    Delete,
    /// One new, cheaper node takes the pods that do not fit elsewhere.
    Replace(Box<NodeClaimPlan>),
    Blocked(Blocked),
}

impl Outcome {
    pub fn acts(&self) -> bool {
        !matches!(self, Outcome::Blocked(_))
    }

    /// USD per hour of the replacement (0 for a delete).
    pub fn replacement_price(&self) -> Option<f64> {
        match self {
            Outcome::Delete => Some(0.0),
            Outcome::Replace(plan) => Some(plan.price),
            Outcome::Blocked(Blocked::NoCheaperOption { replacement_price }) => {
                Some(*replacement_price)
            }
            Outcome::Blocked(_) => None,
        }
    }
}

/// Single-node consolidation's answer: the first candidate that can go (with how), and what
/// each candidate tried before it was told.
pub type SingleNode<'c> = (
    Option<(&'c Candidate, Outcome)>,
    Vec<(&'c Candidate, Outcome)>,
);

/// The cluster disruption simulates against.
pub struct Simulator {
    scheduler: Scheduler,
    pending: Vec<Pod>,
    options: Options,
}

impl Simulator {
    /// `nodes` are every node and in-flight claim, candidates included; `pending` the pods
    /// waiting for capacity.
    pub fn new(
        pools: Vec<NodePool>,
        nodes: Vec<ExistingNode>,
        daemon_sets: Vec<Pod>,
        pending: Vec<Pod>,
        options: Options,
    ) -> Self {
        Self {
            scheduler: Scheduler::new(pools, nodes, daemon_sets),
            pending,
            options,
        }
    }

    /// Remove `candidates` and see where their pods go.
    pub fn simulate(&self, candidates: &[&Candidate]) -> Outcome {
        match self.replacements(candidates) {
            Err(blocked) => Outcome::Blocked(blocked),
            Ok(mut new) => match new.len() {
                0 => Outcome::Delete,
                1 => self.judge_replacement(candidates, new.pop().expect("one")),
                n => Outcome::Blocked(Blocked::NeedsSeveralNodes { count: n }),
            },
        }
    }

    /// The new nodes the candidates' pods would need if the candidates were gone (none when
    /// every pod fits elsewhere), without judging their price: drift replaces what it must.
    pub fn replacements(&self, candidates: &[&Candidate]) -> Result<Vec<NodeClaimPlan>, Blocked> {
        let (pods, keys, first_moved, results) = self.placements(candidates);
        if pods.len() == first_moved {
            return Ok(Vec::new());
        }
        if let Some(u) = results.unschedulable.iter().find(|u| u.pod >= first_moved) {
            return Err(Blocked::PodUnschedulable {
                pod: keys[u.pod - first_moved].clone(),
                reason: u.reason.clone(),
            });
        }
        Ok(results
            .node_claims
            .into_iter()
            .filter(|c| c.pods.iter().any(|p| *p >= first_moved))
            .map(|mut c| {
                // Only the moved pods count as the replacement's pods (indexes into them).
                c.pods.retain(|p| *p >= first_moved);
                c.pods.iter_mut().for_each(|p| *p -= first_moved);
                c
            })
            .collect())
    }

    /// The whole simulation with `candidates` gone: the pods given to the scheduler (pending
    /// pods first, then the candidates' pods in order), their keys after the pending ones,
    /// how many pending pods come first, and the results — for callers that carry a
    /// decision out on a model of the cluster (the benchmark, the dry run).
    pub fn placements(&self, candidates: &[&Candidate]) -> (Vec<Pod>, Vec<String>, usize, Results) {
        let gone: BTreeSet<&str> = candidates.iter().map(|c| c.node.as_str()).collect();
        let mut pods: Vec<Pod> = self.pending.clone();
        let first_moved = pods.len();
        let mut keys = Vec::new();
        for c in candidates {
            for (p, key) in c.pods.iter().zip(&c.pod_keys) {
                let mut pod = Pod::clone(p);
                if pod.name.is_empty() {
                    pod.name = key.rsplit('/').next().unwrap_or(key).to_owned();
                }
                pods.push(pod);
                keys.push(key.clone());
            }
        }
        if pods.len() == first_moved {
            return (pods, keys, first_moved, Results::default());
        }
        let sched = self.scheduler.without_nodes(&gone);
        // First fit: a consolidation pass simulates many times, and a single replacement
        // node is what first fit plans best.
        let results = sched.solve_within(&pods, Duration::ZERO);
        (pods, keys, first_moved, results)
    }

    fn judge_replacement(&self, candidates: &[&Candidate], mut plan: NodeClaimPlan) -> Outcome {
        let current: f64 = candidates.iter().map(|c| c.price).sum();
        let ceiling = current * (1.0 - self.options.min_savings.clamp(0.0, 1.0));
        let cheapest = plan.price;
        let single = (candidates.len() == 1).then(|| candidates[0]);
        plan.instance_type_options.retain(|o| {
            o.price < ceiling
                && !single.is_some_and(|c| {
                    c.instance_type == o.name && c.capacity_type == Some(plan.capacity_type)
                })
        });
        if plan.instance_type_options.is_empty() {
            return Outcome::Blocked(Blocked::NoCheaperOption {
                replacement_price: cheapest,
            });
        }
        let all_spot = candidates
            .iter()
            .all(|c| c.capacity_type == Some(CapacityType::Spot));
        if all_spot && plan.capacity_type == CapacityType::Spot {
            if !self.options.spot_to_spot {
                return Outcome::Blocked(Blocked::SpotToSpotDisabled);
            }
            if plan.instance_type_options.len() < MIN_SPOT_TO_SPOT_OPTIONS {
                return Outcome::Blocked(Blocked::TooFewSpotOptions {
                    options: plan.instance_type_options.len(),
                });
            }
            if single.is_some() {
                plan.instance_type_options
                    .truncate(MIN_SPOT_TO_SPOT_OPTIONS);
            }
        }
        let first = &plan.instance_type_options[0];
        plan.instance_type = first.name.clone();
        plan.price = first.price;
        Outcome::Replace(Box::new(plan))
    }

    /// Upstream's multi-node consolidation: the longest prefix (at least two) of
    /// `candidates` (in disruption order, at most [`MAX_MULTI_NODE_CANDIDATES`]) that can be
    /// deleted or replaced by one cheaper node, found by binary search.
    pub fn multi_node<'c>(
        &self,
        candidates: &'c [Candidate],
    ) -> Option<(Vec<&'c Candidate>, Outcome)> {
        let pool: Vec<&Candidate> = candidates.iter().take(MAX_MULTI_NODE_CANDIDATES).collect();
        if pool.len() < 2 {
            return None;
        }
        let (mut lo, mut hi) = (2usize, pool.len());
        let mut best = None;
        while lo <= hi {
            let mid = (lo + hi) / 2;
            let outcome = self.simulate(&pool[..mid]);
            if outcome.acts() {
                best = Some((pool[..mid].to_vec(), outcome));
                lo = mid + 1;
            } else {
                hi = mid - 1;
            }
        }
        best
    }

    /// Upstream's single-node consolidation: the first candidate (in disruption order) that
    /// can be deleted or replaced, with what each candidate tried before it was told.
    pub fn single_node<'c>(&self, candidates: &'c [Candidate]) -> SingleNode<'c> {
        let mut tried = Vec::new();
        for c in candidates {
            let outcome = self.simulate(&[c]);
            if outcome.acts() {
                return (Some((c, outcome)), tried);
            }
            tried.push((c, outcome));
        }
        (None, tried)
    }
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs, clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::pod::pod;
    use karpctl_cloud::{InstanceType, Offering, Resources};
    use proptest::prelude::*;

    fn itype(name: &str, cpu: i64, mem_gib: i64, od: f64, spot: f64) -> InstanceType {
        let mut capacity = Resources::default();
        capacity.cpu = cpu * 1000;
        capacity.memory = mem_gib << 30;
        capacity.pods = 110;
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(
            "node.kubernetes.io/instance-type".to_owned(),
            name.to_owned(),
        );
        InstanceType {
            name: name.to_owned(),
            labels,
            capacity: capacity.clone(),
            allocatable: capacity,
            offerings: vec![
                Offering {
                    zone: "us-west-2a".into(),
                    capacity_type: CapacityType::OnDemand,
                    price: od,
                    available: true,
                },
                Offering {
                    zone: "us-west-2a".into(),
                    capacity_type: CapacityType::Spot,
                    price: spot,
                    available: true,
                },
            ],
            overhead: Default::default(),
        }
    }

    fn catalogue() -> Arc<Vec<InstanceType>> {
        Arc::new(vec![
            itype("small", 2, 4, 0.10, 0.03),
            itype("medium", 4, 8, 0.20, 0.06),
            itype("large", 8, 16, 0.40, 0.12),
        ])
    }

    fn od_pool() -> NodePool {
        let mut p = NodePool::new("default", catalogue());
        p.requirements
            .add(crate::requirements::Requirement::exactly(
                "karpenter.sh/capacity-type",
                "on-demand",
            ));
        p
    }

    fn node(name: &str, it: &InstanceType, pods: &[Pod]) -> ExistingNode {
        let mut labels = it.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), name.into());
        labels.insert("topology.kubernetes.io/zone".into(), "us-west-2a".into());
        labels.insert("karpenter.sh/capacity-type".into(), "on-demand".into());
        ExistingNode {
            name: name.into(),
            labels,
            allocatable: it.allocatable.clone(),
            pods: pods.iter().cloned().map(Arc::new).collect(),
            ..Default::default()
        }
    }

    fn candidate(name: &str, it: &InstanceType, pods: &[Pod]) -> Candidate {
        Candidate {
            node: name.into(),
            claim: name.into(),
            node_pool: "default".into(),
            instance_type: it.name.clone(),
            capacity_type: Some(CapacityType::OnDemand),
            zone: "us-west-2a".into(),
            price: it.offerings[0].price,
            pods: pods.iter().cloned().map(Arc::new).collect(),
            pod_keys: (0..pods.len())
                .map(|i| format!("default/{name}-{i}"))
                .collect(),
            disruption_cost: pods.len() as f64,
        }
    }

    #[test]
    fn pods_that_fit_elsewhere_make_a_delete() {
        let types = catalogue();
        let p = pod().cpu("1");
        let nodes = vec![
            node("a", &types[2], &[p.clone()]),
            node("b", &types[2], &[p.clone()]),
        ];
        let sim = Simulator::new(vec![od_pool()], nodes, vec![], vec![], Options::default());
        let c = candidate("a", &types[2], &[p]);
        assert!(matches!(sim.simulate(&[&c]), Outcome::Delete));
    }

    #[test]
    fn a_big_node_with_little_on_it_is_replaced_by_a_cheaper_one() {
        let types = catalogue();
        let p = pod().cpu("1");
        let nodes = vec![node("a", &types[2], &[p.clone()])];
        let sim = Simulator::new(vec![od_pool()], nodes, vec![], vec![], Options::default());
        let c = candidate("a", &types[2], &[p]);
        match sim.simulate(&[&c]) {
            Outcome::Replace(plan) => {
                assert_eq!(plan.instance_type, "small");
                assert!(plan.price < c.price);
                assert!(plan.instance_type_options.iter().all(|o| o.price < c.price));
            }
            other => panic!("expected a replacement, got {other:?}"),
        }
    }

    /// Bigger types are better value per pod here (as c5.2xlarge is against c5.large once
    /// a node's overhead is counted): the replacement is still the smallest type the pods
    /// fit, not the best-value one.
    #[test]
    fn a_replacement_is_the_cheapest_type_its_pods_fit_even_when_poor_value_per_pod() {
        let types = Arc::new(vec![
            itype("small", 2, 4, 0.10, 0.03),
            itype("medium", 4, 8, 0.17, 0.05),
            itype("large", 8, 16, 0.30, 0.09),
            itype("huge", 16, 32, 0.56, 0.17),
        ]);
        let mut pool = NodePool::new("default", types.clone());
        pool.requirements
            .add(crate::requirements::Requirement::exactly(
                "karpenter.sh/capacity-type",
                "on-demand",
            ));
        let p = pod().cpu("500m");
        let pods = [p.clone(), p];
        let nodes = vec![node("a", &types[3], &pods)];
        let sim = Simulator::new(vec![pool], nodes, vec![], vec![], Options::default());
        let c = candidate("a", &types[3], &pods);
        match sim.simulate(&[&c]) {
            Outcome::Replace(plan) => {
                assert_eq!(plan.instance_type, "small", "{plan:?}");
                let names: Vec<&str> = plan
                    .instance_type_options
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect();
                assert_eq!(names, ["small", "medium", "large"]);
            }
            other => panic!("expected a replacement, got {other:?}"),
        }
    }

    #[test]
    fn a_node_is_never_replaced_by_its_own_type() {
        let types = catalogue();
        let p = pod().cpu("1500m");
        let nodes = vec![node("a", &types[0], &[p.clone()])];
        let sim = Simulator::new(vec![od_pool()], nodes, vec![], vec![], Options::default());
        let c = candidate("a", &types[0], &[p]);
        assert!(matches!(
            sim.simulate(&[&c]),
            Outcome::Blocked(Blocked::NoCheaperOption { .. })
        ));
    }

    #[test]
    fn a_savings_threshold_refuses_replacements_for_pennies() {
        let types = Arc::new(vec![
            itype("big", 8, 16, 0.400, 0.1),
            itype("almost", 8, 16, 0.395, 0.1),
        ]);
        let mut pool = NodePool::new("default", types.clone());
        pool.requirements
            .add(crate::requirements::Requirement::exactly(
                "karpenter.sh/capacity-type",
                "on-demand",
            ));
        let p = pod().cpu("6");
        let nodes = vec![node("a", &types[0], &[p.clone()])];
        let c = candidate("a", &types[0], &[p]);
        let any = Simulator::new(
            vec![pool.clone()],
            nodes.clone(),
            vec![],
            vec![],
            Options::default(),
        );
        assert!(matches!(any.simulate(&[&c]), Outcome::Replace(_)));
        let guarded = Simulator::new(
            vec![pool],
            nodes,
            vec![],
            vec![],
            Options {
                min_savings: 0.05,
                ..Options::default()
            },
        );
        assert!(matches!(
            guarded.simulate(&[&c]),
            Outcome::Blocked(Blocked::NoCheaperOption { .. })
        ));
    }

    #[test]
    fn spot_is_not_replaced_by_spot_unless_the_gate_is_on_and_flexible() {
        let types = catalogue();
        let pool = NodePool::new("default", types.clone());
        let p = pod().cpu("1");
        let mut n = node("a", &types[2], &[p.clone()]);
        n.labels
            .insert("karpenter.sh/capacity-type".into(), "spot".into());
        let mut c = candidate("a", &types[2], &[p]);
        c.capacity_type = Some(CapacityType::Spot);
        c.price = 0.12;
        let off = Simulator::new(
            vec![pool.clone()],
            vec![n.clone()],
            vec![],
            vec![],
            Options::default(),
        );
        assert!(matches!(
            off.simulate(&[&c]),
            Outcome::Blocked(Blocked::SpotToSpotDisabled)
        ));
        let on = Simulator::new(
            vec![pool],
            vec![n],
            vec![],
            vec![],
            Options {
                spot_to_spot: true,
                ..Options::default()
            },
        );
        assert!(matches!(
            on.simulate(&[&c]),
            Outcome::Blocked(Blocked::TooFewSpotOptions { options: 2 })
        ));
    }

    #[test]
    fn a_pod_that_fits_nowhere_else_blocks_and_is_named() {
        let types = catalogue();
        let p = pod().cpu("1").node_selector("kubernetes.io/hostname", "a");
        let nodes = vec![node("a", &types[2], &[p.clone()])];
        let sim = Simulator::new(vec![od_pool()], nodes, vec![], vec![], Options::default());
        let c = candidate("a", &types[2], &[p]);
        match sim.simulate(&[&c]) {
            Outcome::Blocked(Blocked::PodUnschedulable { pod, .. }) => {
                assert_eq!(pod, "default/a-0")
            }
            other => panic!("expected a blocked pod, got {other:?}"),
        }
    }

    #[test]
    fn multi_node_merges_several_half_empty_nodes_into_one() {
        let types = catalogue();
        let p = pod().cpu("2");
        let nodes: Vec<ExistingNode> = (0..3)
            .map(|i| node(&format!("n{i}"), &types[1], &[p.clone()]))
            .collect();
        let cands: Vec<Candidate> = (0..3)
            .map(|i| candidate(&format!("n{i}"), &types[1], &[p.clone()]))
            .collect();
        let sim = Simulator::new(vec![od_pool()], nodes, vec![], vec![], Options::default());
        let (chosen, outcome) = sim.multi_node(&cands).expect("a command");
        let current: f64 = chosen.iter().map(|c| c.price).sum();
        assert!(chosen.len() >= 2);
        match outcome {
            Outcome::Delete => {}
            Outcome::Replace(plan) => assert!(plan.price < current),
            Outcome::Blocked(b) => panic!("{b}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A consolidation never raises cost, and every pod it moves is placed by a plan the
        /// independent checker accepts.
        #[test]
        fn consolidation_never_raises_cost(loads in proptest::collection::vec((1u32..8, 0usize..3), 1..6)) {
            let types = catalogue();
            let mut nodes = Vec::new();
            let mut cands = Vec::new();
            for (i, (cpu_half, t)) in loads.iter().enumerate() {
                let it = &types[*t];
                let want = (*cpu_half as i64 * 500).min(it.allocatable.cpu - 100);
                let p = pod().cpu(&format!("{want}m"));
                nodes.push(node(&format!("n{i}"), it, std::slice::from_ref(&p)));
                cands.push(candidate(&format!("n{i}"), it, &[p]));
            }
            let sim = Simulator::new(vec![od_pool()], nodes, vec![], vec![], Options::default());
            let (found, _) = sim.single_node(&cands);
            if let Some((c, outcome)) = found {
                match outcome {
                    Outcome::Replace(plan) => {
                        prop_assert!(plan.price < c.price);
                        prop_assert!(plan.requests.cpu <= plan.allocatable.cpu);
                    }
                    Outcome::Delete => {}
                    Outcome::Blocked(_) => prop_assert!(false),
                }
            }
            if let Some((chosen, Outcome::Replace(plan))) = sim.multi_node(&cands) {
                let current: f64 = chosen.iter().map(|c| c.price).sum();
                prop_assert!(plan.price < current);
            }
        }
    }
}

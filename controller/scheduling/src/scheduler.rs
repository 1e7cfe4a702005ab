//! `Scheduler::solve`: pending pods in, a plan out — which pods go on which existing nodes,
//! which NodeClaims to launch (each with its instance-type options, cheapest first), and why
//! every pod that cannot be placed cannot. Pure, and deterministic given which cost plans
//! finish within the time budget: same input, same plan whenever none does (`Duration::ZERO`
//! or a machine too busy) or all do (a generous budget); in between, timing decides.
//!
//! Every solve starts with the first-fit plan ([`crate::firstfit`]): milliseconds, and every
//! pod upstream Karpenter's first fit places is placed. Within a time budget
//! ([`SchedulerOptions::budget`]) it then plans the batch again for cost and keeps the best
//! plan found. That cost plan is made in passes. Each pass groups the pods into classes,
//! pins pods with zone-level (any non-hostname key) topology rules to domains, fills existing
//! capacity first, then packs new NodeClaims ([`crate::packing`]). Pods that fail are relaxed
//! one preference at a time and tried again in the next pass, as upstream Karpenter does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use karpctl_cloud::labels::{self, is_well_known};
use karpctl_cloud::{CapacityType, InstanceType, Offering, Resources};
use serde::Serialize;

use crate::classes::{self, Constraints, DomainRule, GroupKey, Groups, NodeRules, Relax};
use crate::nodepool::{ExistingNode, NodePool};
use crate::pod::Pod;
use crate::requirements::{Requirement, Requirements};
use crate::taints::first_untolerated;

/// Batches up to this many pods are planned several ways and the cheapest plan is kept
/// (see [`Scheduler::solve`]).
pub const MAX_VARIANT_PODS: usize = 10_000;

/// Knobs of the solver.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Instance types kept on each NodeClaim so a launch can fall back (upstream: 60).
    pub max_instance_type_options: usize,
    /// Relaxation passes before giving up on a pod.
    pub max_passes: usize,
    /// How long the cost planning may run after the first-fit plan (see [`Scheduler::solve`]).
    pub budget: Budget,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            max_instance_type_options: 60,
            max_passes: 10,
            budget: Budget::default(),
        }
    }
}

/// Time for improving a plan's cost: `base + per_pod × pods`. The first-fit plan is made
/// whatever the budget; a cost plan still running when it ends is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub base: Duration,
    pub per_pod: Duration,
}

impl Default for Budget {
    /// 25 ms + 100 µs a pod: 100 pods are planned in about 35 ms, 20,000 in about 2 s (a
    /// pending pod waits for the batch, so a small batch must be fast; a big one amortizes).
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            per_pod: Duration::from_micros(100),
        }
    }
}

impl Budget {
    /// The same time whatever the batch size (`Duration::ZERO`: the first-fit plan only).
    pub fn fixed(time: Duration) -> Self {
        Self {
            base: time,
            per_pod: Duration::ZERO,
        }
    }

    /// The time for a batch of `pods` pods.
    pub fn for_pods(&self, pods: usize) -> Duration {
        self.base + self.per_pod * pods.min(u32::MAX as usize) as u32
    }
}

/// A NodePool prepared for scheduling: its requirements as one set, and the instance types
/// it can launch with their DaemonSet overhead.
#[derive(Clone)]
pub(crate) struct PreparedPool {
    pub pool: NodePool,
    pub requirements: Requirements,
    pub types: Vec<PoolType>,
}

#[derive(Clone)]
pub(crate) struct PoolType {
    /// Index into `pool.instance_types`.
    pub index: usize,
    /// Requests of the DaemonSet pods that would run on such a node.
    pub overhead: Resources,
    /// `allocatable − overhead`.
    pub free: Resources,
}

impl PreparedPool {
    pub fn instance_type(&self, t: usize) -> &InstanceType {
        &self.pool.instance_types[self.types[t].index]
    }
}

/// The scheduling simulation over a fixed cluster: NodePools, existing nodes and DaemonSets.
pub struct Scheduler {
    pub(crate) pools: Vec<PreparedPool>,
    pub(crate) nodes: Vec<ExistingNode>,
    pub(crate) daemon_sets: Vec<Pod>,
    pub(crate) options: SchedulerOptions,
}

/// A planned NodeClaim.
#[derive(Clone, Debug, Serialize)]
pub struct NodeClaimPlan {
    pub node_pool: String,
    /// The cheapest option: what the plan's cost assumes.
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    /// USD per hour.
    pub price: f64,
    /// Every compatible instance type that fits, cheapest first.
    pub instance_type_options: Vec<InstanceTypeOption>,
    pub requirements: Requirements,
    /// Indexes into the pods given to `solve`.
    pub pods: Vec<usize>,
    /// Summed requests of `pods`.
    pub requests: Resources,
    /// Summed requests of the DaemonSet pods that will run on it.
    pub daemon_overhead: Resources,
    /// Allocatable of `instance_type`.
    pub allocatable: Resources,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceTypeOption {
    pub name: String,
    pub price: f64,
}

/// Pods placed on a node that already exists (or is already being launched).
#[derive(Clone, Debug, Serialize)]
pub struct ExistingPlacement {
    pub node: String,
    pub pods: Vec<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unschedulable {
    /// Index into the pods given to `solve`.
    pub pod: usize,
    pub reason: String,
}

/// The outcome of a simulation. Every pod given to `solve` is in exactly one of the three.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    pub node_claims: Vec<NodeClaimPlan>,
    pub existing: Vec<ExistingPlacement>,
    pub unschedulable: Vec<Unschedulable>,
}

impl Results {
    /// USD per hour of the new NodeClaims.
    pub fn total_price(&self) -> f64 {
        self.node_claims
            .iter()
            .fold(0.0, |total, c| total + c.price)
    }
}

impl Scheduler {
    pub fn new(node_pools: Vec<NodePool>, nodes: Vec<ExistingNode>, daemon_sets: Vec<Pod>) -> Self {
        Self::with_options(node_pools, nodes, daemon_sets, SchedulerOptions::default())
    }

    pub fn with_options(
        node_pools: Vec<NodePool>,
        nodes: Vec<ExistingNode>,
        daemon_sets: Vec<Pod>,
        options: SchedulerOptions,
    ) -> Self {
        let daemon_constraints: Vec<Constraints> = daemon_sets
            .iter()
            .map(|d| classes::constraints(d, &Relax::default()))
            .collect();
        let pools = node_pools
            .into_iter()
            .map(|pool| {
                let requirements = pool_requirements(&pool);
                let mut types = Vec::new();
                for (index, it) in pool.instance_types.iter().enumerate() {
                    if !type_admits(it, &requirements) {
                        continue;
                    }
                    let type_requirements =
                        requirements.intersection(&Requirements::from_labels(&it.labels));
                    let mut overhead = Resources::default();
                    for (d, c) in daemon_sets.iter().zip(&daemon_constraints) {
                        let tolerated =
                            first_untolerated(&pool.taints, &c.tolerations, true).is_none();
                        if tolerated
                            && type_requirements
                                .compatible(&c.requirements, is_well_known)
                                .is_ok()
                        {
                            overhead.add(&classes::node_request(d));
                        }
                    }
                    let free = it.allocatable.minus(&overhead);
                    types.push(PoolType {
                        index,
                        overhead,
                        free,
                    });
                }
                PreparedPool {
                    pool,
                    requirements,
                    types,
                }
            })
            .collect();
        Self {
            pools,
            nodes,
            daemon_sets,
            options,
        }
    }

    /// The same simulation without the nodes `excluded` names (disruption's "what if these
    /// nodes were gone"); the NodePools stay prepared, so this costs a copy, not a rebuild.
    pub fn without_nodes(&self, excluded: &std::collections::BTreeSet<&str>) -> Scheduler {
        Scheduler {
            pools: self.pools.clone(),
            nodes: self
                .nodes
                .iter()
                .filter(|n| !excluded.contains(n.name.as_str()))
                .cloned()
                .collect(),
            daemon_sets: self.daemon_sets.clone(),
            options: self.options.clone(),
        }
    }

    /// Plan placements for `pods`, within the options' [`Budget`].
    ///
    /// First the first-fit plan ([`crate::firstfit`]), then, until the budget runs out, the
    /// batch is planned for cost. A batch of up to [`MAX_VARIANT_PODS`] pods is planned
    /// three ways at once (one thread each): the plain greedy packing; the packing after
    /// opening the nodes the batch's configuration LP buys whole ([`crate::packing`], "LP
    /// rounding"); and LP rounding with nodes also filled in an order shaped to the room
    /// they have left. Each wins on some workloads and loses on others, so each plan is
    /// judged whole: the plan that places more pods, then costs less, then launches fewer
    /// nodes, is returned — never one that places fewer pods or costs more than first fit.
    /// Bigger batches are packed once, plainly.
    pub fn solve(&self, pods: &[Pod]) -> Results {
        self.solve_within(pods, self.options.budget.for_pods(pods.len()))
    }

    /// [`Self::solve`] with this much time for cost planning (`Duration::ZERO`: first fit
    /// only); for callers whose latency needs differ from the options' budget (a
    /// provisioning batch, a disruption simulation).
    pub fn solve_within(&self, pods: &[Pod], budget: Duration) -> Results {
        let start = Instant::now();
        let first = self.first_fit(pods, !budget.is_zero());
        if budget.is_zero() || pods.is_empty() {
            return first;
        }
        let deadline = Some(start + budget);
        let mut best = first;
        let variants: &[(bool, bool)] = if pods.len() > MAX_VARIANT_PODS {
            &[(false, false)]
        } else {
            &[(false, false), (false, true), (true, true)]
        };
        let plans: Vec<Option<Results>> = std::thread::scope(|scope| {
            let handles: Vec<_> = variants[1..]
                .iter()
                .map(|&(shaped, lp)| {
                    scope.spawn(move || self.solve_until(pods, shaped, lp, deadline))
                })
                .collect();
            let (shaped, lp) = variants[0];
            let mut plans = vec![self.solve_until(pods, shaped, lp, deadline)];
            plans.extend(
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a planning thread panicked")),
            );
            plans
        });
        for r in plans.into_iter().flatten() {
            if better(&r, &best) {
                best = r;
            }
        }
        best
    }

    /// One cost plan with no deadline (tests compare the variants).
    #[cfg(test)]
    pub(crate) fn solve_with(
        &self,
        pods: &[Pod],
        shaped_fills: bool,
        lp_rounding: bool,
    ) -> Results {
        self.solve_until(pods, shaped_fills, lp_rounding, None)
            .expect("no deadline")
    }

    /// One cost plan, or `None` if `deadline` passed before it was made.
    pub(crate) fn solve_until(
        &self,
        pods: &[Pod],
        shaped_fills: bool,
        lp_rounding: bool,
        deadline: Option<Instant>,
    ) -> Option<Results> {
        let mut solve = Solve::new(self, pods);
        solve.shaped_fills = shaped_fills;
        solve.lp_rounding = lp_rounding;
        solve.deadline = deadline;
        let mut pending: Vec<(usize, Relax, bool)> = (0..pods.len())
            .map(|i| (i, Relax::default(), false))
            .collect();
        let mut unschedulable: Vec<Unschedulable> = Vec::new();
        for pass in 0..self.options.max_passes {
            if pending.is_empty() {
                break;
            }
            let failures = solve.pass(&pending);
            if solve.past_deadline() {
                return None;
            }
            let relax_of: HashMap<usize, (Relax, bool)> = pending
                .iter()
                .map(|(p, r, retried)| (*p, (*r, *retried)))
                .collect();
            pending = Vec::new();
            for failure in failures {
                let (relax, retried) = relax_of[&failure.pod];
                let last = pass + 1 == self.options.max_passes;
                if failure.retry && !retried && !last {
                    pending.push((failure.pod, relax, true));
                } else if let Some(next) = relax.next(&pods[failure.pod]).filter(|_| !last) {
                    pending.push((failure.pod, next, retried));
                } else {
                    unschedulable.push(Unschedulable {
                        pod: failure.pod,
                        reason: failure.reason,
                    });
                }
            }
        }
        for (pod, reason) in solve.repair_spreads() {
            unschedulable.push(Unschedulable { pod, reason });
        }
        solve.merge_nodes();
        let mut results = solve.results();
        unschedulable.sort_by_key(|u| u.pod);
        results.unschedulable = unschedulable;
        Some(results)
    }
}

/// Whether plan `b` beats plan `a`: more pods placed, then cheaper, then fewer nodes.
fn better(b: &Results, a: &Results) -> bool {
    let key = |r: &Results| (r.unschedulable.len(), r.total_price(), r.node_claims.len());
    let (a, b) = (key(a), key(b));
    b.0 < a.0 || (b.0 == a.0 && (b.1 < a.1 - 1e-9 || ((b.1 - a.1).abs() <= 1e-9 && b.2 < a.2)))
}

/// The NodePool's requirements with its labels and name folded in, as one set.
pub(crate) fn pool_requirements(pool: &NodePool) -> Requirements {
    let mut r = pool.requirements.clone();
    for (k, v) in &pool.labels {
        r.add(Requirement::exactly(k, v));
    }
    r.add(Requirement::exactly(labels::NODEPOOL, &pool.name));
    r
}

/// Whether a node of this type could satisfy `requirements`: every label the type carries
/// is allowed, well-known labels it lacks are only required to be absent, and some
/// available offering is in an allowed zone with an allowed capacity type.
pub(crate) fn type_admits(it: &InstanceType, requirements: &Requirements) -> bool {
    type_mismatch(it, requirements).is_none()
}

/// The first requirement an instance type fails, for explanations.
pub(crate) fn type_mismatch(it: &InstanceType, requirements: &Requirements) -> Option<String> {
    for r in requirements.iter() {
        match r.key.as_str() {
            labels::ZONE | labels::CAPACITY_TYPE | labels::HOSTNAME | labels::NODEPOOL => continue,
            key => match it.labels.get(key) {
                Some(v) if !r.has(v) => return Some(format!("{key}={v} is not allowed by {r}")),
                None if is_well_known(key) && !r.allows_absent() => {
                    return Some(format!("it has no {key} label, required by {r}"));
                }
                _ => {}
            },
        }
    }
    if price_under(it, requirements).is_none() {
        return Some("no available offering in an allowed zone and capacity type".to_string());
    }
    None
}

/// The cheapest available offering allowed by `requirements`.
pub(crate) fn price_under<'a>(
    it: &'a InstanceType,
    requirements: &Requirements,
) -> Option<&'a Offering> {
    it.cheapest_offering(|o| {
        requirements.allows(labels::ZONE, &o.zone)
            && requirements.allows(labels::CAPACITY_TYPE, o.capacity_type.as_str())
    })
}

/// Which instance types of each pool an (empty) node of a class could use.
pub(crate) struct Compat {
    /// Per pool: a bitset over the pool's types, or why the pool cannot take the class.
    pub pools: Vec<Result<Bitset, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bitset(pub Vec<u64>);

impl Bitset {
    pub fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)])
    }
    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            let mut bits = *bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + b)
            })
        })
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

impl Scheduler {
    /// Compatibility of one class with every pool's instance types.
    pub(crate) fn compat(&self, c: &Constraints, request: &Resources) -> Compat {
        let pools = self
            .pools
            .iter()
            .map(|p| {
                if let Some(t) = first_untolerated(&p.pool.taints, &c.tolerations, c.prefer_no_schedule_tolerated) {
                    return Err(format!("does not tolerate taint {t}"));
                }
                p.requirements.compatible(&c.requirements, is_well_known).map_err(|e| e.to_string())?;
                if let Some(r) = c.requirements.get(labels::HOSTNAME).filter(|r| !r.is_complement()) {
                    // A NodeClaim's node name is not known when it is planned.
                    return Err(format!("a new node cannot satisfy {r}: only an existing node has that name"));
                }
                let combined = p.requirements.intersection(&c.requirements);
                let mut set = Bitset::new(p.types.len());
                let (mut by_requirements, mut too_small) = (0usize, 0usize);
                let mut short: BTreeSet<String> = BTreeSet::new();
                let mut example = None;
                for (t, pt) in p.types.iter().enumerate() {
                    let it = &p.pool.instance_types[pt.index];
                    if let Some(why) = type_mismatch(it, &combined) {
                        by_requirements += 1;
                        example.get_or_insert(why);
                        continue;
                    }
                    if !request.fits(&pt.free) {
                        too_small += 1;
                        short.extend(request.exceeding(&pt.free));
                        continue;
                    }
                    set.set(t);
                }
                if set.is_empty() {
                    let mut why = format!("none of its {} instance types fits", p.types.len());
                    if by_requirements > 0 {
                        why += &format!(
                            "; {by_requirements} excluded by requirements (e.g. {})",
                            example.unwrap_or_default()
                        );
                    }
                    if too_small > 0 {
                        why += &format!(
                            "; {too_small} too small for the request {request} plus DaemonSet overhead (short of {})",
                            short.into_iter().collect::<Vec<_>>().join(", ")
                        );
                    }
                    return Err(why);
                }
                Ok(set)
            })
            .collect();
        Compat { pools }
    }
}

/// One node in the simulation: an existing node or a NodeClaim being planned.
#[derive(Clone, Debug)]
pub(crate) struct Bin {
    pub kind: BinKind,
    /// Claims: the narrowed requirements; existing nodes: unused (labels decide).
    pub requirements: Requirements,
    /// Requests of the pods placed (existing nodes: of every pod already bound too).
    pub used: Resources,
    /// Existing: allocatable; claims: free capacity of the chosen type.
    pub capacity: Resources,
    pub counts: Vec<u32>,
    pub caps: Vec<u32>,
    /// Indexes of the solved pods placed here.
    pub pods: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(crate) enum BinKind {
    Existing(usize),
    Claim {
        pool: usize,
        options: Arc<Vec<usize>>,
        chosen: usize,
    },
}

/// A pod that did not fit in a pass; `retry` asks for one more pass at the same relaxation
/// (it waited for pods it has affinity to).
pub(crate) struct Failure {
    pub pod: usize,
    pub reason: String,
    pub retry: bool,
}

/// A class during one pass.
pub(crate) struct Class {
    /// Pods of the class not yet placed.
    pub pods: Vec<usize>,
    pub constraints: Constraints,
    pub request: Resources,
    pub node_rules: NodeRules,
    pub domain_rules: Vec<DomainRule>,
    pub compat: Arc<Compat>,
    /// Marginal cost of one pod (LP dual prices × requests), for packing decisions.
    pub value: f64,
    pub key: String,
    /// What placed pods remember of their class, built on first placement.
    pub placed: Option<Arc<Placed>>,
}

/// The constraints a placed pod was placed under, kept so node merging ([`crate::merge`]) can move it.
#[derive(Clone)]
pub(crate) struct Placed {
    pub constraints: Constraints,
    pub request: Resources,
    pub node_rules: NodeRules,
    pub compat: Arc<Compat>,
}

impl Class {
    pub fn placed(&mut self) -> Arc<Placed> {
        if self.placed.is_none() {
            self.placed = Some(Arc::new(Placed {
                constraints: self.constraints.clone(),
                request: self.request.clone(),
                node_rules: self.node_rules.clone(),
                compat: self.compat.clone(),
            }));
        }
        self.placed.clone().expect("just set")
    }
}

/// A DoNotSchedule spread seen while pinning: maxSkew, minDomains, eligible domains.
pub(crate) type SpreadRecord = (u32, Option<u32>, BTreeSet<String>);

/// The state of one `solve`.
pub(crate) struct Solve<'s> {
    pub sched: &'s Scheduler,
    pub pods: &'s [Pod],
    pub groups: Groups,
    pub members: Vec<Vec<u32>>,
    pub bins: Vec<Bin>,
    /// Per pool: capacity reserved by planned claims, and their count.
    pub limits_used: Vec<(Resources, i64)>,
    /// (group, topology key) → domain value → pods counted there.
    pub domain_counts: HashMap<(u32, String), BTreeMap<String, i64>>,
    pub tracked: BTreeSet<(u32, String)>,
    /// (group, topology key) → domain value → pods there whose required anti-affinity
    /// selects the group's members: existing pods and pods pinned by this solve. Members
    /// are kept out of those domains (the kube-scheduler's check of existing pods'
    /// anti-affinity, which is symmetric).
    pub excluded: HashMap<(u32, String), BTreeMap<String, i64>>,
    /// Pods of each group placed anywhere, for the "first pod of a self-affine group" rule.
    pub global_counts: Vec<i64>,
    pub compat_cache: HashMap<String, Arc<Compat>>,
    pub failures: Vec<Failure>,
    pub resource_prices: crate::packing::ResourcePrices,
    /// Whether packing also tries fills shaped to each node's room (see `solve`).
    pub shaped_fills: bool,
    /// Whether packing first rounds the configuration LP's solution (see `solve`).
    pub lp_rounding: bool,
    /// Whether a pass has already rounded the LP.
    pub lp_rounded: bool,
    /// This pass's LP solution to round, and each class's shape in it.
    pub lp_packings: Vec<crate::packing::LpPacking>,
    pub lp_shapes: Vec<usize>,
    /// DoNotSchedule spreads seen while pinning: (group, key) → (maxSkew, minDomains,
    /// eligible domains), re-checked once all passes are done.
    pub spreads: HashMap<(u32, String), SpreadRecord>,
    /// Per solved pod, once placed: the class it was placed as.
    pub pod_info: Vec<Option<Arc<Placed>>>,
    /// When cost planning must stop (its plan is then dropped).
    pub deadline: Option<Instant>,
    /// Per pool: whether its limits could bind in this solve. A plan launches at most one
    /// NodeClaim per pod, so a limit that even that many of the pool's largest type stays
    /// within never binds, and is ignored: it must not change the plan.
    pub limited: Vec<bool>,
    /// First fit: per pool and type, average pods held per dollar.
    pub efficient: Vec<Vec<f64>>,
}

impl<'s> Solve<'s> {
    pub(crate) fn new(sched: &'s Scheduler, pods: &'s [Pod]) -> Self {
        let mut groups = Groups::default();
        for p in pods {
            groups.register(p);
        }
        for n in &sched.nodes {
            for p in &n.pods {
                groups.register(p);
            }
        }
        let members: Vec<Vec<u32>> = pods.iter().map(|p| groups.memberships(p)).collect();
        let mut tracked = BTreeSet::new();
        for p in pods {
            for s in &p.topology_spread {
                if s.topology_key != labels::HOSTNAME {
                    tracked.insert((
                        groups
                            .get(&GroupKey::for_spread(&p.namespace, s))
                            .expect("registered"),
                        s.topology_key.clone(),
                    ));
                }
            }
            let terms = p.affinity.iter().chain(&p.anti_affinity).chain(
                p.preferred_affinity
                    .iter()
                    .chain(&p.preferred_anti_affinity)
                    .map(|(_, t)| t),
            );
            for t in terms {
                if t.topology_key != labels::HOSTNAME {
                    tracked.insert((
                        groups
                            .get(&GroupKey::for_term(&p.namespace, t))
                            .expect("registered"),
                        t.topology_key.clone(),
                    ));
                }
            }
        }
        // Existing pods' required anti-affinity on a domain key: their groups' members are
        // pinned (tracked) so they can be kept out of the domains those pods are in.
        let mut excluded: HashMap<(u32, String), BTreeMap<String, i64>> = HashMap::new();
        for n in &sched.nodes {
            for p in &n.pods {
                for t in p
                    .anti_affinity
                    .iter()
                    .filter(|t| t.topology_key != labels::HOSTNAME)
                {
                    let group = groups
                        .get(&GroupKey::for_term(&p.namespace, t))
                        .expect("registered");
                    tracked.insert((group, t.topology_key.clone()));
                    if let Some(v) = n.labels.get(&t.topology_key) {
                        *excluded
                            .entry((group, t.topology_key.clone()))
                            .or_default()
                            .entry(v.clone())
                            .or_default() += 1;
                    }
                }
            }
        }
        let g = groups.len();
        let mut global_counts = vec![0i64; g];
        let mut domain_counts: HashMap<(u32, String), BTreeMap<String, i64>> = HashMap::new();
        let mut bins = Vec::new();
        for (i, n) in sched.nodes.iter().enumerate() {
            let mut bin = Bin {
                kind: BinKind::Existing(i),
                requirements: Requirements::new(),
                used: Resources::default(),
                capacity: n.allocatable.clone(),
                counts: vec![0; g],
                caps: vec![u32::MAX; g],
                pods: Vec::new(),
            };
            for p in &n.pods {
                bin.used.add(&classes::node_request(p));
                let settled = Relax {
                    pref_affinity: usize::MAX / 2,
                    pref_anti: usize::MAX / 2,
                    pref_node: usize::MAX / 2,
                    ..Relax::default()
                };
                let c = classes::constraints(p, &settled);
                let (rules, _) = classes::split_rules(p, &c, &groups);
                for m in &rules.members {
                    bin.counts[*m as usize] += 1;
                    global_counts[*m as usize] += 1;
                    for (tg, key) in &tracked {
                        if tg == m
                            && let Some(v) = n.labels.get(key)
                        {
                            *domain_counts
                                .entry((*tg, key.clone()))
                                .or_default()
                                .entry(v.clone())
                                .or_default() += 1;
                        }
                    }
                }
                for (grp, cap) in &rules.caps {
                    let slot = &mut bin.caps[*grp as usize];
                    *slot = (*slot).min(*cap);
                }
            }
            bins.push(bin);
        }
        Solve {
            sched,
            pods,
            groups,
            members,
            bins,
            limits_used: vec![(Resources::default(), 0); sched.pools.len()],
            domain_counts,
            tracked,
            excluded,
            global_counts,
            compat_cache: HashMap::new(),
            failures: Vec::new(),
            resource_prices: Default::default(),
            shaped_fills: false,
            lp_rounding: false,
            lp_rounded: false,
            lp_packings: Vec::new(),
            lp_shapes: Vec::new(),
            spreads: HashMap::new(),
            pod_info: vec![None; pods.len()],
            deadline: None,
            limited: sched
                .pools
                .iter()
                .map(|p| {
                    let most = pods.len() as i64;
                    p.pool.limits.iter().any(|(name, limit)| {
                        let largest = if name == "nodes" {
                            1
                        } else {
                            p.types
                                .iter()
                                .map(|t| p.pool.instance_types[t.index].capacity.get(name))
                                .max()
                                .unwrap_or(0)
                        };
                        largest.saturating_mul(most) > *limit
                    })
                })
                .collect(),
            efficient: Vec::new(),
        }
    }

    pub fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    pub fn fail(&mut self, pods: impl IntoIterator<Item = usize>, reason: &str, retry: bool) {
        for pod in pods {
            self.failures.push(Failure {
                pod,
                reason: reason.to_string(),
                retry,
            });
        }
    }

    pub fn class_compat(&mut self, c: &Constraints, request: &Resources) -> Arc<Compat> {
        let key = format!(
            "{:?}\u{1}{:?}\u{1}{}\u{1}{:?}",
            c.requirements, c.tolerations, c.prefer_no_schedule_tolerated, request
        );
        if let Some(found) = self.compat_cache.get(&key) {
            return found.clone();
        }
        let compat = Arc::new(self.sched.compat(c, request));
        self.compat_cache.insert(key, compat.clone());
        compat
    }

    /// Build a class from its first pod.
    pub fn make_class(&mut self, pod: usize, constraints: Constraints, key: String) -> Class {
        let p = &self.pods[pod];
        let (node_rules, domain_rules) = classes::split_rules(p, &constraints, &self.groups);
        let request = classes::node_request(p);
        let compat = self.class_compat(&constraints, &request);
        Class {
            pods: Vec::new(),
            constraints,
            request,
            node_rules,
            domain_rules,
            compat,
            value: 0.0,
            key,
            placed: None,
        }
    }

    /// One pass over the pending pods; returns those that could not be placed.
    fn pass(&mut self, pending: &[(usize, Relax, bool)]) -> Vec<Failure> {
        self.failures.clear();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut classes: Vec<Class> = Vec::new();
        for (pod, relax, _) in pending {
            let c = classes::constraints(&self.pods[*pod], relax);
            let key = classes::class_key(&self.pods[*pod], &self.members[*pod], &c);
            let i = match index.get(&key) {
                Some(i) => *i,
                None => {
                    let class = self.make_class(*pod, c, key.clone());
                    classes.push(class);
                    index.insert(key, classes.len() - 1);
                    classes.len() - 1
                }
            };
            classes[i].pods.push(*pod);
        }
        // Pods are placed from the back of each class's list; keep input order.
        for c in &mut classes {
            c.pods.reverse();
        }
        let mut classes = self.pin_domains(classes);
        self.value_classes(&mut classes);
        let mut order: Vec<usize> = (0..classes.len()).collect();
        order.sort_by(|a, b| {
            let (ca, cb) = (&classes[*a], &classes[*b]);
            (!ca.node_rules.needs.is_empty())
                .cmp(&!cb.node_rules.needs.is_empty())
                .then(cb.value.total_cmp(&ca.value))
                .then_with(|| ca.key.cmp(&cb.key))
        });
        for &c in &order {
            self.place_on_bins(&mut classes[c]);
        }
        self.pack(&mut classes, &order);
        std::mem::take(&mut self.failures)
    }

    /// Place a class's pods on existing nodes and on claims planned in earlier passes.
    fn place_on_bins(&mut self, class: &mut Class) {
        for b in 0..self.bins.len() {
            if class.pods.is_empty() {
                return;
            }
            let k = self.fits_in_bin(class, b);
            if k > 0 {
                self.place(class, b, k);
            }
        }
    }

    /// How many pods of the class fit on bin `b` as it stands.
    fn fits_in_bin(&self, class: &Class, b: usize) -> i64 {
        let bin = &self.bins[b];
        let c = &class.constraints;
        match &bin.kind {
            BinKind::Existing(n) => {
                let node = &self.sched.nodes[*n];
                if first_untolerated(&node.taints, &c.tolerations, c.prefer_no_schedule_tolerated)
                    .is_some()
                    || !c.requirements.matches_labels(&node.labels)
                {
                    return 0;
                }
            }
            BinKind::Claim { pool, chosen, .. } => {
                let Ok(set) = &class.compat.pools[*pool] else {
                    return 0;
                };
                if !set.contains(*chosen) || bin.requirements.intersects(&c.requirements).is_err() {
                    return 0;
                }
                let it = self.sched.pools[*pool].instance_type(*chosen);
                if price_under(it, &bin.requirements.intersection(&c.requirements)).is_none() {
                    return 0;
                }
            }
        }
        let free = bin.capacity.minus(&bin.used);
        let k = class
            .request
            .copies_within(&free)
            .min(class.pods.len() as i64);
        self.node_rule_limit(&class.node_rules, &bin.counts, &bin.caps, k, false)
    }

    /// How many of `k` pods with `rules` can join a node with these counts and caps.
    pub fn node_rule_limit(
        &self,
        rules: &NodeRules,
        counts: &[u32],
        caps: &[u32],
        mut k: i64,
        empty_node: bool,
    ) -> i64 {
        for g in &rules.needs {
            let present = counts[*g as usize] > 0;
            let first_pod =
                empty_node && rules.members.contains(g) && self.global_counts[*g as usize] == 0;
            if !present && !first_pod {
                return 0;
            }
        }
        for &m in &rules.members {
            let cap = caps[m as usize];
            let own = rules
                .caps
                .iter()
                .filter(|(g, _)| *g == m)
                .map(|(_, c)| *c)
                .min()
                .unwrap_or(u32::MAX);
            let cap = cap.min(own);
            if cap != u32::MAX {
                k = k.min(cap as i64 - counts[m as usize] as i64);
            }
        }
        for (g, cap) in &rules.caps {
            if !rules.members.contains(g) && counts[*g as usize] > *cap {
                return 0;
            }
        }
        k.max(0)
    }

    /// Put `k` pods of the class on bin `b`.
    pub fn place(&mut self, class: &mut Class, b: usize, k: i64) {
        let bin = &mut self.bins[b];
        bin.used.add_times(&class.request, k);
        for m in &class.node_rules.members {
            bin.counts[*m as usize] += k as u32;
            self.global_counts[*m as usize] += k;
        }
        for (g, cap) in &class.node_rules.caps {
            let slot = &mut bin.caps[*g as usize];
            *slot = (*slot).min(*cap);
        }
        if let BinKind::Claim {
            pool,
            options,
            chosen,
        } = &mut bin.kind
        {
            bin.requirements.add_all(&class.constraints.requirements);
            if let Ok(set) = &class.compat.pools[*pool] {
                let p = &self.sched.pools[*pool];
                let kept: Vec<usize> = options
                    .iter()
                    .copied()
                    .filter(|t| {
                        set.contains(*t)
                            && bin.used.fits(&p.types[*t].free)
                            && price_under(p.instance_type(*t), &bin.requirements).is_some()
                    })
                    .collect();
                if !kept.contains(chosen) {
                    // The chosen type was verified to fit before placing; keep it regardless.
                    let mut with_chosen = vec![*chosen];
                    with_chosen.extend(kept);
                    *options = Arc::new(with_chosen);
                } else {
                    *options = Arc::new(kept);
                }
            }
        }
        let placed = class.placed();
        for _ in 0..k {
            if let Some(pod) = class.pods.pop() {
                bin.pods.push(pod);
                self.pod_info[pod] = Some(placed.clone());
            }
        }
    }

    pub(crate) fn results(&self) -> Results {
        let mut results = Results::default();
        for bin in &self.bins {
            if bin.pods.is_empty() {
                continue;
            }
            match &bin.kind {
                BinKind::Existing(n) => results.existing.push(ExistingPlacement {
                    node: self.sched.nodes[*n].name.clone(),
                    pods: bin.pods.clone(),
                }),
                BinKind::Claim {
                    pool,
                    options,
                    chosen,
                } => {
                    let p = &self.sched.pools[*pool];
                    // Later passes may have narrowed the claim (a zone, a capacity type),
                    // which reprices its options: re-rank them and take the cheapest.
                    let mut ranked: Vec<(f64, usize)> = options
                        .iter()
                        .filter(|t| bin.used.fits(&p.types[**t].free))
                        .filter_map(|t| {
                            price_under(p.instance_type(*t), &bin.requirements)
                                .map(|o| (o.price, *t))
                        })
                        .collect();
                    ranked.sort_by(|a, b| {
                        a.0.total_cmp(&b.0)
                            .then_with(|| p.instance_type(a.1).name.cmp(&p.instance_type(b.1).name))
                    });
                    let chosen = &ranked.first().map(|r| r.1).unwrap_or(*chosen);
                    let it = p.instance_type(*chosen);
                    let offering = price_under(it, &bin.requirements)
                        .expect("claims are only made with an offering");
                    let mut requirements = bin.requirements.clone();
                    requirements.add(Requirement::exactly(labels::ZONE, &offering.zone));
                    requirements.add(Requirement::exactly(
                        labels::CAPACITY_TYPE,
                        offering.capacity_type.as_str(),
                    ));
                    let instance_type_options: Vec<InstanceTypeOption> = ranked
                        .iter()
                        .take(self.sched.options.max_instance_type_options)
                        .map(|(price, t)| InstanceTypeOption {
                            name: p.instance_type(*t).name.clone(),
                            price: *price,
                        })
                        .collect();
                    results.node_claims.push(NodeClaimPlan {
                        node_pool: p.pool.name.clone(),
                        instance_type: it.name.clone(),
                        zone: offering.zone.clone(),
                        capacity_type: offering.capacity_type,
                        price: offering.price,
                        instance_type_options,
                        requirements,
                        pods: bin.pods.clone(),
                        requests: bin.used.clone(),
                        daemon_overhead: p.types[*chosen].overhead.clone(),
                        allocatable: it.allocatable.clone(),
                    });
                }
            }
        }
        results
    }
}

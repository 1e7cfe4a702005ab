//! Packing new NodeClaims for the whole batch at once.
//!
//! Every pod class gets a value: its requests priced at the dual prices of the batch's
//! fractional covering LP ([`crate::lowerbound`]), i.e. what its share of the cheapest
//! possible capacity costs. Then, largest classes first, a seed pod opens a node: for each
//! candidate instance type the packer fills a node of that type greedily with every
//! compatible class (respecting requirements, taints, host ports, hostname spread and
//! (anti-)affinity), and keeps the type whose packed value per dollar is highest. A packing
//! that can be repeated is stamped out as many times as the remaining pods allow. So the
//! choice of type reflects what the rest of the batch needs, not only the pod at hand, and
//! the plan's cost tracks the LP lower bound closely.
//!
//! Each NodeClaim then keeps every compatible type that fits its pods, cheapest first; its
//! price is the cheapest of them.
//!
//! Two refinements, each used only in the plan variants `Scheduler::solve` compares (it
//! keeps the cheapest plan, so neither can make a plan dearer): *LP rounding* first opens
//! ⌊x⌋ nodes of every packing the batch's whole-packing configuration LP buys x of (the
//! LP's columns mix sizes that the one-seed-at-a-time greedy packs apart), and *shaped
//! fills* also try filling each node in an order fitted to the room its seed leaves.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use karpctl_cloud::Resources;
use karpctl_cloud::labels;

use crate::lowerbound::{
    Column, NodeType, PodClass, configuration_bound_until, cover, integer_configuration_bound_until,
};
use crate::requirements::Requirements;
use crate::scheduler::{Bin, BinKind, Class, Solve, price_under};

/// Prices per resource unit (cores, GiB, pods, units of extended resources).
#[derive(Clone, Debug, Default)]
pub(crate) struct ResourcePrices {
    pub dims: Vec<String>,
    pub prices: Vec<f64>,
}

const GIB: f64 = (1u64 << 30) as f64;

pub(crate) fn scaled(r: &Resources, dim: &str) -> f64 {
    match dim {
        "cpu" => r.cpu as f64 / 1000.0,
        "memory" => r.memory as f64 / GIB,
        other => r.get(other) as f64,
    }
}

impl ResourcePrices {
    pub fn value(&self, r: &Resources) -> f64 {
        let priced: f64 = self
            .dims
            .iter()
            .zip(&self.prices)
            .map(|(d, y)| scaled(r, d) * y)
            .sum();
        // A tiny size term so zero-priced resources still prefer packing more.
        priced + 1e-6 * (scaled(r, "cpu") + scaled(r, "memory"))
    }
}

/// Work budget of the whole-packing LP whose solution [`Solve::round_lp`] rounds (about a
/// second at most).
const LP_WORK: usize = 5_000_000;

/// A packing the batch's configuration LP buys, for [`Solve::round_lp`]: a (pool, type),
/// how many pods of each shape one node holds, and how many nodes (fractional).
pub(crate) struct LpPacking {
    pub pool_type: (usize, usize),
    pub per_shape: Vec<f64>,
    pub nodes: f64,
}

struct Fill {
    picked: Vec<(usize, i64)>,
    requirements: Requirements,
    used: Resources,
    counts: Vec<u32>,
    caps: Vec<u32>,
    value: f64,
    price: f64,
}

impl Fill {
    fn efficiency(&self) -> f64 {
        if self.price > 0.0 {
            self.value / self.price
        } else {
            0.0
        }
    }
    fn seed_count(&self) -> i64 {
        self.picked.first().map(|(_, k)| *k).unwrap_or(0)
    }
}

/// A candidate (pool, type) with its bound on value per dollar, its seed efficiency, its price.
type Scored = ((usize, usize), f64, f64, f64);

struct Memo {
    pool: usize,
    t: usize,
    /// Whether the fill used [`Solve::shaped_order`].
    shaped: bool,
    efficiency: f64,
    uses: usize,
}

impl Solve<'_> {
    /// Value every class at the dual prices of the batch's covering LP.
    pub(crate) fn value_classes(&mut self, classes: &mut [Class]) {
        let mut dims: Vec<String> = vec!["cpu".into(), "memory".into(), "pods".into()];
        let extended: BTreeSet<String> = classes
            .iter()
            .flat_map(|c| c.request.extended.keys().cloned())
            .collect();
        dims.extend(extended);
        let demand: Vec<f64> = dims
            .iter()
            .map(|d| {
                classes
                    .iter()
                    .map(|c| scaled(&c.request, d) * c.pods.len() as f64)
                    .sum()
            })
            .collect();
        let mut columns = Vec::new();
        for (p, pool) in self.sched.pools.iter().enumerate() {
            let mut union: Option<crate::scheduler::Bitset> = None;
            for c in classes.iter() {
                if let Ok(set) = &c.compat.pools[p] {
                    match &mut union {
                        Some(u) => u.0.iter_mut().zip(&set.0).for_each(|(a, b)| *a |= b),
                        None => union = Some(set.clone()),
                    }
                }
            }
            let Some(union) = union else { continue };
            for t in union.iter() {
                let Some(o) = price_under(pool.instance_type(t), &pool.requirements) else {
                    continue;
                };
                let free = &pool.types[t].free;
                columns.push(Column {
                    price: o.price,
                    supply: dims.iter().map(|d| scaled(free, d).max(0.0)).collect(),
                });
            }
        }
        // Drop resources nothing offers (their pods have no compatible type anyway).
        let demand: Vec<f64> = demand
            .iter()
            .enumerate()
            .map(|(r, d)| {
                if columns.iter().any(|c| c.supply[r] > 0.0) {
                    *d
                } else {
                    0.0
                }
            })
            .collect();
        let prices = cover(&columns, &demand)
            .map(|c| c.resource_prices)
            .unwrap_or_else(|| vec![0.0; dims.len()]);
        self.resource_prices = ResourcePrices { dims, prices };
        for c in classes.iter_mut() {
            c.value = self.resource_prices.value(&c.request);
        }
        self.value_by_packings(classes);
    }

    /// Sharper values when the batch has few distinct pod shapes: the duals of the
    /// configuration LP (what a pod of each shape costs when nodes hold mixes that fit),
    /// which, unlike per-resource prices, never count CPU a pod could not use on a type
    /// too small for it.
    fn value_by_packings(&mut self, classes: &mut [Class]) {
        self.lp_packings.clear();
        self.lp_shapes.clear();
        const MAX_SHAPES: usize = 80;
        let dims = self.resource_prices.dims.clone();
        let mut shapes: HashMap<(Vec<i64>, u32), usize> = HashMap::new();
        let mut shape_of = Vec::with_capacity(classes.len());
        let mut pod_classes: Vec<PodClass> = Vec::new();
        for c in classes.iter() {
            let per_node = c
                .node_rules
                .caps
                .iter()
                .filter(|(g, _)| c.node_rules.members.contains(g))
                .map(|(_, cap)| *cap)
                .min()
                .unwrap_or(u32::MAX);
            let key: Vec<i64> = dims.iter().map(|d| c.request.get(d)).collect();
            let next = pod_classes.len();
            let i = *shapes.entry((key, per_node)).or_insert(next);
            if i == next {
                if next >= MAX_SHAPES {
                    return;
                }
                pod_classes.push(PodClass {
                    count: 0.0,
                    request: dims.iter().map(|d| scaled(&c.request, d)).collect(),
                    max_per_node: (per_node != u32::MAX).then_some(per_node as f64),
                });
            }
            pod_classes[i].count += c.pods.len() as f64;
            shape_of.push(i);
        }
        let mut types = Vec::new();
        let mut type_of: Vec<(usize, usize)> = Vec::new();
        for (p, pool) in self.sched.pools.iter().enumerate() {
            let mut seen = vec![false; pool.types.len()];
            for c in classes.iter() {
                if let Ok(set) = &c.compat.pools[p] {
                    for t in set.iter() {
                        seen[t] = true;
                    }
                }
            }
            for (t, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
                if let Some(o) = price_under(pool.instance_type(t), &pool.requirements) {
                    let free = &pool.types[t].free;
                    type_of.push((p, t));
                    types.push(NodeType {
                        price: o.price,
                        allocatable: dims.iter().map(|d| scaled(free, d).max(0.0)).collect(),
                    });
                }
            }
        }
        // Only the first pass, which holds the whole batch, is rounded: later passes hold
        // the few pods a relaxation retries, not worth another LP. The LP over whole
        // packings also values the classes then (one LP instead of two), unless it ran out
        // of work before any figure.
        let mut duals = None;
        if self.lp_rounding && !self.lp_rounded {
            self.lp_rounded = true;
            if let Some(bound) = integer_configuration_bound_until(
                &types,
                &pod_classes,
                30,
                self.lp_work(),
                self.deadline,
            ) {
                self.lp_packings = bound
                    .packings
                    .into_iter()
                    .map(|p| LpPacking {
                        pool_type: type_of[p.type_index],
                        per_shape: p.pods,
                        nodes: p.nodes,
                    })
                    .collect();
                self.lp_shapes = shape_of.clone();
                if bound.value > 0.0 {
                    duals = Some(bound.duals);
                }
            }
        }
        let duals = match duals {
            Some(d) => d,
            None => match configuration_bound_until(&types, &pod_classes, 20, self.deadline) {
                Some((_, d)) => d,
                None => return,
            },
        };
        for (c, shape) in classes.iter_mut().zip(shape_of) {
            c.value =
                duals[shape] + 1e-6 * (scaled(&c.request, "cpu") + scaled(&c.request, "memory"));
        }
    }

    /// The LP's work budget: [`LP_WORK`], less when the deadline is nearer than the second
    /// that takes.
    fn lp_work(&self) -> usize {
        match self.deadline {
            None => LP_WORK,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                ((left.as_secs_f64() * LP_WORK as f64) as usize).min(LP_WORK)
            }
        }
    }

    fn tiers(&self) -> Vec<Vec<usize>> {
        let mut weights: Vec<i32> = self.sched.pools.iter().map(|p| p.pool.weight).collect();
        weights.sort_by(|a, b| b.cmp(a));
        weights.dedup();
        weights
            .into_iter()
            .map(|w| {
                (0..self.sched.pools.len())
                    .filter(|p| self.sched.pools[*p].pool.weight == w)
                    .collect()
            })
            .collect()
    }

    /// Whether one more node of type `t` keeps the pool within its limits.
    pub(crate) fn within_limits(
        &self,
        pool: usize,
        t: usize,
        reserved: Option<&Resources>,
    ) -> bool {
        let p = &self.sched.pools[pool];
        if !self.limited[pool] {
            return true;
        }
        let (used, nodes) = &self.limits_used[pool];
        let capacity = reserved
            .cloned()
            .unwrap_or_else(|| p.instance_type(t).capacity.clone());
        p.pool.limits.iter().all(|(name, limit)| {
            if name == "nodes" {
                *nodes < *limit
            } else {
                used.get(name) + capacity.get(name) <= *limit
            }
        })
    }

    fn candidates(&self, class: &Class, tiers: &[Vec<usize>]) -> Vec<(usize, usize)> {
        for tier in tiers {
            let mut out = Vec::new();
            for &p in tier {
                if let Ok(set) = &class.compat.pools[p] {
                    out.extend(
                        set.iter()
                            .filter(|t| self.within_limits(p, *t, None))
                            .map(|t| (p, t)),
                    );
                }
            }
            if !out.is_empty() {
                return out;
            }
        }
        Vec::new()
    }

    pub(crate) fn no_candidate_reason(&self, class: &Class) -> String {
        if self.sched.pools.is_empty() {
            return "no NodePools to launch nodes from, and no existing node fits".to_string();
        }
        let reasons: Vec<String> = self
            .sched
            .pools
            .iter()
            .enumerate()
            .map(|(p, pool)| match &class.compat.pools[p] {
                Err(why) => format!("nodepool {}: {why}", pool.pool.name),
                Ok(_) => format!(
                    "nodepool {}: limits reached ({})",
                    pool.pool.name,
                    limits_text(&pool.pool.limits)
                ),
            })
            .collect();
        format!(
            "no existing node fits and no NodePool can launch one: {}",
            reasons.join("; ")
        )
    }

    /// Fill a hypothetical node of type `t` in `pool`, seeded with `seed`.
    fn fill(&self, classes: &[Class], order: &[usize], seed: usize, pool: usize, t: usize) -> Fill {
        self.fill_capped(classes, order, seed, pool, t, None)
    }

    /// [`Self::fill`], taking at most `most[c]` pods of class `c` when given.
    fn fill_capped(
        &self,
        classes: &[Class],
        order: &[usize],
        seed: usize,
        pool: usize,
        t: usize,
        most: Option<&[i64]>,
    ) -> Fill {
        let p = &self.sched.pools[pool];
        let it = p.instance_type(t);
        let g = self.groups.len();
        let mut fill = Fill {
            picked: Vec::new(),
            requirements: p.requirements.clone(),
            used: Resources::default(),
            counts: vec![0; g],
            caps: vec![u32::MAX; g],
            value: 0.0,
            price: 0.0,
        };
        let mut free = p.types[t].free.clone();
        for c in std::iter::once(seed).chain(order.iter().copied().filter(|c| *c != seed)) {
            let class = &classes[c];
            if class.pods.is_empty() {
                continue;
            }
            let Ok(set) = &class.compat.pools[pool] else {
                continue;
            };
            if !set.contains(t) {
                continue;
            }
            let mut k = class
                .request
                .copies_within(&free)
                .min(class.pods.len() as i64)
                .min(most.map_or(i64::MAX, |m| m[c]));
            if k == 0 {
                if c == seed {
                    break;
                }
                continue;
            }
            k = self.node_rule_limit(
                &class.node_rules,
                &fill.counts,
                &fill.caps,
                k,
                fill.picked.is_empty(),
            );
            if k == 0
                || fill
                    .requirements
                    .intersects(&class.constraints.requirements)
                    .is_err()
            {
                if c == seed {
                    break;
                }
                continue;
            }
            let r = &class.constraints.requirements;
            if r.has_key(labels::ZONE) || r.has_key(labels::CAPACITY_TYPE) {
                let merged = fill.requirements.intersection(r);
                if price_under(it, &merged).is_none() {
                    if c == seed {
                        break;
                    }
                    continue;
                }
                fill.requirements = merged;
            } else if !r.is_empty() {
                fill.requirements.add_all(r);
            }
            free.add_times(&class.request, -k);
            fill.used.add_times(&class.request, k);
            for m in &class.node_rules.members {
                fill.counts[*m as usize] += k as u32;
            }
            for (grp, cap) in &class.node_rules.caps {
                let slot = &mut fill.caps[*grp as usize];
                *slot = (*slot).min(*cap);
            }
            fill.picked.push((c, k));
            fill.value += k as f64 * class.value;
            if free.pods <= 0 {
                break;
            }
        }
        fill.price = price_under(it, &fill.requirements)
            .map(|o| o.price)
            .unwrap_or(f64::INFINITY);
        if fill.picked.first().is_none_or(|(c, _)| *c != seed) {
            fill.picked.clear();
            fill.value = 0.0;
        }
        fill
    }

    /// The classes in the order that best fills the room a node of type `t` has left once
    /// it holds its seed pods: by value per share of that room taken by the scarcest
    /// resource. The plain value order fills a node with the biggest pods until one
    /// resource runs out and strands the rest (a GPU node full of CPU-bound pods with half
    /// its memory idle); this order takes the pods shaped like the hole first.
    fn shaped_order(
        &self,
        classes: &[Class],
        order: &[usize],
        seed: usize,
        pool: usize,
        t: usize,
    ) -> Vec<usize> {
        let mut free = self.sched.pools[pool].types[t].free.clone();
        let s = &classes[seed];
        let k = s.request.copies_within(&free).min(s.pods.len() as i64);
        free.add_times(&s.request, -k);
        let room = |need: i64, have: i64| -> f64 {
            if need <= 0 {
                0.0
            } else if have <= 0 {
                f64::INFINITY
            } else {
                need as f64 / have as f64
            }
        };
        let mut ranked: Vec<(f64, usize)> = order
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != seed && !classes[**c].pods.is_empty())
            .map(|(i, c)| {
                let r = &classes[*c].request;
                let mut share = room(r.cpu, free.cpu)
                    .max(room(r.memory, free.memory))
                    .max(room(r.pods, free.pods));
                for (name, v) in &r.extended {
                    share = share.max(room(*v, free.get(name)));
                }
                let density = if share > 0.0 {
                    classes[*c].value / share
                } else {
                    f64::INFINITY
                };
                (density, i)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        std::iter::once(seed)
            .chain(ranked.into_iter().map(|(_, i)| order[i]))
            .collect()
    }

    /// The better of the plain and the shaped fill of a node of type `t`.
    fn best_fill(
        &self,
        classes: &[Class],
        order: &[usize],
        seed: usize,
        pool: usize,
        t: usize,
    ) -> (Fill, bool) {
        let plain = self.fill(classes, order, seed, pool, t);
        if !self.shaped_fills {
            return (plain, false);
        }
        let shaped = self.fill(
            classes,
            &self.shaped_order(classes, order, seed, pool, t),
            seed,
            pool,
            t,
        );
        if shaped.seed_count() > 0 && shaped.efficiency() > plain.efficiency() * (1.0 + 1e-9) {
            (shaped, true)
        } else {
            (plain, false)
        }
    }

    /// Candidates worth a full fill: the best by their own upper bound on value per dollar
    /// and by how well they hold the seed, plus the cheapest (for small remainders).
    fn shortlist(&self, class: &Class, cands: &[(usize, usize)]) -> Vec<(usize, usize)> {
        const EACH: usize = 12;
        if cands.len() <= 3 * EACH {
            return cands.to_vec();
        }
        let n = class.pods.len() as i64;
        let scored: Vec<Scored> = cands
            .iter()
            .map(|&(p, t)| {
                let pool = &self.sched.pools[p];
                let price = price_under(pool.instance_type(t), &pool.requirements)
                    .map(|o| o.price)
                    .unwrap_or(f64::INFINITY);
                let free = &pool.types[t].free;
                let bound = self.resource_prices.value(free) / price;
                let seeds = class.request.copies_within(free).min(n) as f64;
                ((p, t), bound, seeds * class.value / price, price)
            })
            .collect();
        let mut picked: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut by = |key: &dyn Fn(&Scored) -> f64| {
            let mut v: Vec<&Scored> = scored.iter().collect();
            v.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.0.cmp(&b.0)));
            picked.extend(v.iter().take(EACH).map(|s| s.0));
        };
        by(&|s| s.1);
        by(&|s| s.2);
        by(&|s| -s.3);
        picked.into_iter().collect()
    }

    /// Open the nodes the batch's configuration LP buys whole: for each of its packings,
    /// cheapest per pod first, ⌊nodes⌋ nodes holding that mix, each realised by a capped
    /// [`Self::fill`] so every constraint is checked as in the greedy, and skipped when the
    /// mix cannot be realised exactly (zones, requirements, hostname rules the LP does not
    /// see). The greedy then packs what is left. Only in the variant `solve` tries with LP
    /// rounding; it keeps whichever plan is cheapest.
    fn round_lp(&mut self, classes: &mut [Class], order: &[usize]) {
        let mut packings = std::mem::take(&mut self.lp_packings);
        let shapes = std::mem::take(&mut self.lp_shapes);
        if shapes.len() != classes.len() {
            return;
        }
        packings.sort_by(|a, b| b.nodes.total_cmp(&a.nodes));
        let tiers = self.tiers();
        let mut groups: Vec<String> = Vec::new();
        let group_of: Vec<String> = classes
            .iter()
            .map(|c| format!("{:?}", c.constraints.requirements))
            .collect();
        for &c in order {
            if !groups.contains(&group_of[c]) {
                groups.push(group_of[c].clone());
            }
        }
        // Each class may only use its highest-weight tier that can launch it (as the
        // greedy's candidates).
        let tier_of: Vec<Vec<usize>> = classes
            .iter()
            .map(|class| {
                tiers
                    .iter()
                    .find(|tier| {
                        tier.iter().any(|p| {
                            class.compat.pools[*p].as_ref().is_ok_and(|set| {
                                set.iter().any(|t| self.within_limits(*p, t, None))
                            })
                        })
                    })
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        for packing in packings {
            if self.past_deadline() {
                return;
            }
            let (p, t) = packing.pool_type;
            let mut whole = (packing.nodes + 1e-6).floor() as usize;
            while whole > 0 {
                // Share each shape's count among its classes that still have pods and may
                // use this type in the highest-weight tier that has any candidate, within
                // one group of classes with the same requirements (the LP does not see
                // zone pins: a mix across zones could not share a node), first group that
                // can hold the whole mix.
                let mut found = None;
                for group in &groups {
                    let mut most = vec![0i64; classes.len()];
                    let mut left: Vec<i64> = packing
                        .per_shape
                        .iter()
                        .map(|n| (n + 1e-6).floor().max(0.0) as i64)
                        .collect();
                    let wanted: i64 = left.iter().sum();
                    for &c in order {
                        let shape = shapes[c];
                        if group_of[c] != *group || left[shape] <= 0 || classes[c].pods.is_empty() {
                            continue;
                        }
                        let allowed = tier_of[c].contains(&p)
                            && classes[c].compat.pools[p]
                                .as_ref()
                                .is_ok_and(|set| set.contains(t))
                            && self.within_limits(p, t, None);
                        if !allowed {
                            continue;
                        }
                        let k = left[shape].min(classes[c].pods.len() as i64);
                        most[c] = k;
                        left[shape] -= k;
                    }
                    let Some(seed) =
                        order
                            .iter()
                            .copied()
                            .filter(|c| most[*c] > 0)
                            .max_by(|a, b| {
                                (most[*a] as f64 * classes[*a].value)
                                    .total_cmp(&(most[*b] as f64 * classes[*b].value))
                                    .then(b.cmp(a))
                            })
                    else {
                        continue;
                    };
                    let listed: Vec<usize> =
                        order.iter().copied().filter(|c| most[*c] > 0).collect();
                    let fill = self.fill_capped(classes, &listed, seed, p, t, Some(&most));
                    let got: i64 = fill.picked.iter().map(|(_, k)| *k).sum();
                    if got > 0 && got >= wanted && fill.price.is_finite() {
                        found = Some(fill);
                        break;
                    }
                }
                let Some(fill) = found else {
                    break;
                };
                let before = self.bins.len();
                if !self.commit(classes, p, t, fill, whole) {
                    break;
                }
                let made = self.bins.len() - before;
                if made == 0 {
                    break;
                }
                whole = whole.saturating_sub(made);
            }
        }
    }

    pub(crate) fn pack(&mut self, classes: &mut [Class], order: &[usize]) {
        if self.lp_rounding {
            self.round_lp(classes, order);
        }
        let tiers = self.tiers();
        let mut memo: HashMap<usize, Memo> = HashMap::new();
        for &seed in order {
            while !classes[seed].pods.is_empty() {
                if self.past_deadline() {
                    return;
                }
                let cands = self.candidates(&classes[seed], &tiers);
                if cands.is_empty() {
                    let reason = self.no_candidate_reason(&classes[seed]);
                    let pods: Vec<usize> = classes[seed].pods.drain(..).collect();
                    self.fail(pods, &reason, false);
                    break;
                }
                let self_affine = classes[seed]
                    .node_rules
                    .needs
                    .iter()
                    .any(|g| classes[seed].node_rules.members.contains(g));
                let mut chosen: Option<(usize, usize, Fill)> = None;
                if let Some(m) = memo.get_mut(&seed)
                    && m.uses < 32
                    && cands.contains(&(m.pool, m.t))
                {
                    let f = if m.shaped {
                        let shaped = self.shaped_order(classes, order, seed, m.pool, m.t);
                        self.fill(classes, &shaped, seed, m.pool, m.t)
                    } else {
                        self.fill(classes, order, seed, m.pool, m.t)
                    };
                    if f.seed_count() > 0 && f.efficiency() >= 0.98 * m.efficiency {
                        m.uses += 1;
                        chosen = Some((m.pool, m.t, f));
                    }
                }
                if chosen.is_none() {
                    let mut best: Option<(usize, usize, Fill)> = None;
                    let mut best_shaped = false;
                    for (p, t) in self.shortlist(&classes[seed], &cands) {
                        let (f, shaped) = self.best_fill(classes, order, seed, p, t);
                        if f.seed_count() == 0 || !f.price.is_finite() {
                            continue;
                        }
                        let better = match &best {
                            None => true,
                            Some((_, _, b)) => {
                                if self_affine && f.seed_count() != b.seed_count() {
                                    f.seed_count() > b.seed_count()
                                } else {
                                    let (fe, be) = (f.efficiency(), b.efficiency());
                                    fe > be * (1.0 + 1e-9)
                                        || (fe >= be * (1.0 - 1e-9) && f.value > b.value)
                                }
                            }
                        };
                        if better {
                            best = Some((p, t, f));
                            best_shaped = shaped;
                        }
                    }
                    if let Some((p, t, f)) = &best {
                        memo.insert(
                            seed,
                            Memo {
                                pool: *p,
                                t: *t,
                                shaped: best_shaped,
                                efficiency: f.efficiency(),
                                uses: 0,
                            },
                        );
                    }
                    chosen = best;
                }
                let Some((p, t, fill)) = chosen else {
                    let needs = !classes[seed].node_rules.needs.is_empty();
                    let reason = if needs {
                        "pod affinity on kubernetes.io/hostname: no node with a pod matching the selector has room"
                    } else {
                        "no node can hold it alongside the pods its hostname rules (anti-affinity, spread, host ports) count"
                    };
                    let pods: Vec<usize> = classes[seed].pods.drain(..).collect();
                    self.fail(pods, reason, needs);
                    break;
                };
                if !self.commit(classes, p, t, fill, usize::MAX) {
                    let pods: Vec<usize> = classes[seed].pods.drain(..).collect();
                    self.fail(pods, "no set of instance types satisfies the NodePool's minValues for these pods", false);
                    break;
                }
            }
        }
    }

    /// Turn a fill into NodeClaim bins (repeated while the same packing is still available).
    fn commit(
        &mut self,
        classes: &mut [Class],
        pool: usize,
        t: usize,
        fill: Fill,
        max_nodes: usize,
    ) -> bool {
        let p = &self.sched.pools[pool];
        let mut set = p.types.iter().map(|_| true).collect::<Vec<bool>>();
        for (c, _) in &fill.picked {
            if let Ok(s) = &classes[*c].compat.pools[pool] {
                for (i, keep) in set.iter_mut().enumerate() {
                    *keep = *keep && s.contains(i);
                }
            }
        }
        let mut options: Vec<(f64, usize)> = set
            .iter()
            .enumerate()
            .filter(|(i, keep)| {
                **keep && fill.used.fits(&p.types[*i].free) && self.within_limits(pool, *i, None)
            })
            .filter_map(|(i, _)| {
                price_under(p.instance_type(i), &fill.requirements).map(|o| (o.price, i))
            })
            .collect();
        options.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| p.instance_type(a.1).name.cmp(&p.instance_type(b.1).name))
        });
        if options.is_empty() {
            options.push((fill.price, t));
        }
        let max = self.sched.options.max_instance_type_options.max(1);
        let mut kept: Vec<usize> = options.iter().take(max).map(|o| o.1).collect();
        // minValues: widen the list until every such requirement sees enough distinct values.
        for r in fill.requirements.iter().filter(|r| r.min_values.is_some()) {
            let need = r.min_values.unwrap_or(0);
            let distinct = |ts: &[usize]| -> usize {
                let vals: BTreeSet<String> = ts
                    .iter()
                    .filter_map(|t| p.instance_type(*t).labels.get(&r.key).cloned())
                    .collect();
                vals.len()
            };
            if distinct(&kept) < need {
                kept = options.iter().map(|o| o.1).collect();
                if distinct(&kept) < need {
                    return false;
                }
            }
        }
        // A launch may fall back to any option, so in a pool with limits only options no
        // larger than the cheapest (on every limited resource) are kept, and the cheapest's
        // capacity is what the limits count.
        let reserved = p.instance_type(kept[0]).capacity.clone();
        if self.limited[pool] {
            let first = kept[0];
            kept.retain(|o| {
                let cap = &p.instance_type(*o).capacity;
                *o == first
                    || p.pool
                        .limits
                        .keys()
                        .all(|name| name == "nodes" || cap.get(name) <= reserved.get(name))
            });
        }
        let chosen = kept[0];
        let bin = Bin {
            kind: BinKind::Claim {
                pool,
                options: Arc::new(kept),
                chosen,
            },
            requirements: fill.requirements.clone(),
            used: fill.used.clone(),
            capacity: p.types[chosen].free.clone(),
            counts: fill.counts.clone(),
            caps: fill.caps.clone(),
            pods: Vec::new(),
        };
        let repeatable = fill
            .picked
            .iter()
            .all(|(c, _)| classes[*c].node_rules.needs.is_empty());
        let mut first = true;
        let mut made = 0usize;
        loop {
            if made >= max_nodes {
                break;
            }
            made += 1;
            if !first {
                let enough = fill
                    .picked
                    .iter()
                    .all(|(c, k)| classes[*c].pods.len() as i64 >= *k);
                if !repeatable || !enough || !self.within_limits(pool, chosen, Some(&reserved)) {
                    break;
                }
            }
            first = false;
            let mut b = bin.clone();
            for (c, k) in &fill.picked {
                let class = &mut classes[*c];
                let placed = class.placed();
                for _ in 0..*k {
                    if let Some(pod) = class.pods.pop() {
                        b.pods.push(pod);
                        self.pod_info[pod] = Some(placed.clone());
                    }
                }
                for m in &class.node_rules.members {
                    self.global_counts[*m as usize] += *k;
                }
            }
            let (used, nodes) = &mut self.limits_used[pool];
            used.add(&reserved);
            *nodes += 1;
            self.bins.push(b);
        }
        true
    }
}

fn limits_text(limits: &std::collections::BTreeMap<String, i64>) -> String {
    limits
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use karpctl_cloud::{Catalogue, CatalogueOptions, InstanceType};

    use crate::checker::{Input, verify};
    use crate::{NodePool, Pod, Scheduler, pod};

    fn pool(names: &[&str]) -> NodePool {
        let cat = Catalogue::shipped(&CatalogueOptions {
            spot: false,
            ..CatalogueOptions::default()
        })
        .unwrap();
        if names.is_empty() {
            return NodePool::new("default", Arc::new(cat.instance_types.clone()));
        }
        let types: Vec<InstanceType> = names
            .iter()
            .map(|n| cat.get(n).unwrap_or_else(|| panic!("{n}")).clone())
            .collect();
        NodePool::new("default", Arc::new(types))
    }

    /// 40 GPU pods that leave CPU and memory on their nodes, and 400 plain pods of the
    /// benchmark's mixed sizes, some of which fit that room better than others.
    fn gpu_and_plain() -> Vec<Pod> {
        let mut pods = Vec::new();
        for i in 0..40 {
            pods.push(
                pod()
                    .name(&format!("gpu-{i}"))
                    .cpu("4")
                    .memory("16Gi")
                    .resource("nvidia.com/gpu", "1"),
            );
        }
        let cpus = ["100m", "250m", "500m", "1", "1500m", "2"];
        let mems = ["128Mi", "256Mi", "512Mi", "1Gi", "2Gi", "4Gi"];
        // Deterministic xorshift: a fixed, varied mix of the benchmark's sizes.
        let mut x: u64 = 42;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 6) as usize
        };
        for i in 0..400usize {
            let (c, m) = (next(), next());
            pods.push(pod().name(&format!("p-{i}")).cpu(cpus[c]).memory(mems[m]));
        }
        pods
    }

    fn checked(pools: &[NodePool], pods: &[Pod], results: &crate::Results) {
        let input = Input {
            pods,
            node_pools: pools,
            nodes: &[],
            daemon_sets: &[],
        };
        assert!(results.unschedulable.is_empty());
        assert_eq!(verify(&input, results), Vec::<String>::new());
    }

    #[test]
    fn lp_rounding_mixes_memory_heavy_pods_the_greedy_packs_apart() {
        // The greedy seeds nodes with one size at a time: the 12Gi pods fill memory-dense
        // types, and the 6Gi ones are left CPU-bound on them. The LP buys nodes holding a
        // mix that fills CPU and memory at once.
        let pools = vec![pool(&[
            "x2gd.2xlarge",
            "x2gd.4xlarge",
            "x2gd.8xlarge",
            "r6g.2xlarge",
            "r6g.4xlarge",
            "r6g.8xlarge",
            "m6g.4xlarge",
        ])];
        let scheduler = Scheduler::new(pools.clone(), Vec::new(), Vec::new());
        let pods: Vec<Pod> = (0..300)
            .map(|i| {
                pod()
                    .name(&format!("mem-{i}"))
                    .cpu("500m")
                    .memory(["6Gi", "8Gi", "12Gi"][i % 3])
            })
            .collect();
        let plain = scheduler.solve_with(&pods, false, false);
        let rounded = scheduler.solve_with(&pods, false, true);
        let chosen = scheduler.solve_within(&pods, std::time::Duration::from_secs(600));
        for r in [&plain, &rounded, &chosen] {
            checked(&pools, &pods, r);
        }
        assert!(
            rounded.total_price() < plain.total_price() - 1e-9,
            "rounded {} vs plain {}",
            rounded.total_price(),
            plain.total_price()
        );
        assert!(chosen.total_price() <= rounded.total_price() + 1e-9);
    }

    #[test]
    fn lp_rounding_keeps_each_node_in_one_zone_of_a_spread() {
        // Mixed sizes spread over the zones: the LP sees one class per size, the pods are
        // pinned to zones, so its mixes must be realised within one zone each.
        let pools = vec![pool(&[
            "t4g.micro",
            "t4g.small",
            "t4g.medium",
            "c6g.large",
            "c6g.xlarge",
            "m6g.large",
            "m6g.xlarge",
            "r6g.large",
            "r6g.xlarge",
        ])];
        let scheduler = Scheduler::new(pools.clone(), Vec::new(), Vec::new());
        let app = crate::LabelSelector::labels([("app", "z")]);
        let cpus = ["250m", "1500m", "500m"];
        let mems = ["256Mi", "3Gi", "1Gi"];
        let mut x: u64 = 42;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 3) as usize
        };
        let pods: Vec<Pod> = (0..300)
            .map(|i| {
                let (c, m) = (next(), next());
                pod()
                    .name(&format!("z-{i}"))
                    .label("app", "z")
                    .spread(karpctl_cloud::labels::ZONE, 1, app.clone())
                    .cpu(cpus[c])
                    .memory(mems[m])
            })
            .collect();
        // Rounding's nodes must respect the pins (the checker counts every spread), and the
        // chosen plan is never dearer than the plain one.
        let plain = scheduler.solve_with(&pods, false, false);
        let rounded = scheduler.solve_with(&pods, false, true);
        let shaped = scheduler.solve_with(&pods, true, true);
        let chosen = scheduler.solve_within(&pods, std::time::Duration::from_secs(600));
        for r in [&plain, &rounded, &shaped, &chosen] {
            checked(&pools, &pods, r);
        }
        assert!(chosen.total_price() <= plain.total_price() + 1e-9);
    }

    #[test]
    fn shaped_fills_lower_the_cost_of_gpu_nodes_with_plain_pods() {
        let pools = vec![pool(&[])];
        let scheduler = Scheduler::new(pools.clone(), Vec::new(), Vec::new());
        let pods = gpu_and_plain();
        let plain = scheduler.solve_with(&pods, false, false);
        let shaped = scheduler.solve_with(&pods, true, false);
        let chosen = scheduler.solve_within(&pods, std::time::Duration::from_secs(600));
        for r in [&plain, &shaped, &chosen] {
            checked(&pools, &pods, r);
        }
        assert!(
            shaped.total_price() < plain.total_price() - 1e-9,
            "shaped {} vs plain {}",
            shaped.total_price(),
            plain.total_price()
        );
        assert!(chosen.total_price() <= plain.total_price() + 1e-9);
    }

    #[test]
    fn the_chosen_plan_is_never_dearer_than_the_plain_one() {
        let pools = vec![pool(&[
            "m5.large",
            "m5.xlarge",
            "c5.large",
            "c5.2xlarge",
            "r5.large",
            "r5.xlarge",
            "t3.small",
            "t3.medium",
        ])];
        let scheduler = Scheduler::new(pools, Vec::new(), Vec::new());
        let cpus = ["100m", "250m", "500m", "1", "1500m", "2"];
        let mems = ["128Mi", "256Mi", "512Mi", "1Gi", "2Gi", "4Gi"];
        for seed in 0..8usize {
            let pods: Vec<Pod> = (0..60)
                .map(|i| {
                    let h = (i * 7 + seed * 13) ^ (i * i + seed);
                    pod()
                        .name(&format!("p-{i}"))
                        .cpu(cpus[h % cpus.len()])
                        .memory(mems[(h / 6) % mems.len()])
                })
                .collect();
            let plain = scheduler.solve_with(&pods, false, false);
            let chosen = scheduler.solve_within(&pods, std::time::Duration::from_secs(600));
            assert!(chosen.unschedulable.len() <= plain.unschedulable.len());
            for variant in [(false, true), (true, true)] {
                let other = scheduler.solve_with(&pods, variant.0, variant.1);
                assert!(chosen.total_price() <= other.total_price() + 1e-9);
            }
            assert!(
                chosen.total_price() <= plain.total_price() + 1e-9,
                "seed {seed}: {} > {}",
                chosen.total_price(),
                plain.total_price()
            );
        }
    }
}

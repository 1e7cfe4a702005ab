//! First fit: the plan every solve starts from, in milliseconds, and the floor the cost
//! improvements ([`crate::packing`]) must beat. It is the kube-scheduler's and upstream
//! Karpenter's way of placing pods: one pod at a time, biggest first, onto the first node
//! (existing, then planned) where every constraint holds *at that moment*, else onto a new
//! NodeClaim that keeps every instance type it still fits.
//!
//! Topology is checked as the kube-scheduler checks it: a spread constraint when the pod that
//! has it is placed, against the pods matching its selector already placed in each eligible
//! domain (pods without the constraint included); (anti-)affinity against the pods already
//! there, and existing or earlier pods' required anti-affinity against the incoming pod. A
//! pod placed later that merely matches a selector is not held to a constraint it does not
//! carry. Pods that fail wait for the next round (a pod with affinity may find its
//! counterpart placed by then), and are relaxed one preference at a time as upstream does.
//!
//! A new NodeClaim keeps only the instance types that are good value for this batch: of
//! the types its first pod fits, those holding, per dollar, at least [`EFFICIENT`] of the
//! most pods of the batch's average shape (CPU, memory, pod slots) any of them holds per
//! dollar. Without that, a claim that keeps every type grows into the largest, often a
//! premium one (metal, high-memory), and costs several times what its pods need.
//!
//! Every placement that can count for a domain-level rule (zone, capacity type, a
//! NodePool-defined key) is made on a node whose domain is known: a NodeClaim is narrowed to
//! one domain of such a key when a pod that counts there joins it, so the counts are exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use karpctl_cloud::Resources;

use crate::classes::{self, DomainRule, Relax};
use crate::packing::scaled;
use crate::pod::Pod;
use crate::requirements::{Requirement, Requirements};
use crate::scheduler::{
    Bin, BinKind, Bitset, Class, Results, Scheduler, Solve, Unschedulable, price_under,
};
use crate::taints::first_untolerated;

/// How close to the best pods-per-dollar of the batch's average shape a type must come for a
/// new NodeClaim to keep it.
const EFFICIENT: f64 = 0.9;

/// Candidate checks node merging may make on a first-fit plan, per pod.
const MERGE_WORK_PER_POD: usize = 100;

/// A class as first fit sees it.
struct FitClass {
    class: Class,
    /// Keys whose domain must be known when a pod of the class is placed: keys of its
    /// domain rules and of tracked selectors it matches.
    keys: Vec<String>,
    /// Tracked (group, key) pairs the class's pods count in.
    member_keys: Vec<(u32, String)>,
    /// Per key: the domains that count for the class (its eligible domains).
    domains: BTreeMap<String, BTreeSet<String>>,
    /// Bins before this index can never take a pod of the class (bins only fill up).
    cursor: usize,
    /// Whether the class's hostname rules ruled out any of those bins.
    capped: bool,
}

/// Why a pod does not fit a bin: `Never` cannot change as the plan grows (resources,
/// requirements, taints, hostname caps), `NotNow` may (domain counts, affinity).
enum Misfit {
    Never,
    /// Never, because of the class's hostname rules (anti-affinity, spread, host ports).
    Capped,
    NotNow,
}

/// A pod that could not be placed in a round, and whether waiting may help.
struct Miss {
    reason: String,
    retry: bool,
}

impl Scheduler {
    /// The first-fit plan (see the module docs); with `merge`, its NodeClaims are then
    /// merged ([`crate::merge`]) within a work budget proportional to the batch (so the
    /// plan stays deterministic).
    pub(crate) fn first_fit(&self, pods: &[Pod], merge: bool) -> Results {
        let mut solve = Solve::new(self, pods);
        solve.first_fit_all(merge)
    }
}

impl Solve<'_> {
    fn first_fit_all(&mut self, merge: bool) -> Results {
        let pods = self.pods;
        self.efficient = self.efficient_types();
        let mut queue: Vec<(usize, Relax)> =
            (0..pods.len()).map(|i| (i, Relax::default())).collect();
        queue.sort_by(|a, b| {
            let (x, y) = (&pods[a.0].requests, &pods[b.0].requests);
            y.cpu
                .cmp(&x.cpu)
                .then(y.memory.cmp(&x.memory))
                .then(a.0.cmp(&b.0))
        });
        let mut classes: Vec<FitClass> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut unschedulable = Vec::new();
        let mut waited: Vec<bool> = vec![false; pods.len()];
        // The class each pod was placed as (its last relaxation).
        let mut placed_as: Vec<Option<usize>> = vec![None; pods.len()];
        let mut rounds = 0usize;
        while !queue.is_empty() {
            rounds += 1;
            let mut next = Vec::new();
            let mut progress = false;
            let mut misses: Vec<(usize, Relax, Miss)> = Vec::new();
            for (pod, relax) in queue {
                let c = self.fit_class(pod, &relax, &mut classes, &mut index);
                match self.fit_pod(pod, &mut classes[c]) {
                    Ok(()) => {
                        progress = true;
                        placed_as[pod] = Some(c);
                    }
                    Err(miss) => misses.push((pod, relax, miss)),
                }
            }
            let last = rounds >= 4 * self.sched.options.max_passes.max(1) + 8;
            for (pod, relax, miss) in misses {
                if miss.retry && progress && !last {
                    // A pod with affinity may find its counterpart placed next round.
                    next.push((pod, relax));
                } else if miss.retry && !waited[pod] && !last {
                    waited[pod] = true;
                    next.push((pod, relax));
                } else if let Some(relaxed) = relax.next(&pods[pod]).filter(|_| !last) {
                    waited[pod] = false;
                    next.push((pod, relaxed));
                } else {
                    unschedulable.push(Unschedulable {
                        pod,
                        reason: miss.reason,
                    });
                }
            }
            queue = next;
        }
        if merge {
            self.merge_nodes_within(MERGE_WORK_PER_POD * self.pods.len());
        }
        self.widen_claims(&classes, &placed_as);
        let mut results = self.results();
        unschedulable.sort_by_key(|u| u.pod);
        results.unschedulable = unschedulable;
        results
    }

    fn fit_class(
        &mut self,
        pod: usize,
        relax: &Relax,
        classes: &mut Vec<FitClass>,
        index: &mut HashMap<String, usize>,
    ) -> usize {
        let c = classes::constraints(&self.pods[pod], relax);
        let key = classes::class_key(&self.pods[pod], &self.members[pod], &c);
        if let Some(i) = index.get(&key) {
            return *i;
        }
        let class = self.make_class(pod, c, key.clone());
        let member_keys: Vec<(u32, String)> = self
            .tracked
            .iter()
            .filter(|(g, _)| class.node_rules.members.contains(g))
            .cloned()
            .collect();
        let mut keys: Vec<String> = class
            .domain_rules
            .iter()
            .map(|r| r.key().to_string())
            .chain(member_keys.iter().map(|(_, k)| k.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let domains = keys
            .iter()
            .map(|k| (k.clone(), self.domains(&class, k)))
            .collect();
        classes.push(FitClass {
            class,
            keys,
            member_keys,
            domains,
            cursor: 0,
            capped: false,
        });
        index.insert(key, classes.len() - 1);
        classes.len() - 1
    }

    /// The domains of `key` a pod of the class may join now, best first; or why none.
    fn allowed_domains(&self, fc: &FitClass, key: &str) -> Result<Vec<String>, Miss> {
        let class = &fc.class;
        let eligible = &fc.domains[key];
        let mut allowed: Vec<String> = eligible
            .iter()
            .filter(|v| class.constraints.requirements.allows(key, v))
            .cloned()
            .collect();
        let before = allowed.len();
        for (g, _) in fc.member_keys.iter().filter(|(_, k)| k == key) {
            if let Some(excluded) = self.excluded.get(&(*g, key.to_string())) {
                allowed.retain(|v| excluded.get(v).is_none_or(|c| *c <= 0));
            }
        }
        if before > 0 && allowed.is_empty() {
            return Err(Miss {
                reason: format!(
                    "pod anti-affinity of other pods on {key}: every eligible domain has a pod whose required anti-affinity selects this one"
                ),
                retry: false,
            });
        }
        let mut prefer = None;
        for rule in class.domain_rules.iter().filter(|r| r.key() == key) {
            match rule {
                DomainRule::Spread {
                    group,
                    max_skew,
                    min_domains,
                    ..
                } => {
                    let member = i64::from(class.node_rules.members.contains(group));
                    let min = if (eligible.len() as u32) < min_domains.unwrap_or(1) {
                        0
                    } else {
                        eligible
                            .iter()
                            .map(|v| self.count(*group, key, v))
                            .min()
                            .unwrap_or(0)
                    };
                    allowed
                        .retain(|v| self.count(*group, key, v) + member - min <= *max_skew as i64);
                    prefer.get_or_insert(*group);
                    if allowed.is_empty() {
                        let counts: Vec<String> = eligible
                            .iter()
                            .map(|v| format!("{v}={}", self.count(*group, key, v)))
                            .collect();
                        let why = match min_domains {
                            Some(m) if (eligible.len() as u32) < *m => format!(
                                " (minDomains {m} but only {} eligible domains, so the minimum counts as 0)",
                                eligible.len()
                            ),
                            _ => String::new(),
                        };
                        return Err(Miss {
                            reason: format!(
                                "topology spread on {key}: every eligible domain would exceed maxSkew {max_skew}{why} (matching pods: {})",
                                if counts.is_empty() {
                                    "no domains".to_string()
                                } else {
                                    counts.join(", ")
                                }
                            ),
                            retry: false,
                        });
                    }
                }
                DomainRule::Affinity { group, .. } => {
                    let anywhere: i64 = self
                        .domain_counts
                        .get(&(*group, key.to_string()))
                        .map(|m| m.values().sum())
                        .unwrap_or(0);
                    let present: Vec<String> = allowed
                        .iter()
                        .filter(|v| self.count(*group, key, v) > 0)
                        .cloned()
                        .collect();
                    if present.is_empty() {
                        if !(class.node_rules.members.contains(group) && anywhere == 0) {
                            return Err(Miss {
                                reason: format!(
                                    "pod affinity on {key}: no eligible domain has a pod matching the selector"
                                ),
                                retry: true,
                            });
                        }
                    } else {
                        allowed = present;
                    }
                    prefer.get_or_insert(*group);
                }
                DomainRule::AntiAffinity { group, .. } => {
                    allowed.retain(|v| self.count(*group, key, v) == 0);
                    if allowed.is_empty() {
                        return Err(Miss {
                            reason: format!(
                                "pod anti-affinity on {key}: every eligible domain already has a matching pod"
                            ),
                            retry: false,
                        });
                    }
                }
            }
        }
        if allowed.is_empty() {
            return Err(Miss {
                reason: format!("no eligible {key} domain for this pod"),
                retry: false,
            });
        }
        let prefer = prefer.or_else(|| {
            fc.member_keys
                .iter()
                .find(|(_, k)| k == key)
                .map(|(g, _)| *g)
        });
        if let Some(g) = prefer {
            allowed.sort_by_key(|v| self.count(g, key, v));
        }
        Ok(allowed)
    }

    /// Hostname-level rules of the class against a bin's counts.
    fn hostname_fit(&self, class: &Class, bin: &Bin) -> Result<(), Misfit> {
        let rules = &class.node_rules;
        for g in &rules.needs {
            let present = bin.counts[*g as usize] > 0;
            let first = rules.members.contains(g) && self.global_counts[*g as usize] == 0;
            if !present && !first {
                return Err(Misfit::NotNow);
            }
        }
        if self.node_rule_limit(rules, &bin.counts, &bin.caps, 1, true) < 1 {
            return Err(Misfit::Capped);
        }
        Ok(())
    }

    /// Whether a pod of the class fits bin `b` now, and with which domain pins.
    fn fit_bin(
        &self,
        fc: &FitClass,
        allowed: &[(String, Vec<String>)],
        b: usize,
    ) -> Result<Vec<(String, String)>, Misfit> {
        let bin = &self.bins[b];
        let class = &fc.class;
        let c = &class.constraints;
        match &bin.kind {
            BinKind::Existing(n) => {
                let node = &self.sched.nodes[*n];
                if first_untolerated(&node.taints, &c.tolerations, c.prefer_no_schedule_tolerated)
                    .is_some()
                    || !c.requirements.matches_labels(&node.labels)
                    || !bin.used.plus(&class.request).fits(&bin.capacity)
                {
                    return Err(Misfit::Never);
                }
                self.hostname_fit(class, bin)?;
                for (key, values) in allowed {
                    match node.labels.get(key) {
                        Some(v) if values.contains(v) => {}
                        Some(_) => return Err(Misfit::NotNow),
                        None => {
                            if class.domain_rules.iter().any(|r| r.key() == key) {
                                return Err(Misfit::Never);
                            }
                        }
                    }
                }
                Ok(Vec::new())
            }
            BinKind::Claim { pool, options, .. } => {
                let Ok(set) = &class.compat.pools[*pool] else {
                    return Err(Misfit::Never);
                };
                if pinned_to_a_node(class) {
                    return Err(Misfit::Never);
                }
                if bin.requirements.intersects(&c.requirements).is_err() {
                    return Err(Misfit::Never);
                }
                let used = bin.used.plus(&class.request);
                let p = &self.sched.pools[*pool];
                let fits = |t: &usize| set.contains(*t) && used.fits(&p.types[*t].free);
                if !options.iter().any(fits) {
                    return Err(Misfit::Never);
                }
                self.hostname_fit(class, bin)?;
                let narrows = c.requirements.has_key(karpctl_cloud::labels::ZONE)
                    || c.requirements.has_key(karpctl_cloud::labels::CAPACITY_TYPE);
                if allowed.is_empty() && !narrows {
                    // Every option is offered under the claim's requirements already.
                    return Ok(Vec::new());
                }
                let fitting: Vec<usize> = options.iter().copied().filter(fits).collect();
                let mut requirements = bin.requirements.intersection(&c.requirements);
                let mut pins = Vec::new();
                for (key, values) in allowed {
                    let pinned = requirements
                        .get(key)
                        .filter(|r| r.len() == 1 && !r.is_complement());
                    let choice = match pinned {
                        Some(r) => {
                            let v = r.any().unwrap_or_default().to_string();
                            if !values.contains(&v) {
                                return Err(Misfit::NotNow);
                            }
                            v
                        }
                        None => {
                            let found = values.iter().find(|v| {
                                requirements.allows(key, v) && {
                                    let mut r = requirements.clone();
                                    r.add(Requirement::exactly(key, v));
                                    fitting
                                        .iter()
                                        .any(|t| price_under(p.instance_type(*t), &r).is_some())
                                }
                            });
                            match found {
                                Some(v) => v.clone(),
                                None => return Err(Misfit::NotNow),
                            }
                        }
                    };
                    requirements.add(Requirement::exactly(key, &choice));
                    pins.push((key.clone(), choice));
                }
                if !fitting
                    .iter()
                    .any(|t| price_under(p.instance_type(*t), &requirements).is_some())
                {
                    return Err(Misfit::NotNow);
                }
                Ok(pins)
            }
        }
    }

    /// Place one pod: the first bin that takes it, else a new NodeClaim.
    fn fit_pod(&mut self, pod: usize, fc: &mut FitClass) -> Result<(), Miss> {
        let mut allowed = Vec::new();
        for key in &fc.keys {
            allowed.push((key.clone(), self.allowed_domains(fc, key)?));
        }
        let mut prefix = true;
        let mut blocked = false;
        for b in fc.cursor..self.bins.len() {
            match self.fit_bin(fc, &allowed, b) {
                Ok(pins) => {
                    self.fit_place(pod, fc, b, &pins);
                    return Ok(());
                }
                Err(misfit @ (Misfit::Never | Misfit::Capped)) => {
                    fc.capped |= matches!(misfit, Misfit::Capped);
                    if prefix {
                        fc.cursor = b + 1;
                    }
                }
                Err(Misfit::NotNow) => {
                    prefix = false;
                    blocked = true;
                }
            }
        }
        if !fc.class.node_rules.needs.is_empty()
            && fc.class.node_rules.needs.iter().any(|g| {
                !(fc.class.node_rules.members.contains(g) && self.global_counts[*g as usize] == 0)
            })
        {
            return Err(Miss {
                reason: "pod affinity on kubernetes.io/hostname: no node with a pod matching the selector has room".to_string(),
                retry: true,
            });
        }
        if pinned_to_a_node(&fc.class) {
            let reason = if fc.capped {
                hostname_rules(&self.pods[pod])
            } else if blocked {
                "no node its node selector names has room that its topology and affinity rules allow".to_string()
            } else {
                "no node its node selector (kubernetes.io/hostname) names has room, and a new node cannot have that name".to_string()
            };
            return Err(Miss {
                reason,
                retry: blocked,
            });
        }
        match self.open_claim(fc, &allowed) {
            Ok(b) => {
                let pins = self.fit_bin(fc, &allowed, b).map_err(|_| Miss {
                    reason: "no new node can take it".to_string(),
                    retry: false,
                })?;
                self.fit_place(pod, fc, b, &pins);
                Ok(())
            }
            Err(reason) => {
                // Nodes were passed over for the domains the pod's rules allow: say which.
                let spread = fc.class.domain_rules.iter().find_map(|r| match r {
                    DomainRule::Spread { key, max_skew, .. } => Some((key, max_skew)),
                    _ => None,
                });
                let reason = match (blocked, spread) {
                    (true, Some((key, max_skew))) => {
                        let within = allowed
                            .iter()
                            .find(|(k, _)| k == key)
                            .map(|(_, v)| v.join(", "))
                            .unwrap_or_default();
                        format!(
                            "topology spread on {key}: only {within} stay within maxSkew {max_skew}, and no node there has room ({reason})"
                        )
                    }
                    _ => reason,
                };
                Err(Miss {
                    reason,
                    retry: false,
                })
            }
        }
    }

    /// Open an empty NodeClaim that can take a pod of the class, in the highest-weight
    /// NodePool that can, cheapest for the pod within a weight.
    fn open_claim(
        &mut self,
        fc: &FitClass,
        allowed: &[(String, Vec<String>)],
    ) -> Result<usize, String> {
        let class = &fc.class;
        let mut weights: Vec<i32> = self.sched.pools.iter().map(|p| p.pool.weight).collect();
        weights.sort_by(|a, b| b.cmp(a));
        weights.dedup();
        let mut blocked_by_domains = false;
        for w in weights {
            let mut best: Option<(f64, usize, Requirements, Vec<usize>)> = None;
            for (pool, p) in self.sched.pools.iter().enumerate() {
                if p.pool.weight != w {
                    continue;
                }
                let Ok(set) = &class.compat.pools[pool] else {
                    continue;
                };
                let fitting: Vec<usize> = set
                    .iter()
                    .filter(|t| {
                        class.request.fits(&p.types[*t].free) && self.within_limits(pool, *t, None)
                    })
                    .collect();
                // minValues needs the breadth of every type (see `results`).
                let min_values = p
                    .requirements
                    .iter()
                    .chain(class.constraints.requirements.iter())
                    .any(|r| r.min_values.is_some());
                let worth = |t: usize| {
                    if min_values {
                        1.0
                    } else {
                        self.efficient.get(pool).map_or(0.0, |e| e[t])
                    }
                };
                let top = fitting.iter().map(|t| worth(*t)).fold(0.0, f64::max);
                let types: Vec<usize> = fitting
                    .into_iter()
                    .filter(|t| worth(*t) >= EFFICIENT * top)
                    .collect();
                if types.is_empty() {
                    continue;
                }
                let mut requirements = p.requirements.intersection(&class.constraints.requirements);
                let mut ok = true;
                for (key, values) in allowed {
                    let found = values.iter().find(|v| {
                        requirements.allows(key, v) && {
                            let mut r = requirements.clone();
                            r.add(Requirement::exactly(key, v));
                            types
                                .iter()
                                .any(|t| price_under(p.instance_type(*t), &r).is_some())
                        }
                    });
                    match found {
                        Some(v) => requirements.add(Requirement::exactly(key, v)),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    blocked_by_domains = true;
                    continue;
                }
                let mut options: Vec<usize> = types
                    .into_iter()
                    .filter(|t| price_under(p.instance_type(*t), &requirements).is_some())
                    .collect();
                if options.is_empty() {
                    continue;
                }
                let cheapest = options
                    .iter()
                    .filter_map(|t| {
                        price_under(p.instance_type(*t), &requirements).map(|o| o.price)
                    })
                    .fold(f64::INFINITY, f64::min);
                // Largest first, so a fit check finds room at once.
                options.sort_by(|a, b| {
                    let (x, y) = (&p.types[*a].free, &p.types[*b].free);
                    y.cpu
                        .cmp(&x.cpu)
                        .then(y.memory.cmp(&x.memory))
                        .then(a.cmp(b))
                });
                if best.as_ref().is_none_or(|(price, ..)| cheapest < *price) {
                    best = Some((cheapest, pool, requirements, options));
                }
            }
            let Some((_, pool, requirements, options)) = best else {
                continue;
            };
            let p = &self.sched.pools[pool];
            let g = self.groups.len();
            let chosen = options[0];
            if self.limited[pool] {
                // A launch may fall back to any option: reserve the most any could take.
                let mut reserved = Resources::default();
                for t in &options {
                    let cap = &p.instance_type(*t).capacity;
                    for name in p.pool.limits.keys() {
                        if name != "nodes" && cap.get(name) > reserved.get(name) {
                            reserved.set(name, cap.get(name));
                        }
                    }
                }
                let (used, nodes) = &mut self.limits_used[pool];
                used.add(&reserved);
                *nodes += 1;
            }
            self.bins.push(Bin {
                kind: BinKind::Claim {
                    pool,
                    options: Arc::new(options),
                    chosen,
                },
                requirements,
                used: Resources::default(),
                capacity: p.types[chosen].free.clone(),
                counts: vec![0; g],
                caps: vec![u32::MAX; g],
                pods: Vec::new(),
            });
            return Ok(self.bins.len() - 1);
        }
        if blocked_by_domains {
            return Err(
                "no NodePool can launch a node in a domain its topology rules allow".to_string(),
            );
        }
        Err(self.no_candidate_reason(class))
    }

    /// Give every planned NodeClaim back each type of its pool that holds the pods it ended
    /// with. A claim opens with the types that are good value for the batch (see the module
    /// docs), which may leave out a smaller type its final pods fit: the claim then launches
    /// as that cheaper type, and a consolidation replacement is never a size too big.
    fn widen_claims(&mut self, classes: &[FitClass], placed_as: &[Option<usize>]) {
        for bin in &mut self.bins {
            let BinKind::Claim {
                pool,
                options,
                chosen,
            } = &mut bin.kind
            else {
                continue;
            };
            if bin.pods.is_empty() {
                continue;
            }
            let p = &self.sched.pools[*pool];
            let Some(mut sets) = bin
                .pods
                .iter()
                .map(|pod| placed_as[*pod])
                .collect::<Option<Vec<usize>>>()
            else {
                continue;
            };
            sets.sort_unstable();
            sets.dedup();
            let sets: Vec<&Bitset> = match sets
                .iter()
                .map(|c| classes[*c].class.compat.pools[*pool].as_ref().ok())
                .collect::<Option<Vec<_>>>()
            {
                Some(s) => s,
                None => continue,
            };
            let mut wide: Vec<(f64, usize)> = sets[0]
                .iter()
                .filter(|t| sets[1..].iter().all(|s| s.contains(*t)))
                .filter(|t| bin.used.fits(&p.types[*t].free))
                .filter_map(|t| {
                    price_under(p.instance_type(t), &bin.requirements).map(|o| (o.price, t))
                })
                .collect();
            if wide.is_empty() {
                continue;
            }
            wide.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *chosen = wide[0].1;
            bin.capacity = p.types[*chosen].free.clone();
            *options = Arc::new(wide.into_iter().map(|(_, t)| t).collect());
        }
    }

    /// Per pool and type: how many pods of the batch's average shape it holds per dollar
    /// (see the module docs).
    fn efficient_types(&self) -> Vec<Vec<f64>> {
        let mut average = Resources::default();
        for p in self.pods {
            average.add(&classes::node_request(p));
        }
        let n = self.pods.len().max(1) as f64;
        let dims = ["cpu", "memory", "pods"];
        let share: Vec<f64> = dims.iter().map(|d| scaled(&average, d) / n).collect();
        let per_dollar: Vec<Vec<f64>> = self
            .sched
            .pools
            .iter()
            .map(|pool| {
                (0..pool.types.len())
                    .map(|t| {
                        let Some(o) = price_under(pool.instance_type(t), &pool.requirements) else {
                            return 0.0;
                        };
                        // How many average pods the type holds (extended resources aside:
                        // pods needing them only fit the types that have them anyway).
                        let held = dims
                            .iter()
                            .zip(&share)
                            .filter(|(_, s)| **s > 0.0)
                            .map(|(d, s)| scaled(&pool.types[t].free, d).max(0.0) / s)
                            .fold(f64::INFINITY, f64::min);
                        if !held.is_finite() || o.price <= 0.0 {
                            return 0.0;
                        }
                        held / o.price
                    })
                    .collect()
            })
            .collect();
        per_dollar
    }

    /// Record pod `pod` of the class on bin `b`, narrowed by `pins`.
    fn fit_place(&mut self, pod: usize, fc: &mut FitClass, b: usize, pins: &[(String, String)]) {
        let class = &mut fc.class;
        let mut placed = class.placed();
        if !pins.is_empty() {
            // Node merging may move the pod; its domains stay as its rules were checked.
            let mut pinned = crate::scheduler::Placed::clone(&placed);
            for (k, v) in pins {
                pinned
                    .constraints
                    .requirements
                    .add(Requirement::exactly(k, v));
            }
            placed = Arc::new(pinned);
        }
        let bin = &mut self.bins[b];
        bin.used.add(&class.request);
        for m in &class.node_rules.members {
            bin.counts[*m as usize] += 1;
            self.global_counts[*m as usize] += 1;
        }
        for (g, cap) in &class.node_rules.caps {
            let slot = &mut bin.caps[*g as usize];
            *slot = (*slot).min(*cap);
        }
        bin.pods.push(pod);
        self.pod_info[pod] = Some(placed);
        if let BinKind::Claim {
            pool,
            options,
            chosen,
        } = &mut bin.kind
        {
            bin.requirements.add_all(&class.constraints.requirements);
            for (k, v) in pins {
                bin.requirements.add(Requirement::exactly(k, v));
            }
            let p = &self.sched.pools[*pool];
            let set = class.compat.pools[*pool].as_ref().ok();
            let kept: Vec<usize> = options
                .iter()
                .copied()
                .filter(|t| {
                    set.is_some_and(|s| s.contains(*t))
                        && bin.used.fits(&p.types[*t].free)
                        && price_under(p.instance_type(*t), &bin.requirements).is_some()
                })
                .collect();
            // The type the claim would launch as now: the cheapest that holds its pods (what
            // node merging prices; fit checks use every option).
            let cheapest = kept
                .iter()
                .filter_map(|t| {
                    price_under(p.instance_type(*t), &bin.requirements).map(|o| (o.price, *t))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if let Some((_, t)) = cheapest {
                *chosen = t;
                bin.capacity = p.types[t].free.clone();
            }
            *options = Arc::new(kept);
        }
        // Domain counts and the domains this pod's required anti-affinity now excludes.
        let domain_of = |bin: &Bin, key: &str, sched: &Scheduler| -> Option<String> {
            match &bin.kind {
                BinKind::Existing(n) => sched.nodes[*n].labels.get(key).cloned(),
                BinKind::Claim { .. } => bin
                    .requirements
                    .get(key)
                    .filter(|r| r.len() == 1 && !r.is_complement())
                    .and_then(|r| r.any().map(str::to_string)),
            }
        };
        for (g, key) in &fc.member_keys {
            if let Some(v) = domain_of(&self.bins[b], key, self.sched) {
                *self
                    .domain_counts
                    .entry((*g, key.clone()))
                    .or_default()
                    .entry(v)
                    .or_default() += 1;
            }
        }
        for rule in &fc.class.domain_rules {
            if let DomainRule::AntiAffinity {
                key,
                group,
                required: true,
            } = rule
                && let Some(v) = domain_of(&self.bins[b], key, self.sched)
            {
                *self
                    .excluded
                    .entry((*group, key.clone()))
                    .or_default()
                    .entry(v)
                    .or_default() += 1;
            }
        }
    }
}

/// Whether the class's node selector or affinity names hostnames: only an existing node can
/// have them (a new NodeClaim's name is not known when it is planned).
fn pinned_to_a_node(class: &Class) -> bool {
    class
        .constraints
        .requirements
        .get(karpctl_cloud::labels::HOSTNAME)
        .is_some_and(|r| !r.is_complement())
}

/// What a pod's hostname rules are, to name them when every node it may use is ruled out.
fn hostname_rules(pod: &Pod) -> String {
    let host = karpctl_cloud::labels::HOSTNAME;
    let mut rules = Vec::new();
    if pod.anti_affinity.iter().any(|t| t.topology_key == host) {
        rules.push("pod anti-affinity");
    }
    if pod.topology_spread.iter().any(|s| s.topology_key == host) {
        rules.push("topology spread");
    }
    if !pod.host_ports.is_empty() {
        rules.push("host ports");
    }
    if rules.is_empty() {
        rules.push("other pods' anti-affinity");
    }
    format!(
        "{} on {host}: every node it may use (its node selector names existing nodes only) already holds a pod they count",
        rules.join(", ")
    )
}

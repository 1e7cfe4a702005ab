//! Zone-level topology: spread constraints, pod affinity and anti-affinity on any key but
//! the hostname (zone, capacity type, or a NodePool-defined label) are decided before
//! packing by pinning each pod to a domain (`key In [value]`). Pinning one pod at a time
//! against running per-domain counts keeps every spread within maxSkew and every
//! (anti-)affinity satisfied, and leaves the packer a plain requirement to honour.
//!
//! Pods that merely match a tracked selector are pinned too (balanced), so later packing
//! cannot skew the counts the constrained pods were checked against.

use std::collections::{BTreeMap, BTreeSet};

use karpctl_cloud::labels;

use crate::classes::DomainRule;
use crate::requirements::Requirement;
use crate::scheduler::{BinKind, Class, Solve, SpreadRecord};
use crate::taints::first_untolerated;

impl Solve<'_> {
    pub(crate) fn pin_domains(&mut self, classes: Vec<Class>) -> Vec<Class> {
        let mut out = Vec::new();
        let mut todo = Vec::new();
        for c in classes {
            let member_keys: Vec<(u32, String)> = self
                .tracked
                .iter()
                .filter(|(g, _)| c.node_rules.members.contains(g))
                .cloned()
                .collect();
            if c.domain_rules.is_empty() && member_keys.is_empty() {
                out.push(c);
            } else {
                todo.push((c, member_keys));
            }
        }
        todo.sort_by_key(|(c, _)| !c.domain_rules.is_empty());
        for (c, member_keys) in todo {
            out.extend(self.pin_class(c, &member_keys));
        }
        out
    }

    pub(crate) fn count(&self, group: u32, key: &str, value: &str) -> i64 {
        self.domain_counts
            .get(&(group, key.to_string()))
            .and_then(|m| m.get(value))
            .copied()
            .unwrap_or(0)
    }

    fn pin_class(&mut self, class: Class, member_keys: &[(u32, String)]) -> Vec<Class> {
        let mut keys: Vec<String> = class
            .domain_rules
            .iter()
            .map(|r| r.key().to_string())
            .collect();
        keys.extend(member_keys.iter().map(|(_, k)| k.clone()));
        keys.sort();
        keys.dedup();
        let domains: BTreeMap<String, BTreeSet<String>> = keys
            .iter()
            .map(|k| (k.clone(), self.domains(&class, k)))
            .collect();
        let mut subclasses: BTreeMap<Vec<(String, String)>, Vec<usize>> = BTreeMap::new();
        for &pod in class.pods.iter().rev() {
            let mut pins = Vec::new();
            let mut failed: Option<(String, bool)> = None;
            for key in &keys {
                let eligible = &domains[key];
                let mut candidates: Vec<String> = eligible
                    .iter()
                    .filter(|v| class.constraints.requirements.allows(key, v))
                    .cloned()
                    .collect();
                // Domains holding a pod whose required anti-affinity selects this one.
                let before = candidates.len();
                for (g, _) in member_keys.iter().filter(|(_, k)| k == key) {
                    if let Some(excluded) = self.excluded.get(&(*g, key.clone())) {
                        candidates.retain(|v| excluded.get(v).is_none_or(|c| *c <= 0));
                    }
                }
                if before > 0 && candidates.is_empty() {
                    failed = Some((
                        format!(
                            "pod anti-affinity of other pods on {key}: every eligible domain has a pod whose required anti-affinity selects this one"
                        ),
                        false,
                    ));
                    break;
                }
                let mut prefer = None;
                for rule in class.domain_rules.iter().filter(|r| r.key() == key) {
                    match rule {
                        DomainRule::Spread {
                            group,
                            max_skew,
                            min_domains,
                            anyway,
                            ..
                        } => {
                            if !*anyway {
                                self.spreads
                                    .entry((*group, key.clone()))
                                    .or_insert_with(|| (*max_skew, *min_domains, BTreeSet::new()))
                                    .2
                                    .extend(eligible.iter().cloned());
                            }
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
                            candidates.retain(|v| {
                                self.count(*group, key, v) + member - min <= *max_skew as i64
                            });
                            prefer.get_or_insert(*group);
                            if candidates.is_empty() {
                                let counts: Vec<String> = eligible
                                    .iter()
                                    .map(|v| format!("{v}={}", self.count(*group, key, v)))
                                    .collect();
                                failed = Some((
                                    format!(
                                        "topology spread on {key}: every eligible domain would exceed maxSkew {max_skew} (matching pods: {})",
                                        if counts.is_empty() {
                                            "no domains".to_string()
                                        } else {
                                            counts.join(", ")
                                        }
                                    ),
                                    false,
                                ));
                            }
                        }
                        DomainRule::Affinity { group, .. } => {
                            let present: Vec<String> = candidates
                                .iter()
                                .filter(|v| self.count(*group, key, v) > 0)
                                .cloned()
                                .collect();
                            let anywhere: i64 = self
                                .domain_counts
                                .get(&(*group, key.clone()))
                                .map(|m| m.values().sum())
                                .unwrap_or(0);
                            if present.is_empty() {
                                if !(class.node_rules.members.contains(group) && anywhere == 0) {
                                    failed = Some((
                                        format!(
                                            "pod affinity on {key}: no eligible domain has a pod matching the selector"
                                        ),
                                        true,
                                    ));
                                }
                            } else {
                                candidates = present;
                            }
                            prefer.get_or_insert(*group);
                        }
                        DomainRule::AntiAffinity { group, .. } => {
                            candidates.retain(|v| self.count(*group, key, v) == 0);
                            if candidates.is_empty() {
                                failed = Some((
                                    format!(
                                        "pod anti-affinity on {key}: every eligible domain already has a matching pod"
                                    ),
                                    false,
                                ));
                            }
                        }
                    }
                    if failed.is_some() {
                        break;
                    }
                }
                if failed.is_some() {
                    break;
                }
                if candidates.is_empty() {
                    failed = Some((format!("no eligible {key} domain for this pod"), false));
                    break;
                }
                let prefer =
                    prefer.or_else(|| member_keys.iter().find(|(_, k)| k == key).map(|(g, _)| *g));
                let chosen = match prefer {
                    Some(g) => candidates
                        .iter()
                        .min_by_key(|v| self.count(g, key, v))
                        .cloned()
                        .expect("non-empty"),
                    None => candidates[0].clone(),
                };
                pins.push((key.clone(), chosen));
            }
            if let Some((reason, retry)) = failed {
                self.fail([pod], &reason, retry);
                continue;
            }
            for rule in &class.domain_rules {
                if let DomainRule::AntiAffinity {
                    key,
                    group,
                    required: true,
                } = rule
                    && let Some((_, value)) = pins.iter().find(|(k, _)| k == key)
                {
                    *self
                        .excluded
                        .entry((*group, key.clone()))
                        .or_default()
                        .entry(value.clone())
                        .or_default() += 1;
                }
            }
            for (key, value) in &pins {
                let groups: Vec<u32> = self
                    .tracked
                    .iter()
                    .filter(|(g, k)| k == key && class.node_rules.members.contains(g))
                    .map(|(g, _)| *g)
                    .collect();
                for g in groups {
                    *self
                        .domain_counts
                        .entry((g, key.clone()))
                        .or_default()
                        .entry(value.clone())
                        .or_default() += 1;
                }
            }
            subclasses.entry(pins).or_default().push(pod);
        }
        let mut out = Vec::new();
        for (pins, mut pods) in subclasses {
            let mut constraints = class.constraints.clone();
            for (k, v) in &pins {
                constraints.requirements.add(Requirement::exactly(k, v));
            }
            let compat = self.class_compat(&constraints, &class.request);
            pods.reverse();
            out.push(Class {
                pods,
                constraints,
                request: class.request.clone(),
                node_rules: class.node_rules.clone(),
                domain_rules: Vec::new(),
                compat,
                value: 0.0,
                key: format!("{}\u{1}{pins:?}", class.key),
                placed: None,
            });
        }
        out
    }

    /// The values of `key` that count as domains for this class: existing compatible nodes'
    /// labels and what compatible NodePools and their instance types could launch, judged by
    /// the pod's required constraints only (preferences never shrink the set of domains).
    pub(crate) fn domains(&mut self, class: &Class, key: &str) -> BTreeSet<String> {
        let mut c = class.constraints.clone();
        c.requirements = c.required.clone();
        // Pins from earlier keys stay: they are requirements the pod now has.
        for r in class.constraints.requirements.iter() {
            if r.key != key
                && class.constraints.required.get(&r.key).is_none()
                && r.len() == 1
                && pinned_key(&r.key)
            {
                c.requirements.add(r.clone());
            }
        }
        let compat = self.class_compat(&c, &class.request);
        let mut out = BTreeSet::new();
        for n in &self.sched.nodes {
            let Some(v) = n.labels.get(key) else { continue };
            let tolerated =
                first_untolerated(&n.taints, &c.tolerations, c.prefer_no_schedule_tolerated)
                    .is_none();
            let matches = c.requirements.iter().filter(|r| r.key != key).all(|r| {
                match n.labels.get(&r.key) {
                    Some(v) => r.has(v),
                    None => r.allows_absent(),
                }
            });
            if tolerated && matches {
                out.insert(v.clone());
            }
        }
        for (p, pool) in self.sched.pools.iter().enumerate() {
            let Ok(set) = &compat.pools[p] else { continue };
            let combined = pool.requirements.intersection(&c.requirements);
            match key {
                labels::ZONE | labels::CAPACITY_TYPE => {
                    for t in set.iter() {
                        for o in &pool.instance_type(t).offerings {
                            if !o.available {
                                continue;
                            }
                            if key == labels::ZONE
                                && combined.allows(labels::CAPACITY_TYPE, o.capacity_type.as_str())
                            {
                                out.insert(o.zone.clone());
                            }
                            if key == labels::CAPACITY_TYPE
                                && combined.allows(labels::ZONE, &o.zone)
                            {
                                out.insert(o.capacity_type.as_str().to_string());
                            }
                        }
                    }
                }
                _ => match combined.get(key).filter(|r| !r.is_complement()) {
                    Some(r) => out.extend(r.values().map(str::to_string)),
                    None => {
                        for t in set.iter() {
                            if let Some(v) = pool.instance_type(t).labels.get(key) {
                                out.insert(v.clone());
                            }
                        }
                    }
                },
            }
        }
        out.retain(|v| c.requirements.allows(key, v));
        out
    }
}

impl Solve<'_> {
    /// Pods pinned to a domain may still fail to be placed (limits, capacity), which can
    /// leave the domains they were balanced against ahead by more than maxSkew. Take pods
    /// carrying the spread back out of the fullest domain until every DoNotSchedule spread
    /// holds again as the kube-scheduler checks it (the carriers and the pods already running
    /// in a domain, against every matching pod in the emptiest; see [`crate::checker`]), as
    /// it would have refused them; they are reported unschedulable.
    pub(crate) fn repair_spreads(&mut self) -> Vec<(usize, String)> {
        let mut removed = Vec::new();
        let spreads: Vec<((u32, String), SpreadRecord)> = self
            .spreads
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((group, key), (max_skew, min_domains, eligible)) in spreads {
            loop {
                let mut counts: BTreeMap<String, i64> =
                    eligible.iter().map(|d| (d.clone(), 0)).collect();
                // Per domain: the pods running there and the carriers placed there.
                let mut own: BTreeMap<String, i64> = BTreeMap::new();
                // (domain) -> movable (bin, pod) placed by this solve
                let mut movable: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
                for (b, bin) in self.bins.iter().enumerate() {
                    let domain = match &bin.kind {
                        BinKind::Existing(n) => self.sched.nodes[*n].labels.get(&key).cloned(),
                        BinKind::Claim { .. } => bin.requirements.get(&key).and_then(|r| {
                            if r.len() == 1 {
                                r.any().map(str::to_string)
                            } else {
                                None
                            }
                        }),
                    };
                    let Some(domain) = domain else { continue };
                    let Some(count) = counts.get_mut(&domain) else {
                        continue;
                    };
                    if let BinKind::Existing(n) = &bin.kind {
                        let g = &self.groups.keys[group as usize];
                        *count += self.sched.nodes[*n]
                            .pods
                            .iter()
                            .filter(|p| g.contains(p))
                            .count() as i64;
                    }
                    let mut carried = 0;
                    for &pod in &bin.pods {
                        if self.members[pod].contains(&group) {
                            *count += 1;
                            if self.carries(pod, group, &key) {
                                carried += 1;
                                movable.entry(domain.clone()).or_default().push((b, pod));
                            }
                        }
                    }
                    // Existing pods are counted in both; placed non-carriers only in `counts`.
                    *own.entry(domain.clone()).or_default() += carried;
                    if let BinKind::Existing(n) = &bin.kind {
                        let g = &self.groups.keys[group as usize];
                        *own.entry(domain.clone()).or_default() += self.sched.nodes[*n]
                            .pods
                            .iter()
                            .filter(|p| g.contains(p))
                            .count()
                            as i64;
                    }
                }
                let min = if (counts.len() as u32) < min_domains.unwrap_or(1) {
                    0
                } else {
                    counts.values().copied().min().unwrap_or(0)
                };
                let worst = own
                    .iter()
                    .filter(|(d, c)| **c - min > max_skew as i64 && movable.contains_key(*d))
                    .max_by_key(|(_, c)| **c)
                    .map(|(d, _)| d.clone());
                let Some(domain) = worst else { break };
                let Some(&(b, pod)) = movable[&domain].last() else {
                    break;
                };
                self.unplace(b, pod);
                removed.push((
                    pod,
                    format!(
                        "topology spread on {key}: pods balanced into other domains could not be placed, so this one would exceed maxSkew {max_skew}"
                    ),
                ));
            }
        }
        removed
    }

    /// Whether placed pod `pod` carries a DoNotSchedule spread on `key` counting `group`.
    fn carries(&self, pod: usize, group: u32, key: &str) -> bool {
        let p = &self.pods[pod];
        self.pod_info[pod].as_ref().is_some_and(|info| {
            info.constraints.spreads.iter().any(|s| {
                s.topology_key == key
                    && s.when_unsatisfiable == crate::pod::WhenUnsatisfiable::DoNotSchedule
                    && self
                        .groups
                        .get(&crate::classes::GroupKey::for_spread(&p.namespace, s))
                        == Some(group)
            })
        })
    }

    fn unplace(&mut self, b: usize, pod: usize) {
        let request = crate::classes::node_request(&self.pods[pod]);
        self.pod_info[pod] = None;
        let bin = &mut self.bins[b];
        bin.pods.retain(|p| *p != pod);
        bin.used.sub(&request);
        for m in &self.members[pod] {
            bin.counts[*m as usize] = bin.counts[*m as usize].saturating_sub(1);
            self.global_counts[*m as usize] -= 1;
        }
        if let BinKind::Claim {
            pool,
            options,
            chosen,
        } = &mut bin.kind
        {
            // A smaller load may fit a cheaper option.
            let p = &self.sched.pools[*pool];
            if let Some(cheaper) = options
                .iter()
                .copied()
                .find(|t| bin.used.fits(&p.types[*t].free))
            {
                *chosen = cheaper;
                bin.capacity = p.types[cheaper].free.clone();
            }
        }
    }
}

/// Keys this module pins; always zone and capacity type, plus whatever a rule names.
fn pinned_key(key: &str) -> bool {
    key == labels::ZONE || key == labels::CAPACITY_TYPE
}

//! Node merging before launch: once the batch is packed, try to empty the least-utilized
//! planned NodeClaims by moving their pods into room left on other nodes (existing ones, or
//! planned ones, possibly stepping up to a bigger option of theirs), keeping a move only if
//! the plan gets cheaper. Upstream Karpenter's delete consolidation does this to running
//! nodes; here it is done to the plan, so the leftovers of greedy packing never get
//! launched. ("Consolidation" names the controller's disruption feature; this is not it.)

use std::collections::BTreeSet;

use crate::scheduler::{Bin, BinKind, Placed, Solve, price_under};
use crate::taints::first_untolerated;

/// Bounds the candidate checks so very large plans stay fast.
const WORK_BUDGET: usize = 3_000_000;

impl Solve<'_> {
    fn bin_price(&self, b: usize) -> f64 {
        match &self.bins[b].kind {
            BinKind::Existing(_) => 0.0,
            BinKind::Claim { pool, chosen, .. } => {
                let it = self.sched.pools[*pool].instance_type(*chosen);
                price_under(it, &self.bins[b].requirements)
                    .map(|o| o.price)
                    .unwrap_or(f64::INFINITY)
            }
        }
    }

    fn utilization(&self, b: usize) -> f64 {
        let bin = &self.bins[b];
        let ratio = |used: i64, cap: i64| {
            if cap > 0 {
                used as f64 / cap as f64
            } else {
                1.0
            }
        };
        ratio(bin.used.cpu, bin.capacity.cpu).max(ratio(bin.used.memory, bin.capacity.memory))
    }

    /// The price increase of putting one more pod of `info` on bin `b`, if it may go there.
    fn move_cost(&self, b: usize, info: &Placed) -> Option<f64> {
        let bin = &self.bins[b];
        let c = &info.constraints;
        if self.node_rule_limit(&info.node_rules, &bin.counts, &bin.caps, 1, false) < 1 {
            return None;
        }
        let used = bin.used.plus(&info.request);
        match &bin.kind {
            BinKind::Existing(n) => {
                let node = &self.sched.nodes[*n];
                let ok = used.fits(&bin.capacity)
                    && first_untolerated(
                        &node.taints,
                        &c.tolerations,
                        c.prefer_no_schedule_tolerated,
                    )
                    .is_none()
                    && c.requirements.matches_labels(&node.labels);
                ok.then_some(0.0)
            }
            BinKind::Claim {
                pool,
                options,
                chosen,
            } => {
                let Ok(set) = &info.compat.pools[*pool] else {
                    return None;
                };
                if bin.requirements.intersects(&c.requirements).is_err() {
                    return None;
                }
                let p = &self.sched.pools[*pool];
                let narrows = c.requirements.keys().any(|k| {
                    k == karpctl_cloud::labels::ZONE || k == karpctl_cloud::labels::CAPACITY_TYPE
                });
                let merged;
                let requirements = if narrows {
                    merged = bin.requirements.intersection(&c.requirements);
                    &merged
                } else {
                    &bin.requirements
                };
                let now = self.bin_price(b);
                if set.contains(*chosen) && used.fits(&p.types[*chosen].free) {
                    let price = price_under(p.instance_type(*chosen), requirements)?.price;
                    return Some(price - now);
                }
                if self.limited[*pool] {
                    return None;
                }
                options
                    .iter()
                    .filter(|t| set.contains(**t) && used.fits(&p.types[**t].free))
                    .filter_map(|t| price_under(p.instance_type(*t), requirements).map(|o| o.price))
                    .min_by(f64::total_cmp)
                    .map(|price| price - now)
            }
        }
    }

    fn move_into(&mut self, b: usize, pod: usize, info: &Placed) {
        let bin = &mut self.bins[b];
        bin.used.add(&info.request);
        for m in &info.node_rules.members {
            bin.counts[*m as usize] += 1;
        }
        for (g, cap) in &info.node_rules.caps {
            let slot = &mut bin.caps[*g as usize];
            *slot = (*slot).min(*cap);
        }
        bin.pods.push(pod);
        if let BinKind::Claim {
            pool,
            options,
            chosen,
        } = &mut bin.kind
        {
            bin.requirements.add_all(&info.constraints.requirements);
            let p = &self.sched.pools[*pool];
            let set = info.compat.pools[*pool]
                .as_ref()
                .expect("checked by move_cost");
            let mut kept: Vec<(f64, usize)> = options
                .iter()
                .filter(|t| set.contains(**t) && bin.used.fits(&p.types[**t].free))
                .filter_map(|t| {
                    price_under(p.instance_type(*t), &bin.requirements).map(|o| (o.price, *t))
                })
                .collect();
            kept.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            if let Some((_, cheapest)) = kept.first() {
                *chosen = *cheapest;
                bin.capacity = p.types[*cheapest].free.clone();
            }
            *options = std::sync::Arc::new(kept.into_iter().map(|(_, t)| t).collect());
        }
    }

    /// Empty whichever planned NodeClaims can be emptied for less than they cost.
    pub(crate) fn merge_nodes(&mut self) {
        self.merge_nodes_within(WORK_BUDGET);
    }

    /// [`Self::merge_nodes`] with at most `budget` candidate checks.
    pub(crate) fn merge_nodes_within(&mut self, budget: usize) {
        let needed: BTreeSet<u32> = self
            .pod_info
            .iter()
            .flatten()
            .flat_map(|i| i.node_rules.needs.iter().copied())
            .collect();
        let mut claims: Vec<usize> = (0..self.bins.len())
            .filter(|b| {
                matches!(self.bins[*b].kind, BinKind::Claim { .. })
                    && !self.bins[*b].pods.is_empty()
            })
            .collect();
        claims.sort_by(|a, b| {
            self.utilization(*a)
                .total_cmp(&self.utilization(*b))
                .then(a.cmp(b))
        });
        let mut work = 0usize;
        for a in claims {
            if work > budget || self.past_deadline() {
                break;
            }
            let pods = self.bins[a].pods.clone();
            let movable = pods.iter().all(|p| {
                self.pod_info[*p].as_ref().is_some_and(|i| {
                    i.node_rules.needs.is_empty()
                        && !i.node_rules.members.iter().any(|m| needed.contains(m))
                })
            });
            if pods.is_empty() || !movable {
                continue;
            }
            let price = self.bin_price(a);
            let mut order = pods.clone();
            order.sort_by_key(|p| {
                std::cmp::Reverse(
                    self.pod_info[*p]
                        .as_ref()
                        .map(|i| (i.request.cpu, i.request.memory)),
                )
            });
            let mut saved: Vec<(usize, Bin)> = Vec::new();
            let mut extra = 0.0;
            let mut ok = true;
            for pod in order {
                let info = self.pod_info[pod].clone().expect("movable pods have info");
                let mut best: Option<(f64, usize)> = None;
                for b in 0..self.bins.len() {
                    if b == a
                        || (self.bins[b].pods.is_empty()
                            && matches!(self.bins[b].kind, BinKind::Claim { .. }))
                    {
                        continue;
                    }
                    work += 1;
                    if let Some(delta) = self.move_cost(b, &info)
                        && best.is_none_or(|(d, _)| delta < d - 1e-12)
                    {
                        best = Some((delta, b));
                        if delta <= 0.0 {
                            break;
                        }
                    }
                }
                match best {
                    Some((delta, b)) if extra + delta < price - 1e-9 => {
                        if !saved.iter().any(|(i, _)| *i == b) {
                            saved.push((b, self.bins[b].clone()));
                        }
                        self.move_into(b, pod, &info);
                        extra += delta;
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                let bin = &mut self.bins[a];
                bin.pods.clear();
                bin.used = Default::default();
                bin.counts.iter_mut().for_each(|c| *c = 0);
            } else {
                for (b, bin) in saved.into_iter().rev() {
                    self.bins[b] = bin;
                }
            }
        }
    }
}

//! An independent check of a plan against its input, written without the solver's
//! machinery (no classes, no pinning, no bitsets): it rebuilds every node the plan implies
//! and tests every pod against every constraint on it. Property tests run it on random
//! inputs; `karpctl simulate` can run it as a self-check.
//!
//! Topology spread is checked as the kube-scheduler checks it: when the pod that carries the
//! constraint arrives, against the matching pods already in each domain. The plan does not
//! say in which order its pods arrive, so the checker tests what must hold whatever the
//! order: the last pod with the constraint to arrive in a domain finds there at least the
//! pods that were already running and every other pod with the same constraint, while the
//! least-loaded eligible domain holds at most what it holds in the end. So for each placed
//! pod with a `DoNotSchedule` spread, (running matching pods + placed matching pods carrying
//! that same constraint) in its domain − (matching pods, all of them, in the emptiest
//! eligible domain) must not exceed maxSkew. Pods that merely match the selector never
//! violate a constraint they do not carry. Required anti-affinity is checked both ways, as
//! the kube-scheduler does: a placed pod's own terms, and every other pod's terms that
//! select it.

use std::collections::{BTreeMap, BTreeSet};

use karpctl_cloud::{Resources, labels};

use crate::nodepool::{ExistingNode, NodePool};
use crate::pod::{Pod, PodAffinityTerm, WhenUnsatisfiable};
use crate::requirements::{Requirement, Requirements};
use crate::scheduler::Results;
use crate::taints::{Effect, Taint};

/// What a plan was made from.
pub struct Input<'a> {
    pub pods: &'a [Pod],
    pub node_pools: &'a [NodePool],
    pub nodes: &'a [ExistingNode],
    pub daemon_sets: &'a [Pod],
}

struct Node<'a> {
    name: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    allocatable: Resources,
    /// (pod, is it placed by this plan)
    pods: Vec<(&'a Pod, bool)>,
}

fn node_request(p: &Pod) -> Resources {
    let mut r = p.requests.clone();
    r.pods = 1;
    r
}

/// Whether the pod's node selector and required node affinity accept these labels.
pub fn node_affinity_matches(pod: &Pod, labels: &BTreeMap<String, String>) -> bool {
    let selector: Requirements = pod
        .node_selector
        .iter()
        .map(|(k, v)| Requirement::exactly(k, v))
        .collect();
    selector.matches_labels(labels)
        && (pod.required_terms.is_empty()
            || pod.required_terms.iter().any(|t| t.matches_labels(labels)))
}

fn tolerates_all(pod: &Pod, taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect != Effect::PreferNoSchedule)
        .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)))
}

fn selects(owner: &Pod, term: &PodAffinityTerm, other: &Pod) -> bool {
    term.selects(&owner.namespace, &other.namespace, &other.labels)
}

/// Every violation found; empty when the plan is sound.
pub fn verify(input: &Input, results: &Results) -> Vec<String> {
    let mut v = Vec::new();
    let n = input.pods.len();
    let mut seen = vec![0u32; n];
    for c in &results.node_claims {
        c.pods.iter().for_each(|p| seen[*p] += 1);
    }
    for e in &results.existing {
        e.pods.iter().for_each(|p| seen[*p] += 1);
    }
    for u in &results.unschedulable {
        seen[u.pod] += 1;
        if u.reason.is_empty() {
            v.push(format!(
                "pod {} is unschedulable without a reason",
                input.pods[u.pod]
            ));
        }
    }
    for (i, count) in seen.iter().enumerate() {
        if *count != 1 {
            v.push(format!(
                "pod {} appears {count} times in the plan",
                input.pods[i]
            ));
        }
    }

    let mut nodes: Vec<Node> = Vec::new();
    for e in input.nodes {
        nodes.push(Node {
            name: e.name.clone(),
            labels: e.labels.clone(),
            taints: e.taints.clone(),
            allocatable: e.allocatable.clone(),
            pods: e.pods.iter().map(|p| (&**p, false)).collect(),
        });
    }
    for placement in &results.existing {
        match nodes.iter_mut().find(|n| n.name == placement.node) {
            Some(node) => node
                .pods
                .extend(placement.pods.iter().map(|p| (&input.pods[*p], true))),
            None => v.push(format!("placement on unknown node {}", placement.node)),
        }
    }
    let mut pool_usage: BTreeMap<&str, (Resources, i64)> = BTreeMap::new();
    for (i, claim) in results.node_claims.iter().enumerate() {
        let Some(pool) = input.node_pools.iter().find(|p| p.name == claim.node_pool) else {
            v.push(format!("claim {i}: unknown NodePool {}", claim.node_pool));
            continue;
        };
        let Some(it) = pool
            .instance_types
            .iter()
            .find(|t| t.name == claim.instance_type)
        else {
            v.push(format!(
                "claim {i}: {} is not offered to NodePool {}",
                claim.instance_type, pool.name
            ));
            continue;
        };
        match it
            .offerings
            .iter()
            .find(|o| o.zone == claim.zone && o.capacity_type == claim.capacity_type)
        {
            Some(o) if o.available && (o.price - claim.price).abs() < 1e-9 => {}
            _ => v.push(format!(
                "claim {i}: no available offering {} {} at {}",
                claim.zone, claim.capacity_type, claim.price
            )),
        }
        if claim.instance_type_options.first().map(|o| o.name.as_str())
            != Some(claim.instance_type.as_str())
        {
            v.push(format!(
                "claim {i}: the chosen type is not the first (cheapest) option"
            ));
        }
        if claim.instance_type_options.len() > 60 {
            v.push(format!("claim {i}: more than 60 instance type options"));
        }
        let mut node_labels = it.labels.clone();
        node_labels.extend(pool.labels.clone());
        node_labels.insert(labels::ZONE.into(), claim.zone.clone());
        node_labels.insert(
            labels::CAPACITY_TYPE.into(),
            claim.capacity_type.as_str().into(),
        );
        node_labels.insert(labels::NODEPOOL.into(), pool.name.clone());
        let hostname = format!("planned-{i}");
        node_labels.insert(labels::HOSTNAME.into(), hostname.clone());
        if let Some(r) = pool.requirements.first_unmatched_label(&node_labels) {
            v.push(format!(
                "claim {i}: {} violates NodePool {} requirement {r}",
                claim.instance_type, pool.name
            ));
        }
        let mut pods: Vec<(&Pod, bool)> = Vec::new();
        for d in input.daemon_sets {
            if tolerates_all(d, &pool.taints) && node_affinity_matches(d, &node_labels) {
                pods.push((d, false));
            }
        }
        pods.extend(claim.pods.iter().map(|p| (&input.pods[*p], true)));
        let usage = pool_usage.entry(&pool.name).or_default();
        usage.0.add(&it.capacity);
        usage.1 += 1;
        nodes.push(Node {
            name: hostname,
            labels: node_labels,
            taints: pool.taints.clone(),
            allocatable: it.allocatable.clone(),
            pods,
        });
    }
    for pool in input.node_pools {
        let (used, count) = pool_usage
            .get(pool.name.as_str())
            .cloned()
            .unwrap_or_default();
        for (name, limit) in &pool.limits {
            let have = if name == "nodes" {
                count
            } else {
                used.get(name)
            };
            if have > *limit {
                v.push(format!(
                    "NodePool {} exceeds its {name} limit: {have} > {limit}",
                    pool.name
                ));
            }
        }
    }

    for node in &nodes {
        let mut total = Resources::default();
        for (p, _) in &node.pods {
            total.add(&node_request(p));
        }
        if !total.fits(&node.allocatable) {
            v.push(format!(
                "node {} is over capacity on {}: requests {total} > allocatable {}",
                node.name,
                total.exceeding(&node.allocatable).join(", "),
                node.allocatable
            ));
        }
        for (idx, (p, new)) in node.pods.iter().enumerate() {
            if !new {
                continue;
            }
            if !tolerates_all(p, &node.taints) {
                v.push(format!(
                    "pod {p} on {} does not tolerate its taints",
                    node.name
                ));
            }
            if !node_affinity_matches(p, &node.labels) {
                v.push(format!(
                    "pod {p} on {} violates its node selector or required node affinity",
                    node.name
                ));
            }
            for (jdx, (q, _)) in node.pods.iter().enumerate() {
                if idx == jdx {
                    continue;
                }
                if p.host_ports
                    .iter()
                    .any(|a| q.host_ports.iter().any(|b| a.conflicts(b)))
                {
                    v.push(format!(
                        "pods {p} and {q} on {} bind the same host port",
                        node.name
                    ));
                }
                for t in p
                    .anti_affinity
                    .iter()
                    .filter(|t| t.topology_key == labels::HOSTNAME)
                {
                    if selects(p, t, q) {
                        v.push(format!(
                            "pod {p} on {} shares it with {q}, against its anti-affinity",
                            node.name
                        ));
                    }
                }
                for t in q
                    .anti_affinity
                    .iter()
                    .filter(|t| t.topology_key == labels::HOSTNAME)
                {
                    if selects(q, t, p) {
                        v.push(format!(
                            "pod {p} on {} shares it with {q}, against {q}'s anti-affinity",
                            node.name
                        ));
                    }
                }
            }
            for t in p
                .affinity
                .iter()
                .filter(|t| t.topology_key == labels::HOSTNAME)
            {
                if !node.pods.iter().any(|(q, _)| selects(p, t, q)) {
                    v.push(format!(
                        "pod {p} on {} has no pod matching its hostname affinity",
                        node.name
                    ));
                }
            }
            for s in p.topology_spread.iter().filter(|s| {
                s.topology_key == labels::HOSTNAME
                    && s.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule
            }) {
                let count = node
                    .pods
                    .iter()
                    .filter(|(q, new)| counts_first(p, s, q, *new))
                    .count() as u32;
                if count > s.max_skew {
                    v.push(format!(
                        "node {} holds {count} pods matching {p}'s hostname spread (maxSkew {})",
                        node.name, s.max_skew
                    ));
                }
            }
        }
    }

    // Domain-level rules.
    let all: Vec<(&Pod, bool, &Node)> = nodes
        .iter()
        .flat_map(|n| n.pods.iter().map(move |(p, new)| (*p, *new, n)))
        .collect();
    for (p, new, node) in &all {
        if !new {
            continue;
        }
        for s in p.topology_spread.iter().filter(|s| {
            s.topology_key != labels::HOSTNAME
                && s.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule
        }) {
            let Some(domain) = node.labels.get(&s.topology_key) else {
                v.push(format!(
                    "pod {p} is on {} which has no {} label",
                    node.name, s.topology_key
                ));
                continue;
            };
            let eligible: BTreeSet<&String> = nodes
                .iter()
                .filter(|n| node_affinity_matches(p, &n.labels))
                .filter_map(|n| n.labels.get(&s.topology_key))
                .collect();
            let mut counts: BTreeMap<&String, i64> = eligible.iter().map(|d| (*d, 0)).collect();
            for (q, _, n) in &all {
                if q.namespace == p.namespace
                    && s.selector.matches(&q.labels)
                    && let Some(d) = n.labels.get(&s.topology_key)
                    && let Some(c) = counts.get_mut(d)
                {
                    *c += 1;
                }
            }
            let min = if (counts.len() as u32) < s.min_domains.unwrap_or(1) {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let mine = all
                .iter()
                .filter(|(q, new, n)| {
                    n.labels.get(&s.topology_key) == Some(domain) && counts_first(p, s, q, *new)
                })
                .count() as i64;
            if mine - min > s.max_skew as i64 {
                v.push(format!(
                    "pod {p} in {}={domain}: {mine} matching pods there vs minimum {min} exceeds maxSkew {}",
                    s.topology_key, s.max_skew
                ));
            }
        }
        for t in p
            .anti_affinity
            .iter()
            .filter(|t| t.topology_key != labels::HOSTNAME)
        {
            let domain = node.labels.get(&t.topology_key);
            for (q, _, n) in &all {
                if std::ptr::eq(*q, *p) {
                    continue;
                }
                if domain.is_some() && n.labels.get(&t.topology_key) == domain && selects(p, t, q) {
                    v.push(format!(
                        "pod {p} shares {} with {q}, against its anti-affinity",
                        t.topology_key
                    ));
                }
            }
        }
        // The symmetric check: no other pod's required anti-affinity may select this one
        // in its domain (the kube-scheduler refuses such a node).
        for (q, _, n) in &all {
            if std::ptr::eq(*q, *p) {
                continue;
            }
            for t in q
                .anti_affinity
                .iter()
                .filter(|t| t.topology_key != labels::HOSTNAME)
            {
                let domain = n.labels.get(&t.topology_key);
                if domain.is_some()
                    && node.labels.get(&t.topology_key) == domain
                    && selects(q, t, p)
                {
                    v.push(format!(
                        "pod {p} shares {} with {q}, against {q}'s anti-affinity",
                        t.topology_key
                    ));
                }
            }
        }
        for t in p
            .affinity
            .iter()
            .filter(|t| t.topology_key != labels::HOSTNAME)
        {
            let domain = node.labels.get(&t.topology_key);
            let ok = all.iter().any(|(q, _, n)| {
                domain.is_some() && n.labels.get(&t.topology_key) == domain && selects(p, t, q)
            });
            if !ok {
                v.push(format!(
                    "pod {p} has no pod matching its {} affinity in its domain",
                    t.topology_key
                ));
            }
        }
    }
    v
}

/// Whether pod `q` (`new`: placed by the plan) is surely in its domain before the last pod
/// carrying `p`'s spread `s` arrives there: it was already running, or it carries `s` too.
/// Either way it counts if it matches the selector.
fn counts_first(p: &Pod, s: &crate::pod::TopologySpread, q: &Pod, new: bool) -> bool {
    q.namespace == p.namespace
        && s.selector.matches(&q.labels)
        && (!new || q.topology_spread.iter().any(|t| t == s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::pod;
    use crate::scheduler::ExistingPlacement;
    use crate::selector::LabelSelector;

    fn node(name: &str, zone: &str, pods: Vec<Pod>) -> ExistingNode {
        ExistingNode {
            name: name.into(),
            labels: [
                (labels::ZONE.to_string(), zone.to_string()),
                (labels::HOSTNAME.to_string(), name.to_string()),
            ]
            .into(),
            allocatable: Resources {
                cpu: 4000,
                memory: 8 << 30,
                pods: 29,
                ..Default::default()
            },
            pods: pods.into_iter().map(std::sync::Arc::new).collect(),
            ..Default::default()
        }
    }

    /// Regression: the checker only tested a placed pod's own anti-affinity, so a plan
    /// putting a pod where an existing pod's required anti-affinity selects it passed.
    #[test]
    fn placements_against_existing_pods_anti_affinity_are_violations() {
        let web = || pod().name("web").label("app", "web").cpu("100m");
        let guard = |key: &str| {
            pod()
                .name("guard")
                .label("app", "guard")
                .anti_affinity(key, LabelSelector::labels([("app", "web")]))
        };
        // (guard's topology key, node the web pod is placed on, violation expected)
        let cases = [
            (labels::HOSTNAME, "guarded", true),
            (labels::HOSTNAME, "same-zone", false),
            (labels::ZONE, "guarded", true),
            (labels::ZONE, "same-zone", true),
            (labels::ZONE, "other-zone", false),
        ];
        for (key, target, want) in cases {
            let nodes = vec![
                node("guarded", "us-east-1a", vec![guard(key)]),
                node("same-zone", "us-east-1a", Vec::new()),
                node("other-zone", "us-east-1b", Vec::new()),
            ];
            let pods = vec![web()];
            let results = Results {
                existing: vec![ExistingPlacement {
                    node: target.into(),
                    pods: vec![0],
                }],
                ..Results::default()
            };
            let input = Input {
                pods: &pods,
                node_pools: &[],
                nodes: &nodes,
                daemon_sets: &[],
            };
            let violations = verify(&input, &results);
            assert_eq!(
                violations
                    .iter()
                    .any(|v| v.contains("default/guard's anti-affinity")),
                want,
                "{key} on {target}: {violations:?}"
            );
        }
    }
}

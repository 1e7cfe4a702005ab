//! Why one pod can or cannot go somewhere: for every existing node and every instance type
//! of every NodePool, the first constraint that excludes it, or that it fits and at what
//! price. The answers come from the same predicates the solver uses, evaluated for a single
//! pod on empty capacity (plus what existing nodes already run), so they read as the
//! solver's reasons, not a second opinion.

use karpctl_cloud::Resources;
use karpctl_cloud::labels::is_well_known;
use serde::Serialize;

use crate::classes::{self, Relax};
use crate::nodepool::ExistingNode;
use crate::pod::Pod;
use crate::scheduler::{Scheduler, price_under, type_mismatch};
use crate::taints::first_untolerated;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub pod: String,
    /// The pod's request as a node sees it (one pod slot included), as text.
    pub request: String,
    /// The same request as amounts, for structured output.
    #[serde(skip)]
    pub requests: Resources,
    pub nodes: Vec<Verdict>,
    pub node_pools: Vec<NodePoolVerdict>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub name: String,
    pub fits: bool,
    /// Why it is excluded, or a note (price, offering) when it fits.
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolVerdict {
    pub node_pool: String,
    /// Set when the whole NodePool is excluded (taints, requirements).
    pub excluded: Option<String>,
    pub instance_types: Vec<Verdict>,
}

impl Scheduler {
    /// Explain where `pod` could go, considering its required constraints (preferences
    /// only ever narrow this, and are relaxed when they cannot be met).
    pub fn explain(&self, pod: &Pod) -> Explanation {
        let settled = Relax {
            pref_affinity: usize::MAX / 2,
            pref_anti: usize::MAX / 2,
            pref_node: usize::MAX / 2,
            schedule_anyway_dropped: true,
            ..Relax::default()
        };
        let terms = pod.required_terms.len().max(1);
        let variants: Vec<_> = (0..terms)
            .map(|term| classes::constraints(pod, &Relax { term, ..settled }))
            .collect();
        let request = classes::node_request(pod);
        let mut nodes = Vec::new();
        for n in &self.nodes {
            let c = &variants[0];
            let mut used = karpctl_cloud::Resources::default();
            for p in &n.pods {
                used.add(&classes::node_request(p));
            }
            let free = n.allocatable.minus(&used);
            let reason = if let Some(t) = first_untolerated(&n.taints, &c.tolerations, false) {
                Some(format!("does not tolerate taint {t}"))
            } else if let Some(r) = variants
                .iter()
                .find_map(|v| v.requirements.first_unmatched_label(&n.labels))
                .filter(|_| {
                    !variants
                        .iter()
                        .any(|v| v.requirements.matches_labels(&n.labels))
                })
            {
                Some(format!("node labels do not satisfy {r}"))
            } else if !request.fits(&free) {
                Some(format!(
                    "not enough free {} (free: {free})",
                    request.exceeding(&free).join(", ")
                ))
            } else if let Some(q) = n.pods.iter().find(|q| {
                pod.host_ports
                    .iter()
                    .any(|a| q.host_ports.iter().any(|b| a.conflicts(b)))
            }) {
                Some(format!("host port already bound by {q}"))
            } else {
                n.pods
                    .iter()
                    .find(|q| {
                        pod.anti_affinity.iter().any(|t| {
                            t.topology_key == karpctl_cloud::labels::HOSTNAME
                                && t.selects(&pod.namespace, &q.namespace, &q.labels)
                        }) || q.anti_affinity.iter().any(|t| {
                            t.topology_key == karpctl_cloud::labels::HOSTNAME
                                && t.selects(&q.namespace, &pod.namespace, &pod.labels)
                        })
                    })
                    .map(|q| format!("pod anti-affinity with {q}"))
                    .or_else(|| self.domain_anti_affinity(pod, n))
            };
            nodes.push(Verdict {
                name: n.name.clone(),
                fits: reason.is_none(),
                reason: reason.unwrap_or_else(|| format!("fits (free: {free})")),
            });
        }
        let mut node_pools = Vec::new();
        for p in &self.pools {
            let c = &variants[0];
            let excluded = if let Some(t) = first_untolerated(&p.pool.taints, &c.tolerations, false)
            {
                Some(format!("does not tolerate taint {t}"))
            } else {
                variants
                    .iter()
                    .map(|v| p.requirements.compatible(&v.requirements, is_well_known))
                    .find(|r| r.is_ok())
                    .unwrap_or_else(|| p.requirements.compatible(&c.requirements, is_well_known))
                    .err()
                    .map(|e| e.to_string())
            };
            let mut instance_types = Vec::new();
            if excluded.is_none() {
                for pt in &p.types {
                    let it = &p.pool.instance_types[pt.index];
                    let combined: Vec<_> = variants
                        .iter()
                        .map(|v| p.requirements.intersection(&v.requirements))
                        .collect();
                    let reason = match combined.iter().find(|r| type_mismatch(it, r).is_none()) {
                        None => Some(type_mismatch(it, &combined[0]).unwrap_or_default()),
                        Some(r) => {
                            if !request.fits(&pt.free) {
                                Some(format!(
                                    "too small: short of {} (needs {} plus DaemonSets {}; allocatable {})",
                                    request.exceeding(&pt.free).join(", "),
                                    request,
                                    pt.overhead,
                                    it.allocatable
                                ))
                            } else {
                                let o =
                                    price_under(it, r).expect("type_mismatch checked offerings");
                                instance_types.push(Verdict {
                                    name: it.name.clone(),
                                    fits: true,
                                    reason: format!(
                                        "fits: ${:.4}/h {} in {}",
                                        o.price, o.capacity_type, o.zone
                                    ),
                                });
                                None
                            }
                        }
                    };
                    if let Some(reason) = reason {
                        instance_types.push(Verdict {
                            name: it.name.clone(),
                            fits: false,
                            reason,
                        });
                    }
                }
                let excluded_by_pool = p.pool.instance_types.len() - p.types.len();
                if excluded_by_pool > 0 {
                    instance_types.push(Verdict {
                        name: format!("({excluded_by_pool} other types)"),
                        fits: false,
                        reason: "excluded by the NodePool's own requirements".to_string(),
                    });
                }
            }
            node_pools.push(NodePoolVerdict {
                node_pool: p.pool.name.clone(),
                excluded,
                instance_types,
            });
        }
        let ds = self.daemon_sets.len();
        let mut request_text = request.to_string();
        if ds > 0 {
            request_text += &format!(
                " (new nodes also run {ds} DaemonSet pod template(s) where they tolerate and match)"
            );
        }
        Explanation {
            pod: pod.to_string(),
            request: request_text,
            requests: request,
            nodes,
            node_pools,
        }
    }
}

impl Scheduler {
    /// A required anti-affinity on a domain key (zone, ...) that keeps `pod` off `node`:
    /// the pod's own against a pod in the node's domain, or, as the kube-scheduler checks
    /// symmetrically, one of those pods' terms selecting `pod`.
    fn domain_anti_affinity(&self, pod: &Pod, node: &ExistingNode) -> Option<String> {
        let hostname = karpctl_cloud::labels::HOSTNAME;
        for other in &self.nodes {
            for q in &other.pods {
                let same = |key: &str| {
                    key != hostname
                        && node.labels.contains_key(key)
                        && node.labels.get(key) == other.labels.get(key)
                };
                if let Some(t) = pod.anti_affinity.iter().find(|t| {
                    same(&t.topology_key) && t.selects(&pod.namespace, &q.namespace, &q.labels)
                }) {
                    return Some(format!(
                        "pod anti-affinity on {} with {q} on {}",
                        t.topology_key, other.name
                    ));
                }
                if let Some(t) = q.anti_affinity.iter().find(|t| {
                    same(&t.topology_key) && t.selects(&q.namespace, &pod.namespace, &pod.labels)
                }) {
                    return Some(format!(
                        "{q} on {} has required anti-affinity on {} against this pod",
                        other.name, t.topology_key
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use karpctl_cloud::{Resources, labels};

    use crate::nodepool::ExistingNode;
    use crate::pod::pod;
    use crate::scheduler::Scheduler;
    use crate::selector::LabelSelector;

    /// Regression: explain said an existing node fits a pod that an existing pod's required
    /// zone anti-affinity keeps out of that node's zone.
    #[test]
    fn existing_nodes_report_domain_anti_affinity_both_ways() {
        let node = |name: &str, zone: &str, pods| ExistingNode {
            name: name.into(),
            labels: [(labels::ZONE.to_string(), zone.to_string())].into(),
            allocatable: Resources {
                cpu: 4000,
                memory: 8 << 30,
                pods: 29,
                ..Default::default()
            },
            pods,
            ..Default::default()
        };
        let web = || pod().name("web").label("app", "web").cpu("100m");
        let guard = pod()
            .name("guard")
            .label("app", "guard")
            .anti_affinity(labels::ZONE, LabelSelector::labels([("app", "web")]));
        let nodes = vec![
            node("guarded", "us-east-1a", vec![guard.into()]),
            node("same-zone", "us-east-1a", Vec::new()),
            node("other-zone", "us-east-1b", Vec::new()),
        ];
        let scheduler = Scheduler::new(Vec::new(), nodes, Vec::new());
        // (pod, node, fits, reason contains)
        let cases = [
            (web(), "same-zone", false, "default/guard on guarded"),
            (web(), "other-zone", true, "fits"),
            (
                pod()
                    .name("shy")
                    .anti_affinity(labels::ZONE, LabelSelector::labels([("app", "guard")])),
                "same-zone",
                false,
                "pod anti-affinity on topology.kubernetes.io/zone with default/guard",
            ),
        ];
        for (p, name, fits, reason) in cases {
            let e = scheduler.explain(&p);
            let v = e.nodes.iter().find(|n| n.name == name).unwrap();
            assert_eq!(v.fits, fits, "{name}: {}", v.reason);
            assert!(v.reason.contains(reason), "{name}: {}", v.reason);
        }
    }
}

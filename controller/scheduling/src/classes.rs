//! Pods grouped into classes: pods with identical requests and identical constraints at the
//! same relaxation level are interchangeable to the scheduler, so it decides for a class and
//! a count instead of pod by pod — this is what makes tens of thousands of replicas cheap.
//!
//! Also here: the relaxation ladder for preferences (upstream's `Preferences.Relax`), and
//! the pod groups that hostname-level constraints count (a selector in a namespace scope, or
//! a host port).

use std::collections::HashMap;

use karpctl_cloud::Resources;
use karpctl_cloud::labels;

use crate::pod::{HostPort, Pod, PodAffinityTerm, TopologySpread, WhenUnsatisfiable};
use crate::requirements::{Requirement, Requirements};
use crate::selector::LabelSelector;
use crate::taints::Toleration;

/// How far a pod's preferences have been relaxed. Each step drops one thing, in upstream's
/// order: the first of several ORed required node-affinity terms, then preferred pod
/// affinity, preferred pod anti-affinity, preferred node affinity (heaviest first), then
/// ScheduleAnyway spread constraints, and finally PreferNoSchedule taints are tolerated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Relax {
    pub term: usize,
    pub pref_affinity: usize,
    pub pref_anti: usize,
    pub pref_node: usize,
    pub schedule_anyway_dropped: bool,
    pub prefer_no_schedule_tolerated: bool,
}

impl Relax {
    pub fn next(&self, pod: &Pod) -> Option<Relax> {
        let mut r = *self;
        if r.term + 1 < pod.required_terms.len() {
            r.term += 1;
        } else if r.pref_affinity < pod.preferred_affinity.len() {
            r.pref_affinity += 1;
        } else if r.pref_anti < pod.preferred_anti_affinity.len() {
            r.pref_anti += 1;
        } else if r.pref_node < pod.preferred_terms.len() {
            r.pref_node += 1;
        } else if !r.schedule_anyway_dropped
            && pod
                .topology_spread
                .iter()
                .any(|s| s.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
        {
            r.schedule_anyway_dropped = true;
        } else if !r.prefer_no_schedule_tolerated {
            r.prefer_no_schedule_tolerated = true;
        } else {
            return None;
        }
        Some(r)
    }
}

/// A pod's constraints at one relaxation level.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Constraints {
    pub requirements: Requirements,
    /// Node selector and required node affinity only: what decides which topology domains
    /// count for spread (`nodeAffinityPolicy: Honor`), preferences aside.
    pub required: Requirements,
    pub tolerations: Vec<Toleration>,
    pub prefer_no_schedule_tolerated: bool,
    pub spreads: Vec<TopologySpread>,
    pub affinity: Vec<PodAffinityTerm>,
    pub anti_affinity: Vec<PodAffinityTerm>,
}

fn by_weight<T: Clone>(items: &[(i32, T)]) -> Vec<T> {
    let mut sorted: Vec<(i32, T)> = items.to_vec();
    sorted.sort_by_key(|item| std::cmp::Reverse(item.0));
    sorted.into_iter().map(|(_, t)| t).collect()
}

pub(crate) fn constraints(pod: &Pod, relax: &Relax) -> Constraints {
    let mut requirements: Requirements = pod
        .node_selector
        .iter()
        .map(|(k, v)| Requirement::exactly(k, v))
        .collect();
    if let Some(term) = pod.required_terms.get(relax.term) {
        requirements.add_all(term);
    }
    let required = requirements.clone();
    // Upstream treats the heaviest remaining preferred term as required until relaxed.
    if let Some(preferred) = by_weight(&pod.preferred_terms).get(relax.pref_node) {
        requirements.add_all(preferred);
    }
    let spreads = pod
        .topology_spread
        .iter()
        .filter(|s| {
            !(relax.schedule_anyway_dropped
                && s.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
        })
        .cloned()
        .collect();
    let mut affinity = pod.affinity.clone();
    affinity.extend(
        by_weight(&pod.preferred_affinity)
            .into_iter()
            .skip(relax.pref_affinity),
    );
    let mut anti_affinity = pod.anti_affinity.clone();
    anti_affinity.extend(
        by_weight(&pod.preferred_anti_affinity)
            .into_iter()
            .skip(relax.pref_anti),
    );
    Constraints {
        requirements,
        required,
        tolerations: pod.tolerations.clone(),
        prefer_no_schedule_tolerated: relax.prefer_no_schedule_tolerated,
        spreads,
        affinity,
        anti_affinity,
    }
}

/// The pods a hostname-level constraint counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GroupKey {
    /// Pods matching `selector` in `namespaces` (`None`: every namespace).
    Pods {
        namespaces: Option<Vec<String>>,
        selector: LabelSelector,
    },
    /// Pods binding a host port.
    Port { port: i32, protocol: String },
}

impl GroupKey {
    pub fn for_term(owner_namespace: &str, term: &PodAffinityTerm) -> Self {
        let namespaces = if term.all_namespaces {
            None
        } else if term.namespaces.is_empty() {
            Some(vec![owner_namespace.to_string()])
        } else {
            let mut ns = term.namespaces.clone();
            ns.sort();
            ns.dedup();
            Some(ns)
        };
        GroupKey::Pods {
            namespaces,
            selector: term.selector.clone(),
        }
    }

    pub fn for_spread(owner_namespace: &str, spread: &TopologySpread) -> Self {
        GroupKey::Pods {
            namespaces: Some(vec![owner_namespace.to_string()]),
            selector: spread.selector.clone(),
        }
    }

    pub fn for_port(port: &HostPort) -> Self {
        GroupKey::Port {
            port: port.port,
            protocol: port.protocol.clone(),
        }
    }

    pub fn contains(&self, pod: &Pod) -> bool {
        match self {
            GroupKey::Pods {
                namespaces,
                selector,
            } => {
                namespaces
                    .as_ref()
                    .is_none_or(|ns| ns.contains(&pod.namespace))
                    && selector.matches(&pod.labels)
            }
            GroupKey::Port { port, protocol } => pod
                .host_ports
                .iter()
                .any(|p| p.port == *port && &p.protocol == protocol),
        }
    }
}

/// Every group any constraint refers to, numbered so nodes can count members in a `Vec`.
#[derive(Default)]
pub(crate) struct Groups {
    pub keys: Vec<GroupKey>,
    index: HashMap<GroupKey, u32>,
}

impl Groups {
    pub fn id(&mut self, key: GroupKey) -> u32 {
        if let Some(id) = self.index.get(&key) {
            return *id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.index.insert(key, id);
        id
    }

    pub fn get(&self, key: &GroupKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Register every group a pod's constraints could refer to at any relaxation level.
    pub fn register(&mut self, pod: &Pod) {
        for s in &pod.topology_spread {
            self.id(GroupKey::for_spread(&pod.namespace, s));
        }
        for t in pod.affinity.iter().chain(&pod.anti_affinity) {
            self.id(GroupKey::for_term(&pod.namespace, t));
        }
        for (_, t) in pod
            .preferred_affinity
            .iter()
            .chain(&pod.preferred_anti_affinity)
        {
            self.id(GroupKey::for_term(&pod.namespace, t));
        }
        for p in &pod.host_ports {
            self.id(GroupKey::for_port(p));
        }
    }

    /// Groups the pod counts in.
    pub fn memberships(&self, pod: &Pod) -> Vec<u32> {
        (0..self.keys.len() as u32)
            .filter(|g| self.keys[*g as usize].contains(pod))
            .collect()
    }
}

/// A domain-level rule (any topology key but hostname), resolved by pinning pods to domains.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DomainRule {
    Spread {
        key: String,
        group: u32,
        max_skew: u32,
        min_domains: Option<u32>,
        anyway: bool,
    },
    Affinity {
        key: String,
        group: u32,
    },
    /// `required`: from a required term (not a preference not yet relaxed), so it also
    /// keeps later members of `group` out of the pod's domain, as the kube-scheduler's
    /// symmetric check does.
    AntiAffinity {
        key: String,
        group: u32,
        required: bool,
    },
}

impl DomainRule {
    pub fn key(&self) -> &str {
        match self {
            DomainRule::Spread { key, .. }
            | DomainRule::Affinity { key, .. }
            | DomainRule::AntiAffinity { key, .. } => key,
        }
    }
}

/// Hostname-level constraints of a class, as per-node group counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NodeRules {
    /// Groups the class's pods count in.
    pub members: Vec<u32>,
    /// While a pod of the class is on a node, that node holds at most `cap` members of
    /// `group` (anti-affinity: 0, or 1 counting itself; spread: maxSkew; host port: 1).
    pub caps: Vec<(u32, u32)>,
    /// The node must already hold a member of each group (required pod affinity).
    pub needs: Vec<u32>,
}

pub(crate) fn split_rules(
    pod: &Pod,
    c: &Constraints,
    groups: &Groups,
) -> (NodeRules, Vec<DomainRule>) {
    let members = groups.memberships(pod);
    let is_member = |g: u32| members.contains(&g);
    let mut rules = NodeRules {
        members: members.clone(),
        ..NodeRules::default()
    };
    let mut domain = Vec::new();
    for s in &c.spreads {
        let g = groups
            .get(&GroupKey::for_spread(&pod.namespace, s))
            .expect("registered");
        if s.topology_key == labels::HOSTNAME {
            rules.caps.push((g, s.max_skew.max(1)));
        } else {
            domain.push(DomainRule::Spread {
                key: s.topology_key.clone(),
                group: g,
                max_skew: s.max_skew.max(1),
                min_domains: s.min_domains,
                anyway: s.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway,
            });
        }
    }
    for t in &c.anti_affinity {
        let g = groups
            .get(&GroupKey::for_term(&pod.namespace, t))
            .expect("registered");
        if t.topology_key == labels::HOSTNAME {
            rules.caps.push((g, u32::from(is_member(g))));
        } else {
            domain.push(DomainRule::AntiAffinity {
                key: t.topology_key.clone(),
                group: g,
                required: pod.anti_affinity.contains(t),
            });
        }
    }
    for t in &c.affinity {
        let g = groups
            .get(&GroupKey::for_term(&pod.namespace, t))
            .expect("registered");
        if t.topology_key == labels::HOSTNAME {
            rules.needs.push(g);
        } else {
            domain.push(DomainRule::Affinity {
                key: t.topology_key.clone(),
                group: g,
            });
        }
    }
    for p in &pod.host_ports {
        let g = groups.get(&GroupKey::for_port(p)).expect("registered");
        rules.caps.push((g, 1));
    }
    rules.caps.sort();
    rules.caps.dedup();
    (rules, domain)
}

/// A pod's effective request as a node sees it: its requests plus one pod slot.
pub(crate) fn node_request(pod: &Pod) -> Resources {
    let mut r = pod.requests.clone();
    r.pods = 1;
    r
}

/// The identity of a class: everything that can change where a pod may go. Labels enter
/// only through the groups they make the pod a member of, so replicas with unique names or
/// hashes still share a class.
pub(crate) fn class_key(pod: &Pod, members: &[u32], c: &Constraints) -> String {
    format!(
        "{}\u{1}{:?}\u{1}{:?}\u{1}{:?}\u{1}{:?}",
        pod.namespace, members, pod.requests, pod.host_ports, c
    )
}

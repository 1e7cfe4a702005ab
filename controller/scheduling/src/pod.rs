//! The scheduler's view of a pod: only what constrains where it may run. Built from a
//! Kubernetes Pod at the edge ([`crate::kubernetes`]) or with the builder in tests and
//! benchmarks (`pod().cpu("1").memory("1Gi")`).

use std::collections::BTreeMap;
use std::fmt;

use karpctl_cloud::Resources;
use serde::{Deserialize, Serialize};

use crate::requirements::{Operator, Requirement, Requirements};
use crate::selector::LabelSelector;
use crate::taints::Toleration;

/// `whenUnsatisfiable` of a topology spread constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WhenUnsatisfiable {
    DoNotSchedule,
    ScheduleAnyway,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopologySpread {
    pub topology_key: String,
    pub max_skew: u32,
    pub min_domains: Option<u32>,
    pub when_unsatisfiable: WhenUnsatisfiable,
    pub selector: LabelSelector,
}

/// A pod (anti-)affinity term: pods matching `selector` in `namespaces` (the pod's own
/// namespace when empty, every namespace when `all_namespaces`) within one `topology_key`
/// domain. A `namespaceSelector` is resolved into these two fields at the edge
/// ([`crate::kubernetes`]; approximated when it needs namespace labels, see
/// `docs/scheduling.md`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodAffinityTerm {
    pub topology_key: String,
    pub selector: LabelSelector,
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPort {
    pub port: i32,
    pub protocol: String,
    pub host_ip: String,
}

impl HostPort {
    /// Two host ports collide when port and protocol match and either binds every address.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.host_ip == other.host_ip || is_any(&self.host_ip) || is_any(&other.host_ip))
    }
}

fn is_any(ip: &str) -> bool {
    ip.is_empty() || ip == "0.0.0.0" || ip == "::"
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Sum of container requests (max'd with init containers, plus overhead), as the
    /// kube-scheduler computes a pod's effective request.
    pub requests: Resources,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: any one term must hold (ORed).
    pub required_terms: Vec<Requirements>,
    /// Preferred node affinity terms with their weights.
    pub preferred_terms: Vec<(i32, Requirements)>,
    pub tolerations: Vec<Toleration>,
    pub topology_spread: Vec<TopologySpread>,
    pub affinity: Vec<PodAffinityTerm>,
    pub anti_affinity: Vec<PodAffinityTerm>,
    pub preferred_affinity: Vec<(i32, PodAffinityTerm)>,
    pub preferred_anti_affinity: Vec<(i32, PodAffinityTerm)>,
    pub host_ports: Vec<HostPort>,
    /// Where the pod came from (`Deployment/web`), for reports.
    pub owner: Option<String>,
}

impl fmt::Display for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod named `pod` in `default` requesting nothing; chain the setters below.
pub fn pod() -> Pod {
    Pod {
        namespace: "default".into(),
        name: "pod".into(),
        ..Pod::default()
    }
}

/// Builder setters. Quantities that do not parse panic: these are for tests, benchmarks and
/// examples; real input goes through [`crate::kubernetes`].
impl Pod {
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }
    pub fn cpu(mut self, quantity: &str) -> Self {
        self.requests.cpu = Resources::from_quantities([("cpu", quantity)])
            .expect("cpu quantity")
            .cpu;
        self
    }
    pub fn memory(mut self, quantity: &str) -> Self {
        self.requests.memory = Resources::from_quantities([("memory", quantity)])
            .expect("memory quantity")
            .memory;
        self
    }
    pub fn resource(mut self, name: &str, quantity: &str) -> Self {
        let parsed = Resources::from_quantities([(name, quantity)]).expect("quantity");
        self.requests.set(name, parsed.get(name));
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.node_selector
            .insert(key.to_string(), value.to_string());
        self
    }
    /// Adds a requirement to the first required node-affinity term.
    pub fn require(mut self, key: &str, operator: Operator, values: &[&str]) -> Self {
        let r = Requirement::new(key, operator, values).expect("requirement");
        if self.required_terms.is_empty() {
            self.required_terms.push(Requirements::new());
        }
        self.required_terms[0].add(r);
        self
    }
    /// Adds another ORed required node-affinity term.
    pub fn require_term(mut self, term: Requirements) -> Self {
        self.required_terms.push(term);
        self
    }
    pub fn prefer(mut self, weight: i32, key: &str, operator: Operator, values: &[&str]) -> Self {
        let r = Requirement::new(key, operator, values).expect("requirement");
        self.preferred_terms
            .push((weight, [r].into_iter().collect()));
        self
    }
    pub fn toleration(mut self, toleration: Toleration) -> Self {
        self.tolerations.push(toleration);
        self
    }
    /// Tolerates `key` with any value and effect.
    pub fn tolerate(self, key: &str) -> Self {
        self.toleration(Toleration {
            key: key.to_string(),
            exists: true,
            ..Toleration::default()
        })
    }
    pub fn spread(mut self, topology_key: &str, max_skew: u32, selector: LabelSelector) -> Self {
        self.topology_spread.push(TopologySpread {
            topology_key: topology_key.to_string(),
            max_skew,
            min_domains: None,
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
            selector,
        });
        self
    }
    pub fn spread_anyway(
        mut self,
        topology_key: &str,
        max_skew: u32,
        selector: LabelSelector,
    ) -> Self {
        self = self.spread(topology_key, max_skew, selector);
        if let Some(last) = self.topology_spread.last_mut() {
            last.when_unsatisfiable = WhenUnsatisfiable::ScheduleAnyway;
        }
        self
    }
    pub fn affinity(mut self, topology_key: &str, selector: LabelSelector) -> Self {
        self.affinity.push(term(topology_key, selector));
        self
    }
    pub fn anti_affinity(mut self, topology_key: &str, selector: LabelSelector) -> Self {
        self.anti_affinity.push(term(topology_key, selector));
        self
    }
    pub fn prefer_anti_affinity(
        mut self,
        weight: i32,
        topology_key: &str,
        selector: LabelSelector,
    ) -> Self {
        self.preferred_anti_affinity
            .push((weight, term(topology_key, selector)));
        self
    }
    pub fn host_port(mut self, port: i32) -> Self {
        self.host_ports.push(HostPort {
            port,
            protocol: "TCP".into(),
            host_ip: String::new(),
        });
        self
    }
    pub fn owner(mut self, owner: &str) -> Self {
        self.owner = Some(owner.to_string());
        self
    }
}

fn term(topology_key: &str, selector: LabelSelector) -> PodAffinityTerm {
    PodAffinityTerm {
        topology_key: topology_key.to_string(),
        selector,
        namespaces: Vec::new(),
        all_namespaces: false,
    }
}

impl PodAffinityTerm {
    /// Whether `other` (in `other_namespace`) is one of the pods this term, written on a pod
    /// in `own_namespace`, refers to.
    pub fn selects(
        &self,
        own_namespace: &str,
        other_namespace: &str,
        other_labels: &BTreeMap<String, String>,
    ) -> bool {
        let in_scope = self.all_namespaces
            || if self.namespaces.is_empty() {
                own_namespace == other_namespace
            } else {
                self.namespaces.iter().any(|n| n == other_namespace)
            };
        in_scope && self.selector.matches(other_labels)
    }
}

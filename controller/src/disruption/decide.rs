//! The pure half of disruption: which NodeClaims are candidates (and why the others are not),
//! whether they drifted, and upstream's ordered methods — Emptiness, Drift, multi-node
//! consolidation, single-node consolidation; the first that finds something to do wins —
//! within the NodePools' budgets. Every claim looked at gets a [`Verdict`].

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;
use karpctl_api::v1::{
    ConditionStatus, Conditions, ConsolidationPolicy, DisruptionReason, EC2NodeClass,
    NillableDuration, NodeClaim, NodePool,
};
use karpctl_cloud::{CapacityType, Instance, InstanceType};
use karpctl_scheduling::NodeClaimPlan;
use karpctl_scheduling::disruption::{Blocked, Candidate, Outcome, Simulator};
use kube::ResourceExt;
use tokio::time::Instant;

use super::budgets;
use crate::state::{ClusterState, PodRecord};

/// The methods, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Emptiness,
    Drift,
    MultiNodeConsolidation,
    SingleNodeConsolidation,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Emptiness => "Emptiness",
            Method::Drift => "Drift",
            Method::MultiNodeConsolidation => "MultiNodeConsolidation",
            Method::SingleNodeConsolidation => "SingleNodeConsolidation",
        }
    }

    /// Upstream's `consolidation_type` metric label.
    pub fn consolidation_type(self) -> &'static str {
        match self {
            Method::Emptiness => "empty",
            Method::Drift => "",
            Method::MultiNodeConsolidation => "multi",
            Method::SingleNodeConsolidation => "single",
        }
    }

    /// Consolidation decisions are re-checked after a wait before they act.
    pub fn validates(self) -> bool {
        self != Method::Drift
    }
}

/// What the controller says about one claim (written to `status.disruption`).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub method: &'static str,
    pub outcome: &'static str,
    pub blockers: Vec<String>,
    pub message: String,
    pub price: Option<f64>,
    pub replacement_price: Option<f64>,
}

impl Verdict {
    fn candidacy(outcome: &'static str, blockers: Vec<String>, message: String) -> Self {
        Verdict {
            method: "Candidacy",
            outcome,
            blockers,
            message,
            price: None,
            replacement_price: None,
        }
    }

    /// Whether it blocks disruption (an event is `DisruptionBlocked` then).
    pub fn blocked(&self) -> bool {
        !matches!(self.outcome, "Disrupting")
    }
}

/// One initialized claim with its node, as disruption sees it.
#[derive(Clone, Debug)]
pub struct Evaluated {
    pub claim: String,
    pub pool: String,
    pub candidate: Candidate,
    /// Set when something makes it no candidate at all.
    pub not_candidate: Option<Verdict>,
    pub empty: bool,
    /// `consolidateAfter` has passed since its last pod event (and consolidation is on).
    pub consolidatable: Result<(), Verdict>,
    pub policy: ConsolidationPolicy,
    /// Why it drifted (reason, message).
    pub drifted: Option<(&'static str, String)>,
    /// When a pod last started or stopped using it, for `status.lastPodEventTime`.
    pub last_pod_event: Option<Timestamp>,
}

/// A NodePool with its node class and what that can launch, as in provisioning.
pub use crate::provisioning::ReadyPool;

/// A decided action.
#[derive(Clone, Debug)]
pub struct Command {
    pub method: Method,
    pub reason: DisruptionReason,
    pub candidates: Vec<Candidate>,
    pub replacements: Vec<NodeClaimPlan>,
}

impl Command {
    pub fn decision(&self) -> &'static str {
        if self.replacements.is_empty() {
            "delete"
        } else {
            "replace"
        }
    }

    /// Upstream's command string, as in its `disrupting node(s)` log line.
    pub fn describe(&self) -> String {
        let pods: usize = self.candidates.iter().map(|c| c.pods.len()).sum();
        let decision = if self.replacements.is_empty() {
            "Delete"
        } else {
            "Replace"
        };
        let nodes: Vec<String> = self
            .candidates
            .iter()
            .map(|c| {
                format!(
                    "{}/{}/{}",
                    c.node,
                    c.instance_type,
                    c.capacity_type.map(CapacityType::as_str).unwrap_or("")
                )
            })
            .collect();
        let mut out = format!(
            "{}/{decision}, terminating {} nodes ({pods} pods) {}",
            budgets::reason_name(self.reason),
            self.candidates.len(),
            nodes.join(", ")
        );
        if let [one] = &self.replacements[..] {
            let types: Vec<&str> = one
                .instance_type_options
                .iter()
                .take(5)
                .map(|o| o.name.as_str())
                .collect();
            let more = one.instance_type_options.len().saturating_sub(5);
            out.push_str(&format!(
                " and replacing with {} node from types {}{}",
                one.capacity_type,
                types.join(", "),
                if more > 0 {
                    format!(" and {more} other(s)")
                } else {
                    String::new()
                }
            ));
        } else if !self.replacements.is_empty() {
            let spot = self
                .replacements
                .iter()
                .filter(|r| r.capacity_type == CapacityType::Spot)
                .count();
            out.push_str(&format!(
                " and replacing with {spot} spot and {} on-demand nodes",
                self.replacements.len() - spot
            ));
        }
        out
    }
}

/// The node's `karpenter.sh/do-not-disrupt` on a pod: `true`, or a duration since the pod
/// started. A value that is neither holds the node too (nothing is evicted on a guess).
pub fn pod_blocks(pod: &PodRecord, now: Timestamp) -> Option<String> {
    let value = pod.do_not_disrupt.as_deref()?;
    let key = pod.key();
    if value == "true" {
        return Some(format!("pod {key} has {}=true", labels::DO_NOT_DISRUPT));
    }
    match value.parse::<karpctl_api::v1::Duration>() {
        Ok(d) => {
            let started = pod.started?;
            let until = crate::clock::after(started, d.as_std());
            (now < until).then(|| {
                format!(
                    "pod {key} has {}={value} (until {until})",
                    labels::DO_NOT_DISRUPT
                )
            })
        }
        Err(_) => Some(format!(
            "pod {key}: metadata.annotations[{}]={value:?} is neither \"true\" nor a duration such as 1h30m; the node is held",
            labels::DO_NOT_DISRUPT
        )),
    }
}

/// Why a claim drifted from its NodePool or EC2NodeClass, as upstream's reasons.
pub fn drift(
    claim: &NodeClaim,
    node_labels: &BTreeMap<String, String>,
    pool: &NodePool,
    class: Option<&EC2NodeClass>,
    instance: Option<&Instance>,
) -> Option<(&'static str, String)> {
    let ann = claim.annotations();
    if ann.get(labels::NODE_POOL_HASH_VERSION).map(String::as_str)
        == Some(karpctl_api::v1::NODE_POOL_HASH_VERSION)
        && let Some(h) = ann.get(labels::NODE_POOL_HASH)
        && *h != crate::nodepool::hash(pool)
    {
        return Some((
            "NodePoolDrifted",
            format!(
                "NodePool {} changed since the claim was made",
                pool.name_any()
            ),
        ));
    }
    for (i, r) in pool.spec.template.spec.requirements.iter().enumerate() {
        let value = node_labels
            .get(&r.key)
            .or_else(|| claim.labels().get(&r.key));
        let ok = match (r.operator.as_str(), value) {
            ("In", Some(v)) => r.values.contains(v),
            ("NotIn", Some(v)) => !r.values.contains(v),
            ("Exists", Some(_)) | ("DoesNotExist", None) | ("NotIn", None) => true,
            ("DoesNotExist", Some(_)) => false,
            ("Gt", Some(v)) | ("Lt", Some(v)) => {
                let (Ok(v), Some(Ok(bound))) =
                    (v.parse::<i64>(), r.values.first().map(|b| b.parse::<i64>()))
                else {
                    continue;
                };
                if r.operator == "Gt" {
                    v > bound
                } else {
                    v < bound
                }
            }
            // A well-known label the node does not carry is not drift (upstream allows
            // undefined well-known labels); a custom one is.
            (_, None) => karpctl_api::labels::is_well_known(&r.key),
            _ => true,
        };
        if !ok {
            return Some((
                "RequirementsDrifted",
                format!(
                    "spec.template.spec.requirements[{i}] ({} {} {:?}) no longer matches the node ({})",
                    r.key,
                    r.operator,
                    r.values,
                    value.map(String::as_str).unwrap_or("unset")
                ),
            ));
        }
    }
    let class = class?;
    if ann
        .get(labels::EC2_NODE_CLASS_HASH_VERSION)
        .map(String::as_str)
        == Some(karpctl_api::v1::EC2_NODE_CLASS_HASH_VERSION)
        && let Some(h) = ann.get(labels::EC2_NODE_CLASS_HASH)
        && *h != crate::nodeclass::hash(class)
    {
        return Some((
            "NodeClassDrifted",
            format!(
                "EC2NodeClass {} changed since the claim was made",
                class.name_any()
            ),
        ));
    }
    let image = claim.status.as_ref().and_then(|s| s.image_id.as_deref());
    let amis = class.status.as_ref().map(|s| &s.amis);
    if let (Some(image), Some(amis)) = (image, amis)
        && !amis.is_empty()
        && !amis.iter().any(|a| a.id == image)
    {
        return Some((
            "AMIDrift",
            format!(
                "image {image} is no longer selected by EC2NodeClass {} (now {})",
                class.name_any(),
                amis.iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    // Subnets and security groups, as upstream's AWS provider: the instance's subnet is no
    // longer one the class selects, or its security groups are not exactly the selected ones.
    let (Some(instance), Some(status)) = (instance, class.status.as_ref()) else {
        return None;
    };
    if let Some(subnet) = &instance.subnet_id
        && !status.subnets.is_empty()
        && !status.subnets.iter().any(|s| &s.id == subnet)
    {
        return Some((
            "SubnetDrift",
            format!(
                "subnet {subnet} is no longer selected by EC2NodeClass {} (now {})",
                class.name_any(),
                status
                    .subnets
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let have: std::collections::BTreeSet<&str> = instance
        .security_group_ids
        .iter()
        .map(String::as_str)
        .collect();
    let want: std::collections::BTreeSet<&str> = status
        .security_groups
        .iter()
        .map(|g| g.id.as_str())
        .collect();
    if !have.is_empty() && !want.is_empty() && have != want {
        return Some((
            "SecurityGroupDrift",
            format!(
                "security groups {} are not the ones EC2NodeClass {} selects ({})",
                have.iter().copied().collect::<Vec<_>>().join(", "),
                class.name_any(),
                want.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    None
}

fn condition_time(claim: &NodeClaim, type_: &str) -> Option<Timestamp> {
    claim
        .status
        .as_ref()?
        .condition(type_)
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.last_transition_time.0)
}

/// Every initialized, not deleting claim of a NodePool, evaluated.
pub fn evaluate(
    state: &ClusterState,
    pools: &[ReadyPool],
    now: Timestamp,
    instant: Instant,
    instances: &BTreeMap<String, Instance>,
) -> Vec<Evaluated> {
    let mut out = Vec::new();
    for claim in state.node_claims() {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(initialized) = condition_time(
            claim,
            karpctl_api::v1::condition_types::node_claim::INITIALIZED,
        ) else {
            continue;
        };
        let Some(node) = state.node_for_claim(claim) else {
            continue;
        };
        if node.deleting() {
            continue;
        }
        let pool_name = claim
            .labels()
            .get(labels::NODE_POOL)
            .cloned()
            .unwrap_or_default();
        let Some(pool) = state.node_pool(&pool_name) else {
            continue;
        };
        let ready = pools.iter().find(|p| p.pool.name_any() == pool_name);
        let node_labels: BTreeMap<String, String> = node.labels_map();
        let instance_type = node_labels
            .get(labels::INSTANCE_TYPE)
            .cloned()
            .unwrap_or_default();
        let zone = node_labels
            .get(labels::TOPOLOGY_ZONE)
            .cloned()
            .unwrap_or_default();
        let capacity_type = match node_labels.get(labels::CAPACITY_TYPE).map(String::as_str) {
            Some("spot") => Some(CapacityType::Spot),
            Some("on-demand") => Some(CapacityType::OnDemand),
            _ => None,
        };
        let price =
            ready.and_then(|r| price_of(&r.instance_types, &instance_type, &zone, capacity_type));
        let mut pods = Vec::new();
        let mut pod_keys = Vec::new();
        let mut blockers = Vec::new();
        let mut invalid = Vec::new();
        let on_node: Vec<&PodRecord> = state
            .pods_on_node(&node.name)
            .into_iter()
            .filter(|p| p.reschedulable() && !p.deleting)
            .collect();
        for p in &on_node {
            if let Some(b) = pod_blocks(p, now) {
                if p.do_not_disrupt.as_deref() == Some("true") || b.contains("is neither") {
                    if b.contains("is neither") {
                        invalid.push(b);
                    } else {
                        blockers.push(b);
                    }
                } else {
                    blockers.push(b);
                }
            }
            match (&p.movable, &p.scheduling) {
                (Some(view), _) => {
                    pods.push(view.clone());
                    pod_keys.push(p.key());
                }
                (None, Ok(view)) => {
                    pods.push(view.clone());
                    pod_keys.push(p.key());
                }
                (None, Err(e)) => invalid.push(format!("pod {}: {e}", p.key())),
            }
        }
        // PodDisruptionBudgets that allow no disruption now.
        for (p, view) in on_node.iter().zip(&pods) {
            for pdb in state.pdbs() {
                if pdb.metadata.namespace.as_deref() != Some(&*p.namespace) {
                    continue;
                }
                let selects = pdb
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|sel| {
                        karpctl_scheduling::kubernetes::label_selector(sel, "selector").ok()
                    })
                    .is_some_and(|sel| sel.matches(&view.labels));
                let allowed = pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disruptions_allowed)
                    .unwrap_or(0);
                if selects && allowed <= 0 {
                    let b = format!(
                        "PodDisruptionBudget {}/{} allows 0 disruptions (pod {})",
                        p.namespace,
                        pdb.name_any(),
                        p.key()
                    );
                    if !blockers.contains(&b) {
                        blockers.push(b);
                    }
                }
            }
        }
        let disruption = pool.spec.disruption.clone().unwrap_or_default();
        let policy = disruption.consolidation_policy_or_default();
        let last_event = [
            state.last_pod_event(&node.name),
            claim
                .status
                .as_ref()
                .and_then(|s| s.last_pod_event_time.as_ref())
                .map(|t| t.0),
            Some(initialized),
        ]
        .into_iter()
        .flatten()
        .max();
        let consolidatable = match &disruption.consolidate_after {
            NillableDuration::Never => Err(Verdict::candidacy(
                "ConsolidationDisabled",
                vec![],
                format!("NodePool {pool_name} has consolidateAfter: Never"),
            )),
            NillableDuration::After(d) => {
                let since = last_event.unwrap_or(initialized);
                let at = crate::clock::after(since, d.as_std());
                if now >= at {
                    Ok(())
                } else {
                    Err(Verdict::candidacy(
                        "ConsolidateAfter",
                        vec![],
                        format!(
                            "consolidateAfter {} has not passed since the last pod event at {since}",
                            d
                        ),
                    ))
                }
            }
        };
        let expire = claim
            .spec
            .expire_after
            .as_ref()
            .and_then(NillableDuration::as_std);
        let lifetime_left = match (expire, claim.metadata.creation_timestamp.as_ref()) {
            (Some(e), Some(created)) if !e.is_zero() => {
                let age = crate::clock::until(created.0, now);
                (1.0 - age.as_secs_f64() / e.as_secs_f64()).clamp(0.0, 1.0)
            }
            _ => 1.0,
        };
        let empty = pods.is_empty();
        let candidate = Candidate {
            node: node.name.to_string(),
            claim: claim.name_any(),
            node_pool: pool_name.clone(),
            instance_type,
            capacity_type,
            zone,
            price: price.unwrap_or(f64::NAN),
            disruption_cost: (1.0 + pods.len() as f64) * lifetime_left,
            pods,
            pod_keys,
        };
        let annotated = claim
            .annotations()
            .get(labels::DO_NOT_DISRUPT)
            .map(String::as_str)
            == Some("true")
            || node.annotation(labels::DO_NOT_DISRUPT) == Some("true");
        let not_candidate = if annotated {
            Some(Verdict::candidacy(
                "DoNotDisrupt",
                vec![format!(
                    "the node or its NodeClaim has {}=true",
                    labels::DO_NOT_DISRUPT
                )],
                "annotated karpenter.sh/do-not-disrupt".to_owned(),
            ))
        } else if !invalid.is_empty() {
            Some(Verdict::candidacy(
                "InvalidInput",
                invalid.clone(),
                invalid.join("; "),
            ))
        } else if blockers.iter().any(|b| b.contains(labels::DO_NOT_DISRUPT)) {
            Some(Verdict::candidacy(
                "DoNotDisrupt",
                blockers.clone(),
                blockers.join("; "),
            ))
        } else if !blockers.is_empty() {
            Some(Verdict::candidacy(
                "PodDisruptionBudget",
                blockers.clone(),
                blockers.join("; "),
            ))
        } else if state.is_nominated(&node.name, instant)
            || state.is_nominated(&claim.name_any(), instant)
        {
            Some(Verdict::candidacy(
                "Nominated",
                vec![],
                "pending pods were nominated to it in the last 20s".to_owned(),
            ))
        } else {
            None
        };
        let class = state.node_class(&pool.spec.template.spec.node_class_ref.name);
        out.push(Evaluated {
            claim: claim.name_any(),
            pool: pool_name,
            drifted: drift(
                claim,
                &node_labels,
                pool,
                class,
                claim
                    .status
                    .as_ref()
                    .and_then(|s| s.provider_id.as_deref())
                    .and_then(|id| instances.get(id)),
            ),
            candidate,
            not_candidate,
            empty,
            consolidatable,
            policy,
            last_pod_event: state.last_pod_event(&node.name),
        });
    }
    out.sort_by(|a, b| {
        a.candidate
            .disruption_cost
            .total_cmp(&b.candidate.disruption_cost)
            .then_with(|| a.claim.cmp(&b.claim))
    });
    out
}

/// The price of an instance type's offering in a zone and capacity type.
pub fn price_of(
    types: &[InstanceType],
    name: &str,
    zone: &str,
    capacity_type: Option<CapacityType>,
) -> Option<f64> {
    let it = types.iter().find(|t| t.name == name)?;
    it.offerings
        .iter()
        .filter(|o| o.zone == zone && Some(o.capacity_type) == capacity_type)
        .map(|o| o.price)
        .next()
}

/// How many more nodes each pool may lose per reason now (or why its budgets cannot be read).
pub struct Budgets(BTreeMap<(String, DisruptionReason), Result<usize, String>>);

impl Budgets {
    pub fn compute(state: &ClusterState, now: Timestamp) -> Budgets {
        let mut out = BTreeMap::new();
        for pool in state.node_pools() {
            let name = pool.name_any();
            let claims: Vec<&NodeClaim> = state
                .node_claims()
                .filter(|c| c.labels().get(labels::NODE_POOL) == Some(&name))
                .filter(|c| {
                    condition_time(c, karpctl_api::v1::condition_types::node_claim::INITIALIZED)
                        .is_some()
                })
                .collect();
            let disrupting = claims
                .iter()
                .filter(|c| {
                    c.metadata.deletion_timestamp.is_some()
                        || state
                            .node_for_claim(c)
                            .is_some_and(|n| n.deleting() || n.has_taint(labels::DISRUPTED_TAINT))
                })
                .count();
            for reason in [
                DisruptionReason::Empty,
                DisruptionReason::Drifted,
                DisruptionReason::Underutilized,
            ] {
                out.insert(
                    (name.clone(), reason),
                    budgets::allowed(pool, reason, claims.len(), disrupting, now),
                );
            }
        }
        Budgets(out)
    }

    pub fn get(&self, pool: &str, reason: DisruptionReason) -> Result<usize, String> {
        self.0
            .get(&(pool.to_owned(), reason))
            .cloned()
            .unwrap_or(Ok(0))
    }

    pub fn iter(
        &self,
    ) -> impl Iterator<Item = (&(String, DisruptionReason), &Result<usize, String>)> {
        self.0.iter()
    }

    fn take(&mut self, pool: &str, reason: DisruptionReason) -> Result<(), String> {
        match self.0.get_mut(&(pool.to_owned(), reason)) {
            Some(Ok(n)) if *n > 0 => {
                *n -= 1;
                Ok(())
            }
            Some(Err(e)) => Err(e.clone()),
            _ => Err(format!(
                "the NodePool's disruption budget for {} allows no more nodes now",
                budgets::reason_name(reason)
            )),
        }
    }
}

fn budget_verdict(method: Method, why: String, price: f64) -> Verdict {
    Verdict {
        method: method.name(),
        outcome: if why.starts_with("spec.disruption") {
            "InvalidInput"
        } else {
            "BudgetExhausted"
        },
        blockers: vec![why.clone()],
        message: why,
        price: price.is_finite().then_some(price),
        replacement_price: None,
    }
}

fn outcome_verdict(method: Method, c: &Candidate, outcome: &Outcome) -> Verdict {
    let (name, message, blockers) = match outcome {
        Outcome::Delete => (
            "Disrupting",
            "its pods fit on other nodes".to_owned(),
            vec![],
        ),
        Outcome::Replace(plan) => (
            "Disrupting",
            format!(
                "replacing with a cheaper {} {}",
                plan.capacity_type, plan.instance_type
            ),
            vec![],
        ),
        Outcome::Blocked(b) => (
            match b {
                Blocked::PodUnschedulable { .. } => "PodsCannotMove",
                Blocked::NeedsSeveralNodes { .. } => "NeedsSeveralNodes",
                Blocked::NoCheaperOption { .. } => "NoCheaperOption",
                Blocked::SpotToSpotDisabled | Blocked::TooFewSpotOptions { .. } => "SpotToSpot",
            },
            b.to_string(),
            match b {
                Blocked::PodUnschedulable { pod, .. } => vec![format!("pod {pod}")],
                _ => vec![],
            },
        ),
    };
    Verdict {
        method: method.name(),
        outcome: name,
        blockers,
        message,
        price: c.price.is_finite().then_some(c.price),
        replacement_price: outcome.replacement_price(),
    }
}

/// The pass's result: at most one command, and a verdict for every claim looked at.
#[derive(Debug, Default)]
pub struct Decision {
    pub command: Option<Command>,
    pub verdicts: BTreeMap<String, Verdict>,
}

/// Run the methods in order over the evaluated claims.
pub fn decide(evaluated: &[Evaluated], mut budgets: Budgets, sim: &Simulator) -> Decision {
    let mut d = Decision::default();
    for e in evaluated {
        if let Some(v) = &e.not_candidate {
            d.verdicts.insert(e.claim.clone(), v.clone());
        }
    }
    let eligible: Vec<&Evaluated> = evaluated
        .iter()
        .filter(|e| e.not_candidate.is_none())
        .collect();

    // 1. Emptiness.
    let mut empties = Vec::new();
    for e in eligible.iter().filter(|e| e.empty) {
        match &e.consolidatable {
            Err(v) => {
                d.verdicts.insert(e.claim.clone(), v.clone());
            }
            Ok(()) => match budgets.take(&e.pool, DisruptionReason::Empty) {
                Ok(()) => {
                    d.verdicts.insert(
                        e.claim.clone(),
                        Verdict {
                            method: Method::Emptiness.name(),
                            outcome: "Disrupting",
                            blockers: vec![],
                            message: "empty".to_owned(),
                            price: e.candidate.price.is_finite().then_some(e.candidate.price),
                            replacement_price: Some(0.0),
                        },
                    );
                    empties.push(e.candidate.clone());
                }
                Err(why) => {
                    d.verdicts.insert(
                        e.claim.clone(),
                        budget_verdict(Method::Emptiness, why, e.candidate.price),
                    );
                }
            },
        }
    }
    if !empties.is_empty() {
        d.command = Some(Command {
            method: Method::Emptiness,
            reason: DisruptionReason::Empty,
            candidates: empties,
            replacements: vec![],
        });
        return d;
    }

    // 2. Drift.
    for e in eligible.iter().filter(|e| e.drifted.is_some()) {
        let (reason, message) = e.drifted.clone().expect("drifted");
        if let Err(why) = budgets
            .get(&e.pool, DisruptionReason::Drifted)
            .and_then(|n| {
                if n == 0 {
                    Err(
                        "the NodePool's disruption budget for Drifted allows no more nodes now"
                            .to_owned(),
                    )
                } else {
                    Ok(())
                }
            })
        {
            let mut v = budget_verdict(Method::Drift, why, e.candidate.price);
            v.message = format!("drifted ({reason}: {message}); {}", v.message);
            d.verdicts.insert(e.claim.clone(), v);
            continue;
        }
        match sim.replacements(&[&e.candidate]) {
            Ok(plans) => {
                d.verdicts.insert(
                    e.claim.clone(),
                    Verdict {
                        method: Method::Drift.name(),
                        outcome: "Disrupting",
                        blockers: vec![],
                        message: format!("drifted ({reason}): {message}"),
                        price: e.candidate.price.is_finite().then_some(e.candidate.price),
                        replacement_price: Some(plans.iter().map(|p| p.price).sum()),
                    },
                );
                d.command = Some(Command {
                    method: Method::Drift,
                    reason: DisruptionReason::Drifted,
                    candidates: vec![e.candidate.clone()],
                    replacements: plans,
                });
                return d;
            }
            Err(b) => {
                d.verdicts.insert(
                    e.claim.clone(),
                    Verdict {
                        method: Method::Drift.name(),
                        outcome: "PodsCannotMove",
                        blockers: match &b {
                            Blocked::PodUnschedulable { pod, .. } => vec![format!("pod {pod}")],
                            _ => vec![],
                        },
                        message: format!("drifted ({reason}) but {b}"),
                        price: e.candidate.price.is_finite().then_some(e.candidate.price),
                        replacement_price: None,
                    },
                );
            }
        }
    }

    // 3 and 4. Consolidation of underutilized nodes.
    let mut underutilized = Vec::new();
    let mut room: BTreeMap<String, Result<usize, String>> = BTreeMap::new();
    for e in eligible.iter().filter(|e| !e.empty && e.drifted.is_none()) {
        if let Err(v) = &e.consolidatable {
            d.verdicts.insert(e.claim.clone(), v.clone());
            continue;
        }
        if e.policy == ConsolidationPolicy::WhenEmpty {
            d.verdicts.insert(
                e.claim.clone(),
                Verdict::candidacy(
                    "ConsolidationDisabled",
                    vec![],
                    format!(
                        "NodePool {} has consolidationPolicy: WhenEmpty and the node runs {} pod(s)",
                        e.pool,
                        e.candidate.pods.len()
                    ),
                ),
            );
            continue;
        }
        if !e.candidate.price.is_finite() {
            d.verdicts.insert(
                e.claim.clone(),
                Verdict::candidacy(
                    "InvalidInput",
                    vec![],
                    format!(
                        "instance type {} ({} {:?}) is no longer offered to NodePool {}; not consolidated",
                        e.candidate.instance_type,
                        e.candidate.zone,
                        e.candidate.capacity_type.map(CapacityType::as_str),
                        e.pool
                    ),
                ),
            );
            continue;
        }
        let left = room
            .entry(e.pool.clone())
            .or_insert_with(|| budgets.get(&e.pool, DisruptionReason::Underutilized));
        match left {
            Ok(n) if *n > 0 => {
                *n -= 1;
                underutilized.push(e.candidate.clone());
            }
            Ok(_) => {
                d.verdicts.insert(
                    e.claim.clone(),
                    budget_verdict(
                        Method::SingleNodeConsolidation,
                        "the NodePool's disruption budget for Underutilized allows no more nodes now".to_owned(),
                        e.candidate.price,
                    ),
                );
            }
            Err(why) => {
                d.verdicts.insert(
                    e.claim.clone(),
                    budget_verdict(
                        Method::SingleNodeConsolidation,
                        why.clone(),
                        e.candidate.price,
                    ),
                );
            }
        }
    }
    if let Some((chosen, outcome)) = sim.multi_node(&underutilized) {
        for c in &chosen {
            d.verdicts.insert(
                c.claim.clone(),
                outcome_verdict(Method::MultiNodeConsolidation, c, &outcome),
            );
        }
        d.command = Some(Command {
            method: Method::MultiNodeConsolidation,
            reason: DisruptionReason::Underutilized,
            candidates: chosen.into_iter().cloned().collect(),
            replacements: match outcome {
                Outcome::Replace(plan) => vec![*plan],
                _ => vec![],
            },
        });
        return d;
    }
    let (found, tried) = sim.single_node(&underutilized);
    for (c, outcome) in &tried {
        d.verdicts.insert(
            c.claim.clone(),
            outcome_verdict(Method::SingleNodeConsolidation, c, outcome),
        );
    }
    if let Some((c, outcome)) = found {
        d.verdicts.insert(
            c.claim.clone(),
            outcome_verdict(Method::SingleNodeConsolidation, c, &outcome),
        );
        d.command = Some(Command {
            method: Method::SingleNodeConsolidation,
            reason: DisruptionReason::Underutilized,
            candidates: vec![c.clone()],
            replacements: match outcome {
                Outcome::Replace(plan) => vec![*plan],
                _ => vec![],
            },
        });
    }
    d
}

/// Whether the candidates of a command are still what they were (for the re-check).
pub fn same_candidates(command: &Command, evaluated: &[Evaluated]) -> bool {
    command.candidates.iter().all(|c| {
        evaluated.iter().any(|e| {
            e.claim == c.claim
                && e.not_candidate.is_none()
                && e.candidate.pod_keys == c.pod_keys
                && (command.method == Method::Drift || e.consolidatable.is_ok())
        })
    })
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs, clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use karpctl_cloud::{Offering, Resources};
    use karpctl_scheduling::disruption::Options;
    use serde_json::json;
    use std::sync::Arc;

    fn now() -> Timestamp {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    fn itype(name: &str, cpu: i64, price: f64) -> InstanceType {
        let mut r = Resources::default();
        r.cpu = cpu * 1000;
        r.memory = (cpu * 4) << 30;
        r.pods = 110;
        InstanceType {
            name: name.into(),
            labels: [(labels::INSTANCE_TYPE.to_owned(), name.to_owned())].into(),
            capacity: r.clone(),
            overhead: Default::default(),
            allocatable: r,
            offerings: vec![Offering {
                zone: "us-west-2a".into(),
                capacity_type: CapacityType::OnDemand,
                price,
                available: true,
            }],
        }
    }

    fn pool(budget: &str) -> NodePool {
        serde_json::from_value(json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "default"},
            "spec": {
                "disruption": {"consolidateAfter": "0s", "budgets": [{"nodes": budget}]},
                "template": {"spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                    "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}]
                }}
            }
        }))
        .unwrap()
    }

    fn ready(pool: &NodePool) -> ReadyPool {
        ReadyPool {
            pool: pool.clone(),
            node_class: serde_json::from_value(json!({
                "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": "default"},
                "spec": {"role": "r", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                         "subnetSelectorTerms": [{"tags": {"a": "b"}}], "securityGroupSelectorTerms": [{"tags": {"a": "b"}}]}
            }))
            .unwrap(),
            instance_types: Arc::new(vec![itype("small", 2, 0.1), itype("big", 8, 0.4)]),
        }
    }

    /// A node of type `it` with its initialized claim.
    fn add_node(s: &mut ClusterState, name: &str, it: &str) {
        let id = format!("aws:///us-west-2a/i-{name}");
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                labels::INSTANCE_TYPE: it, labels::TOPOLOGY_ZONE: "us-west-2a",
                labels::CAPACITY_TYPE: "on-demand", labels::NODE_POOL: "default",
                labels::HOSTNAME: name, labels::NODE_INITIALIZED: "true"}},
            "spec": {"providerID": id},
            "status": {"allocatable": {"cpu": if it == "big" {"8"} else {"2"}, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let claim: NodeClaim = serde_json::from_value(json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": format!("claim-{name}"), "labels": {labels::NODE_POOL: "default"},
                         "creationTimestamp": "2026-12-07T10:00:00Z"},
            "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
            "status": {"providerID": id, "nodeName": name, "conditions": [
                {"type": "Initialized", "status": "True", "reason": "Initialized", "message": "", "lastTransitionTime": "2026-12-07T10:00:00Z"}]}
        }))
        .unwrap();
        s.apply(node);
        s.apply(claim);
    }

    fn add_pod(s: &mut ClusterState, name: &str, node: &str, annotations: serde_json::Value) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}, "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                     "resources": {"requests": {"cpu": "500m"}}}]},
            "status": {"phase": "Running", "startTime": "2026-12-07T11:50:00Z"}
        }))
        .unwrap();
        s.apply(pod);
    }

    fn state(budget: &str) -> (ClusterState, Vec<ReadyPool>) {
        let mut s = ClusterState::new();
        let p = pool(budget);
        s.apply(p.clone());
        (s, vec![ready(&p)])
    }

    fn run(s: &ClusterState, pools: &[ReadyPool]) -> Decision {
        let evaluated = evaluate(s, pools, now(), Instant::now(), &BTreeMap::new());
        let (sp, existing, ds) = crate::provisioning::scheduling_inputs(s, pools, Instant::now());
        let sim = Simulator::new(sp, existing, ds, vec![], Options::default());
        decide(&evaluated, Budgets::compute(s, now()), &sim)
    }

    #[test]
    fn empty_nodes_go_within_the_budget_and_the_others_are_told_why() {
        let (mut s, pools) = state("1");
        for n in ["a", "b", "c"] {
            add_node(&mut s, n, "small");
        }
        let d = run(&s, &pools);
        let cmd = d.command.expect("an emptiness command");
        assert_eq!(cmd.method, Method::Emptiness);
        assert_eq!(cmd.candidates.len(), 1, "the budget allows one node");
        let exhausted = d
            .verdicts
            .values()
            .filter(|v| v.outcome == "BudgetExhausted")
            .count();
        assert_eq!(exhausted, 2);
    }

    #[test]
    fn do_not_disrupt_pods_and_pdbs_at_zero_keep_nodes_out_and_are_named() {
        let (mut s, pools) = state("100%");
        add_node(&mut s, "a", "big");
        add_node(&mut s, "b", "big");
        add_node(&mut s, "c", "big");
        add_pod(&mut s, "held", "a", json!({labels::DO_NOT_DISRUPT: "true"}));
        add_pod(&mut s, "guarded", "b", json!({}));
        add_pod(&mut s, "free", "c", json!({}));
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "guard", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}, "maxUnavailable": 0},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}
        }))
        .unwrap();
        s.apply(pdb);
        let d = run(&s, &pools);
        let a = &d.verdicts["claim-a"];
        assert_eq!(a.outcome, "DoNotDisrupt");
        assert!(a.blockers[0].contains("default/held"), "{a:?}");
        let b = &d.verdicts["claim-b"];
        assert_eq!(b.outcome, "PodDisruptionBudget");
        assert!(b.blockers[0].contains("default/guard"), "{b:?}");
        // The free node is consolidated (its pod fits on a cheaper node or elsewhere); the
        // held and guarded ones never are.
        let cmd = d.command.expect("a consolidation");
        assert!(cmd.candidates.iter().all(|c| c.node == "c"), "{cmd:?}");
        let saved = cmd.candidates.iter().map(|c| c.price).sum::<f64>()
            - cmd.replacements.iter().map(|r| r.price).sum::<f64>();
        assert!(saved > 0.0);
    }

    #[test]
    fn do_not_disrupt_as_a_duration_counts_from_the_pod_start() {
        let (mut s, _) = state("1");
        add_pod(&mut s, "recent", "a", json!({labels::DO_NOT_DISRUPT: "1h"}));
        add_pod(&mut s, "old", "a", json!({labels::DO_NOT_DISRUPT: "5m"}));
        add_pod(&mut s, "bad", "a", json!({labels::DO_NOT_DISRUPT: "soon"}));
        let p = |n: &str| s.pod(&format!("default/{n}")).unwrap();
        assert!(pod_blocks(p("recent"), now()).is_some());
        assert!(pod_blocks(p("old"), now()).is_none());
        let bad = pod_blocks(p("bad"), now()).unwrap();
        assert!(bad.contains("is neither"), "{bad}");
    }

    #[test]
    fn drift_is_found_by_pool_hash_requirements_ami_subnet_and_security_groups() {
        let pool = pool("1");
        let mut claim: NodeClaim = serde_json::from_value(json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": "c", "annotations": {
                labels::NODE_POOL_HASH: crate::nodepool::hash(&pool),
                labels::NODE_POOL_HASH_VERSION: karpctl_api::v1::NODE_POOL_HASH_VERSION}},
            "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
            "status": {"imageID": "ami-old"}
        }))
        .unwrap();
        let on_demand: BTreeMap<String, String> =
            [(labels::CAPACITY_TYPE.to_owned(), "on-demand".to_owned())].into();
        assert_eq!(drift(&claim, &on_demand, &pool, None, None), None);
        let mut relabelled = pool.clone();
        relabelled
            .spec
            .template
            .metadata
            .labels
            .insert("team".into(), "a".into());
        assert_eq!(
            drift(&claim, &on_demand, &relabelled, None, None).map(|d| d.0),
            Some("NodePoolDrifted")
        );
        let spot: BTreeMap<String, String> =
            [(labels::CAPACITY_TYPE.to_owned(), "spot".to_owned())].into();
        assert_eq!(
            drift(&claim, &spot, &pool, None, None).map(|d| d.0),
            Some("RequirementsDrifted")
        );
        let mut class = ready(&pool).node_class;
        class.status = Some(
            serde_json::from_value(json!({"amis": [{"id": "ami-new", "requirements": []}]}))
                .unwrap(),
        );
        assert_eq!(
            drift(&claim, &on_demand, &pool, Some(&class), None).map(|d| d.0),
            Some("AMIDrift")
        );
        claim.status.as_mut().unwrap().image_id = Some("ami-new".into());
        assert_eq!(drift(&claim, &on_demand, &pool, Some(&class), None), None);
        // The instance's subnet and security groups against what the class selects now.
        class.status = Some(
            serde_json::from_value(json!({
                "amis": [{"id": "ami-new", "requirements": []}],
                "subnets": [{"id": "subnet-a", "zone": "us-west-2a"}, {"id": "subnet-b", "zone": "us-west-2b"}],
                "securityGroups": [{"id": "sg-1"}, {"id": "sg-2"}]
            }))
            .unwrap(),
        );
        let mut instance = karpctl_cloud::Instance {
            provider_id: "aws:///us-west-2a/i-1".into(),
            id: "i-1".into(),
            instance_type: "m5.large".into(),
            zone: "us-west-2a".into(),
            capacity_type: CapacityType::OnDemand,
            image_id: "ami-new".into(),
            subnet_id: Some("subnet-a".into()),
            security_group_ids: vec!["sg-2".into(), "sg-1".into()],
            state: karpctl_cloud::InstanceState::Running,
            launch_time: None,
            tags: BTreeMap::new(),
        };
        let d = |i: &karpctl_cloud::Instance| {
            drift(&claim, &on_demand, &pool, Some(&class), Some(i)).map(|d| d.0)
        };
        assert_eq!(d(&instance), None);
        instance.subnet_id = Some("subnet-c".into());
        assert_eq!(d(&instance), Some("SubnetDrift"));
        instance.subnet_id = Some("subnet-b".into());
        instance.security_group_ids = vec!["sg-1".into()];
        assert_eq!(d(&instance), Some("SecurityGroupDrift"));
        instance.security_group_ids = vec!["sg-1".into(), "sg-2".into(), "sg-3".into()];
        assert_eq!(d(&instance), Some("SecurityGroupDrift"));
    }
}

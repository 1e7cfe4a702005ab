//! The edge from Kubernetes objects to the scheduler's domain types ("parse, don't
//! validate"): a `Pod` (or a workload's pod template) becomes a [`Pod`], a `Node` an
//! [`ExistingNode`]. Every rejection names the field it could not accept, so a CLI can say
//! which file, object and field is wrong.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use karpctl_cloud::Resources;

use crate::nodepool::ExistingNode;
use crate::pod::{HostPort, Pod, PodAffinityTerm, TopologySpread, WhenUnsatisfiable};
use crate::requirements::{Operator, Requirement, Requirements};
use crate::selector::{LabelSelector, SelectorExpression, SelectorOperator};
use crate::taints::{Effect, Taint, Toleration};

/// A field of a Kubernetes object that cannot be used, with the field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConversionError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl ToString) -> ConversionError {
    ConversionError {
        field: field.into(),
        message: message.to_string(),
    }
}

/// `matchExpressions` of a node selector term, as requirements.
pub fn requirements(
    expressions: &[core::NodeSelectorRequirement],
    field: &str,
) -> Result<Requirements, ConversionError> {
    let mut out = Requirements::new();
    for (i, e) in expressions.iter().enumerate() {
        out.add(requirement(
            &e.key,
            &e.operator,
            e.values.as_deref().unwrap_or(&[]),
            &format!("{field}[{i}]"),
        )?);
    }
    Ok(out)
}

/// One requirement from its parts (`key`, `operator`, `values`).
pub fn requirement(
    key: &str,
    operator: &str,
    values: &[String],
    field: &str,
) -> Result<Requirement, ConversionError> {
    let op: Operator = operator
        .parse()
        .map_err(|e| err(format!("{field}.operator"), e))?;
    Requirement::new(key, op, values).map_err(|e| err(field, e))
}

pub fn taint(t: &core::Taint, field: &str) -> Result<Taint, ConversionError> {
    let effect: Effect = t
        .effect
        .parse()
        .map_err(|e: String| err(format!("{field}.effect"), e))?;
    Ok(Taint {
        key: t.key.clone(),
        value: t.value.clone().unwrap_or_default(),
        effect,
    })
}

pub fn toleration(t: &core::Toleration, field: &str) -> Result<Toleration, ConversionError> {
    let exists = match t.operator.as_deref() {
        None | Some("Equal") => false,
        Some("Exists") => true,
        Some(other) => {
            return Err(err(
                format!("{field}.operator"),
                format!("unknown operator {other:?} (expected Equal or Exists)"),
            ));
        }
    };
    let effect = match t.effect.as_deref() {
        None | Some("") => None,
        Some(e) => Some(
            e.parse()
                .map_err(|e: String| err(format!("{field}.effect"), e))?,
        ),
    };
    Ok(Toleration {
        key: t.key.clone().unwrap_or_default(),
        exists,
        value: t.value.clone().unwrap_or_default(),
        effect,
    })
}

pub fn label_selector(
    s: &meta::LabelSelector,
    field: &str,
) -> Result<LabelSelector, ConversionError> {
    let mut out = LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let operator = match e.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            other => {
                return Err(err(
                    format!("{field}.matchExpressions[{i}].operator"),
                    format!(
                        "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                    ),
                ));
            }
        };
        out.match_expressions.push(SelectorExpression {
            key: e.key.clone(),
            operator,
            values: e.values.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

fn with_match_label_keys(
    mut selector: LabelSelector,
    keys: Option<&Vec<String>>,
    labels: &BTreeMap<String, String>,
) -> LabelSelector {
    for key in keys.into_iter().flatten() {
        if let Some(v) = labels.get(key) {
            selector.match_expressions.push(SelectorExpression {
                key: key.clone(),
                operator: SelectorOperator::In,
                values: vec![v.clone()],
            });
        }
    }
    selector
}

fn affinity_term(
    t: &core::PodAffinityTerm,
    labels: &BTreeMap<String, String>,
    anti: bool,
    field: &str,
) -> Result<PodAffinityTerm, ConversionError> {
    let selector = match &t.label_selector {
        Some(s) => label_selector(s, &format!("{field}.labelSelector"))?,
        // No selector selects no pods; an impossible expression says so.
        None => LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![SelectorExpression {
                key: "karpctl.invalid/no-selector".into(),
                operator: SelectorOperator::Exists,
                values: Vec::new(),
            }],
        },
    };
    if t.topology_key.is_empty() {
        return Err(err(format!("{field}.topologyKey"), "must not be empty"));
    }
    let (namespaces, all_namespaces) = namespace_scope(t, anti, field)?;
    Ok(PodAffinityTerm {
        topology_key: t.topology_key.clone(),
        selector: with_match_label_keys(selector, t.match_label_keys.as_ref(), labels),
        namespaces,
        all_namespaces,
    })
}

/// The label the API server puts on every Namespace: its own name.
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// The namespaces a term counts pods in: `namespaces` united with those its
/// `namespaceSelector` selects (neither given: the pod's own, an empty list here).
///
/// Namespace labels are not an input of the scheduler, so a non-empty selector is resolved
/// only when it names namespaces by their `kubernetes.io/metadata.name` label (matchLabels
/// or `In`), which is exact. Any other selector is approximated: for anti-affinity as every
/// namespace (more pods count, so the plan may keep pods apart that could share a node or
/// zone, but never puts one where the kube-scheduler would refuse it); for affinity as the
/// listed namespaces, or the pod's own when none are listed (it may count pods the
/// kube-scheduler would not, or miss some it would).
fn namespace_scope(
    t: &core::PodAffinityTerm,
    anti: bool,
    field: &str,
) -> Result<(Vec<String>, bool), ConversionError> {
    let mut namespaces = t.namespaces.clone().unwrap_or_default();
    let Some(s) = &t.namespace_selector else {
        return Ok((namespaces, false));
    };
    let s = label_selector(s, &format!("{field}.namespaceSelector"))?;
    if s.match_labels.is_empty() && s.match_expressions.is_empty() {
        // An empty namespaceSelector ({}) selects every namespace.
        return Ok((Vec::new(), true));
    }
    // Names allowed by every part of the selector, when each part is by name.
    let mut named: Option<Vec<String>> = None;
    let mut by_name_only = true;
    let mut allow = |names: Vec<String>| {
        named = Some(match named.take() {
            None => names,
            Some(before) => before.into_iter().filter(|n| names.contains(n)).collect(),
        });
    };
    for (k, v) in &s.match_labels {
        if k == NAMESPACE_NAME {
            allow(vec![v.clone()]);
        } else {
            by_name_only = false;
        }
    }
    for e in &s.match_expressions {
        if e.key == NAMESPACE_NAME && e.operator == SelectorOperator::In {
            allow(e.values.clone());
        } else {
            by_name_only = false;
        }
    }
    match named {
        Some(names) if by_name_only && !names.is_empty() => {
            namespaces.extend(names);
            namespaces.sort();
            namespaces.dedup();
            Ok((namespaces, false))
        }
        _ if anti => Ok((Vec::new(), true)),
        _ => Ok((namespaces, false)),
    }
}

/// Required terms, and preferred terms with their weights.
type AffinityTerms = (Vec<PodAffinityTerm>, Vec<(i32, PodAffinityTerm)>);

/// The required and weighted preferred terms of a podAffinity or podAntiAffinity (the two
/// Kubernetes types share their fields, not a type); `field` names the block for errors.
fn affinity_terms(
    required: Option<&[core::PodAffinityTerm]>,
    preferred: Option<&[core::WeightedPodAffinityTerm]>,
    labels: &BTreeMap<String, String>,
    anti: bool,
    field: &str,
) -> Result<AffinityTerms, ConversionError> {
    let required = (required.unwrap_or_default().iter().enumerate())
        .map(|(i, t)| {
            let f = format!("{field}.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
            affinity_term(t, labels, anti, &f)
        })
        .collect::<Result<_, _>>()?;
    let preferred = (preferred.unwrap_or_default().iter().enumerate())
        .map(|(i, t)| {
            let f = format!(
                "{field}.preferredDuringSchedulingIgnoredDuringExecution[{i}].podAffinityTerm"
            );
            Ok((
                t.weight,
                affinity_term(&t.pod_affinity_term, labels, anti, &f)?,
            ))
        })
        .collect::<Result<_, _>>()?;
    Ok((required, preferred))
}

fn container_requests(c: &core::Container, field: &str) -> Result<Resources, ConversionError> {
    let Some(res) = &c.resources else {
        return Ok(Resources::default());
    };
    // Requests default to limits when only limits are set.
    let mut list: BTreeMap<String, String> = res
        .limits
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in res.requests.iter().flatten() {
        list.insert(k.clone(), v.0.clone());
    }
    Resources::from_quantities(list.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| err(format!("{field}.resources"), e))
}

/// The pod's effective request as the kube-scheduler computes it: the larger of the summed
/// app containers (plus restartable init "sidecars") and the largest init container, plus
/// the pod overhead.
pub fn pod_requests(spec: &core::PodSpec, field: &str) -> Result<Resources, ConversionError> {
    let mut sum = Resources::default();
    for (i, c) in spec.containers.iter().enumerate() {
        sum.add(&container_requests(c, &format!("{field}.containers[{i}]"))?);
    }
    let mut init_max = Resources::default();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = container_requests(c, &format!("{field}.initContainers[{i}]"))?;
        if c.restart_policy.as_deref() == Some("Always") {
            sum.add(&r);
        } else {
            init_max = init_max.max(&r);
        }
    }
    let mut total = sum.max(&init_max);
    if let Some(overhead) = &spec.overhead {
        let list: Vec<(&str, &str)> = overhead
            .iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str()))
            .collect();
        total.add(
            &Resources::from_quantities(list).map_err(|e| err(format!("{field}.overhead"), e))?,
        );
    }
    total.pods = 0;
    Ok(total)
}

/// A pod from its metadata and spec (a Pod, or a workload's pod template).
pub fn pod_from_spec(
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    spec: &core::PodSpec,
    field: &str,
) -> Result<Pod, ConversionError> {
    let mut pod = Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels: labels.clone(),
        requests: pod_requests(spec, field)?,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        ..Pod::default()
    };
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        pod.tolerations
            .push(toleration(t, &format!("{field}.tolerations[{i}]"))?);
    }
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            if let Some(port) = p.host_port.filter(|p| *p > 0) {
                if port > 65535 {
                    return Err(err(
                        format!("{field}.containers[{ci}].ports[{pi}].hostPort"),
                        "must be at most 65535",
                    ));
                }
                pod.host_ports.push(HostPort {
                    port,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    if let Some(affinity) = &spec.affinity {
        if let Some(na) = &affinity.node_affinity {
            if let Some(required) = &na.required_during_scheduling_ignored_during_execution {
                for (i, term) in required.node_selector_terms.iter().enumerate() {
                    let f = format!(
                        "{field}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"
                    );
                    pod.required_terms.push(requirements(
                        term.match_expressions.as_deref().unwrap_or(&[]),
                        &format!("{f}.matchExpressions"),
                    )?);
                }
            }
            for (i, p) in na
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let f = format!(
                    "{field}.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference.matchExpressions"
                );
                pod.preferred_terms.push((
                    p.weight,
                    requirements(p.preference.match_expressions.as_deref().unwrap_or(&[]), &f)?,
                ));
            }
        }
        if let Some(pa) = &affinity.pod_affinity {
            let (required, preferred) = affinity_terms(
                pa.required_during_scheduling_ignored_during_execution
                    .as_deref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_deref(),
                labels,
                false,
                &format!("{field}.affinity.podAffinity"),
            )?;
            pod.affinity.extend(required);
            pod.preferred_affinity.extend(preferred);
        }
        if let Some(pa) = &affinity.pod_anti_affinity {
            let (required, preferred) = affinity_terms(
                pa.required_during_scheduling_ignored_during_execution
                    .as_deref(),
                pa.preferred_during_scheduling_ignored_during_execution
                    .as_deref(),
                labels,
                true,
                &format!("{field}.affinity.podAntiAffinity"),
            )?;
            pod.anti_affinity.extend(required);
            pod.preferred_anti_affinity.extend(preferred);
        }
    }
    for (i, c) in spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
    {
        let f = format!("{field}.topologySpreadConstraints[{i}]");
        if c.max_skew < 1 {
            return Err(err(format!("{f}.maxSkew"), "must be at least 1"));
        }
        let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
            "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
            "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
            other => {
                return Err(err(
                    format!("{f}.whenUnsatisfiable"),
                    format!("unknown value {other:?} (expected DoNotSchedule or ScheduleAnyway)"),
                ));
            }
        };
        let selector = match &c.label_selector {
            Some(s) => label_selector(s, &format!("{f}.labelSelector"))?,
            None => LabelSelector::default(),
        };
        pod.topology_spread.push(TopologySpread {
            topology_key: c.topology_key.clone(),
            max_skew: c.max_skew as u32,
            min_domains: c.min_domains.map(|m| m.max(1) as u32),
            when_unsatisfiable,
            selector: with_match_label_keys(selector, c.match_label_keys.as_ref(), labels),
        });
    }
    Ok(pod)
}

impl TryFrom<&core::Pod> for Pod {
    type Error = ConversionError;
    fn try_from(p: &core::Pod) -> Result<Self, Self::Error> {
        let spec = p.spec.as_ref().ok_or_else(|| err("spec", "missing"))?;
        pod_from_spec(
            p.metadata.namespace.as_deref().unwrap_or("default"),
            p.metadata.name.as_deref().unwrap_or(""),
            &p.metadata.labels.clone().unwrap_or_default(),
            spec,
            "spec",
        )
    }
}

/// An existing node with the pods bound to it (owned or already shared).
pub fn existing_node<P: Into<std::sync::Arc<Pod>>>(
    node: &core::Node,
    pods: Vec<P>,
) -> Result<ExistingNode, ConversionError> {
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(|a| {
            let list: Vec<(&str, &str)> =
                a.iter().map(|(k, v)| (k.as_str(), v.0.as_str())).collect();
            Resources::from_quantities(list)
        })
        .transpose()
        .map_err(|e| err("status.allocatable", e))?
        .ok_or_else(|| {
            err(
                "status.allocatable",
                "missing: an existing node must say what it can hold",
            )
        })?;
    let mut taints = Vec::new();
    for (i, t) in node
        .spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .enumerate()
    {
        taints.push(taint(t, &format!("spec.taints[{i}]"))?);
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut labels = node.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(karpctl_cloud::labels::HOSTNAME.to_string())
        .or_insert_with(|| name.clone());
    Ok(ExistingNode {
        name,
        labels,
        taints,
        allocatable,
        pods: pods.into_iter().map(Into::into).collect(),
        in_flight: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Pod, ConversionError> {
        let p: core::Pod = serde_json::from_value(json).unwrap();
        Pod::try_from(&p)
    }

    #[test]
    fn requests_take_the_larger_of_containers_and_init() {
        let pod = parse(serde_json::json!({
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "256Mi"}}}
                ],
                "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}]
            }
        }))
        .unwrap();
        assert_eq!(pod.requests.cpu, 2000);
        assert_eq!(pod.requests.memory, (1 << 30) + (256 << 20));
        assert_eq!(pod.namespace, "ns");
    }

    #[test]
    fn affinity_spread_ports_and_tolerations() {
        let pod = parse(serde_json::json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]},
                        {"matchExpressions": [{"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["4"]}]}
                    ]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}
                    ]}
                },
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                     "labelSelector": {"matchLabels": {"app": "web"}}}
                ]
            }
        }))
        .unwrap();
        assert_eq!(pod.required_terms.len(), 2);
        assert_eq!(pod.anti_affinity.len(), 1);
        assert_eq!(pod.topology_spread.len(), 1);
        assert_eq!(pod.host_ports[0].port, 8080);
        assert!(pod.tolerations[0].exists);
    }

    /// Regression: a non-empty namespaceSelector was read as "the pod's own namespace", so
    /// required anti-affinity against pods in other, selected namespaces was not honoured.
    #[test]
    fn namespace_selectors_resolve_by_name_or_err_safely() {
        let by_name = |op: &str, values: &[&str]| {
            serde_json::json!({"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": op, "values": values}
            ]})
        };
        let team = serde_json::json!({"matchLabels": {"team": "a"}});
        // (namespaces, namespaceSelector, anti-affinity?) -> (namespaces, all namespaces)
        type Case<'a> = (
            Option<Vec<&'a str>>,
            Option<serde_json::Value>,
            bool,
            Vec<&'a str>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (None, None, true, vec![], false),
            (Some(vec!["b"]), None, true, vec!["b"], false),
            (None, Some(serde_json::json!({})), false, vec![], true),
            (
                None,
                Some(by_name("In", &["x", "y"])),
                true,
                vec!["x", "y"],
                false,
            ),
            (
                None,
                Some(by_name("In", &["x", "y"])),
                false,
                vec!["x", "y"],
                false,
            ),
            (
                None,
                Some(serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": "x"}})),
                true,
                vec!["x"],
                false,
            ),
            (
                Some(vec!["b"]),
                Some(by_name("In", &["x"])),
                false,
                vec!["b", "x"],
                false,
            ),
            // Labels the scheduler cannot see: anti-affinity counts every namespace...
            (None, Some(team.clone()), true, vec![], true),
            (None, Some(by_name("NotIn", &["x"])), true, vec![], true),
            // ... affinity keeps the listed namespaces, or the pod's own.
            (None, Some(team.clone()), false, vec![], false),
            (Some(vec!["b"]), Some(team), false, vec!["b"], false),
        ];
        for (namespaces, selector, anti, want, all) in cases {
            let mut term = serde_json::json!({
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app": "db"}}
            });
            if let Some(ns) = &namespaces {
                term["namespaces"] = serde_json::json!(ns);
            }
            if let Some(sel) = &selector {
                term["namespaceSelector"] = sel.clone();
            }
            let block = if anti {
                "podAntiAffinity"
            } else {
                "podAffinity"
            };
            let pod = parse(serde_json::json!({
                "metadata": {"name": "web", "namespace": "a"},
                "spec": {
                    "containers": [{"name": "a"}],
                    "affinity": {block: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
                }
            }))
            .unwrap();
            let t = if anti {
                &pod.anti_affinity[0]
            } else {
                &pod.affinity[0]
            };
            assert_eq!(
                (
                    t.namespaces.iter().map(String::as_str).collect::<Vec<_>>(),
                    t.all_namespaces
                ),
                (want, all),
                "{block} namespaces {namespaces:?} selector {selector:?}"
            );
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "k", "operator": "In", "values": []}]}]}}}}}),
                "nodeSelectorTerms[0].matchExpressions[0]",
            ),
            (
                serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [], "affinity": {"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["x"]}]}]}}}}}),
                "integer",
            ),
            (
                serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [
                    {"name": "c", "resources": {"requests": {"cpu": "lots"}}}]}}),
                "spec.containers[0].resources",
            ),
            (
                serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [],
                    "tolerations": [{"key": "k", "operator": "Maybe"}]}}),
                "spec.tolerations[0].operator",
            ),
        ];
        for (json, want) in cases {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }
}

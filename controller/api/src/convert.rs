//! v1beta1 → v1: rewrites Karpenter objects written for v0.33–v0.37 (the form most existing
//! guides show) into the v1 API, and says what it changed.
//!
//! Works on JSON values, before typed parsing, because v1beta1 shapes (`nodeClassRef.apiVersion`,
//! `disruption.expireAfter`, a NodePool `kubelet`) do not fit the v1 types. Every change made
//! produces one [`Note`]; behaviour-preserving defaults are written out explicitly (e.g. the
//! v1beta1 IMDS hop limit of 2) rather than silently changing how nodes launch.
//! See upstream's v1 migration guide for the list of changes this follows.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::labels;

/// One change made while converting, addressed to the object it was made to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// `NodePool/default`.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

/// Why an object cannot be converted automatically.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Unconvertible {
    pub path: String,
    pub message: String,
}

pub const NODE_POOL_V1BETA1: &str = "karpenter.sh/v1beta1";
pub const NODE_POOL_V1: &str = "karpenter.sh/v1";
pub const NODE_CLASS_V1BETA1: &str = "karpenter.k8s.aws/v1beta1";
pub const NODE_CLASS_V1: &str = "karpenter.k8s.aws/v1";

/// The Karpenter kinds and the API version a manifest uses for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NodePool,
    NodeClaim,
    EC2NodeClass,
}

impl Kind {
    /// The Karpenter kind of `apiVersion`/`kind`, and whether it is v1beta1; `None` for objects
    /// that are not Karpenter's (Deployments...).
    pub fn of(api_version: &str, kind: &str) -> Option<(Self, bool)> {
        match (api_version, kind) {
            (NODE_POOL_V1, "NodePool") => Some((Self::NodePool, false)),
            (NODE_POOL_V1BETA1, "NodePool") => Some((Self::NodePool, true)),
            (NODE_POOL_V1, "NodeClaim") => Some((Self::NodeClaim, false)),
            (NODE_POOL_V1BETA1, "NodeClaim") => Some((Self::NodeClaim, true)),
            (NODE_CLASS_V1, "EC2NodeClass") => Some((Self::EC2NodeClass, false)),
            (NODE_CLASS_V1BETA1, "EC2NodeClass") => Some((Self::EC2NodeClass, true)),
            _ => None,
        }
    }
}

/// A NodePool's v1beta1 kubelet block, which v1 keeps on the EC2NodeClass instead.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplacedKubelet {
    pub node_pool: String,
    /// The referenced EC2NodeClass.
    pub node_class: String,
    pub kubelet: Value,
}

/// The result of converting one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertedObject {
    pub value: Value,
    pub notes: Vec<Note>,
    /// Set when a v1beta1 NodePool carried `kubelet`; [`crate::manifest`] moves it to the
    /// EC2NodeClass when that is converted in the same batch.
    pub kubelet: Option<DisplacedKubelet>,
}

/// `NodePool/default` for notes and errors.
pub fn object_name(value: &Value) -> String {
    let kind = value["kind"].as_str().unwrap_or("object");
    match value["metadata"]["name"].as_str() {
        Some(name) => format!("{kind}/{name}"),
        None => kind.to_owned(),
    }
}

/// Convert one v1beta1 NodePool, NodeClaim or EC2NodeClass to v1. Anything else (including
/// objects already at v1) is returned unchanged with no notes.
pub fn convert(value: Value) -> Result<ConvertedObject, Unconvertible> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    match Kind::of(&api_version, &kind) {
        Some((Kind::NodePool, true)) => node_pool(value),
        Some((Kind::NodeClaim, true)) => node_claim(value),
        Some((Kind::EC2NodeClass, true)) => ec2_node_class(value),
        _ => {
            if matches!(kind.as_str(), "Provisioner" | "AWSNodeTemplate" | "Machine")
                && api_version.starts_with("karpenter")
            {
                return Err(Unconvertible {
                    path: "apiVersion".into(),
                    message: format!(
                        "{api_version} {kind} predates v1beta1; convert it to a v1beta1 NodePool/EC2NodeClass first (upstream's v1beta1 migration guide)"
                    ),
                });
            }
            Ok(ConvertedObject {
                value,
                notes: Vec::new(),
                kubelet: None,
            })
        }
    }
}

/// Collects notes for one object.
struct Notes {
    object: String,
    notes: Vec<Note>,
}

impl Notes {
    fn new(value: &Value) -> Self {
        Self {
            object: object_name(value),
            notes: Vec::new(),
        }
    }

    fn add(&mut self, message: impl Into<String>) {
        self.notes.push(Note {
            object: self.object.clone(),
            message: message.into(),
        });
    }
}

fn set_api_version(value: &mut Value, to: &str, notes: &mut Notes) {
    let from = value["apiVersion"].as_str().unwrap_or_default().to_owned();
    value["apiVersion"] = json!(to);
    notes.add(format!("apiVersion: {from} → {to}"));
}

fn object_mut<'a>(
    value: &'a mut Value,
    path: &str,
) -> Result<Option<&'a mut Map<String, Value>>, Unconvertible> {
    match value {
        Value::Object(object) => Ok(Some(object)),
        Value::Null => Ok(None),
        _ => Err(Unconvertible {
            path: path.into(),
            message: "expected a mapping".into(),
        }),
    }
}

fn node_pool(mut value: Value) -> Result<ConvertedObject, Unconvertible> {
    let mut notes = Notes::new(&value);
    set_api_version(&mut value, NODE_POOL_V1, &mut notes);
    let pool_name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let Some(spec) = object_mut(&mut value["spec"], "spec")? else {
        return Ok(ConvertedObject {
            value,
            notes: notes.notes,
            kubelet: None,
        });
    };

    // Disruption: policy rename, consolidateAfter now required, expireAfter moves.
    let mut expire_after = None;
    if let Some(disruption) = spec.get_mut("disruption")
        && let Some(disruption) = object_mut(disruption, "spec.disruption")?
    {
        if disruption
            .get("consolidationPolicy")
            .and_then(Value::as_str)
            == Some("WhenUnderutilized")
        {
            disruption.insert(
                "consolidationPolicy".into(),
                json!("WhenEmptyOrUnderutilized"),
            );
            notes.add("spec.disruption.consolidationPolicy: WhenUnderutilized → WhenEmptyOrUnderutilized (renamed in v1)");
        }
        if !disruption.contains_key("consolidateAfter") {
            disruption.insert("consolidateAfter".into(), json!("0s"));
            notes.add("spec.disruption.consolidateAfter: set to 0s (required in v1; 0s consolidates as soon as v1beta1 did)");
        }
        expire_after = disruption.remove("expireAfter");
    }
    let template_spec = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Unconvertible {
            path: "spec.template.spec".into(),
            message: "missing; a NodePool needs a template spec".into(),
        })?;
    if let Some(expire_after) = expire_after {
        notes.add(format!(
            "spec.disruption.expireAfter ({}) → spec.template.spec.expireAfter (moved in v1; changing it now drifts nodes)",
            display(&expire_after)
        ));
        template_spec.insert("expireAfter".into(), expire_after);
    }

    node_class_ref(template_spec, "spec.template.spec.nodeClassRef", &mut notes)?;

    if template_spec.remove("resources").is_some() {
        notes.add("spec.template.spec.resources: removed (v1 NodePool templates take no resource requests)");
    }

    let mut kubelet = None;
    if let Some(block) = template_spec.remove("kubelet") {
        let node_class = template_spec["nodeClassRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        notes.add(format!(
            "spec.template.spec.kubelet: removed from the NodePool; v1 reads kubelet settings from EC2NodeClass/{node_class} spec.kubelet"
        ));
        // Until that EC2NodeClass carries them, upstream v1.0 honours this annotation.
        let annotations = value["metadata"]
            .as_object_mut()
            .map(|m| m.entry("annotations").or_insert_with(|| json!({})));
        if let Some(Value::Object(annotations)) = annotations {
            annotations.insert(
                labels::KUBELET_COMPATIBILITY.into(),
                json!(block.to_string()),
            );
        }
        kubelet = Some(DisplacedKubelet {
            node_pool: pool_name,
            node_class,
            kubelet: block,
        });
    }

    Ok(ConvertedObject {
        value,
        notes: notes.notes,
        kubelet,
    })
}

/// `{apiVersion: karpenter.k8s.aws/v1beta1, kind, name}` → `{group, kind, name}`, all required.
fn node_class_ref(
    spec: &mut Map<String, Value>,
    path: &str,
    notes: &mut Notes,
) -> Result<(), Unconvertible> {
    let Some(reference) = spec.get_mut("nodeClassRef").and_then(Value::as_object_mut) else {
        return Err(Unconvertible {
            path: path.into(),
            message: "missing; v1 requires nodeClassRef with group, kind and name".into(),
        });
    };
    if let Some(api_version) = reference.remove("apiVersion") {
        let api_version = api_version.as_str().unwrap_or_default();
        let group = api_version.split('/').next().unwrap_or_default();
        let group = if group.is_empty() {
            labels::AWS_GROUP
        } else {
            group
        };
        reference.insert("group".into(), json!(group));
        notes.add(format!(
            "{path}.apiVersion ({api_version}) → {path}.group ({group})"
        ));
    } else if !reference.contains_key("group") {
        reference.insert("group".into(), json!(labels::AWS_GROUP));
        notes.add(format!(
            "{path}.group: set to {} (required in v1)",
            labels::AWS_GROUP
        ));
    }
    if !reference.contains_key("kind") {
        reference.insert("kind".into(), json!("EC2NodeClass"));
        notes.add(format!("{path}.kind: set to EC2NodeClass (required in v1)"));
    }
    Ok(())
}

fn node_claim(mut value: Value) -> Result<ConvertedObject, Unconvertible> {
    let mut notes = Notes::new(&value);
    set_api_version(&mut value, NODE_POOL_V1, &mut notes);
    if let Some(spec) = object_mut(&mut value["spec"], "spec")? {
        node_class_ref(spec, "spec.nodeClassRef", &mut notes)?;
        if spec.remove("kubelet").is_some() {
            notes.add("spec.kubelet: removed (v1 NodeClaims take kubelet settings from their EC2NodeClass)");
        }
    }
    Ok(ConvertedObject {
        value,
        notes: notes.notes,
        kubelet: None,
    })
}

/// The IMDS options v1beta1 applied when none were given; v1 lowers the hop limit to 1.
fn v1beta1_metadata_options() -> Value {
    json!({"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 2, "httpTokens": "required"})
}

fn ec2_node_class(mut value: Value) -> Result<ConvertedObject, Unconvertible> {
    let mut notes = Notes::new(&value);
    set_api_version(&mut value, NODE_CLASS_V1, &mut notes);
    let Some(spec) = object_mut(&mut value["spec"], "spec")? else {
        return Ok(ConvertedObject {
            value,
            notes: notes.notes,
            kubelet: None,
        });
    };

    let has_terms = spec
        .get("amiSelectorTerms")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    // v1beta1 defaulted amiFamily to AL2.
    let family = spec
        .get("amiFamily")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (family.as_deref(), has_terms) {
        (Some("Ubuntu"), true) => {
            spec.insert("amiFamily".into(), json!("AL2"));
            notes.add("spec.amiFamily: Ubuntu → AL2 (Ubuntu is not a v1 family; AL2 userdata bootstraps the selected Ubuntu AMIs as upstream recommends — verify your userData)");
        }
        (Some("Ubuntu"), false) => {
            return Err(Unconvertible {
                path: "spec.amiFamily".into(),
                message: "Ubuntu is not an AMI family in v1; select Ubuntu AMIs with amiSelectorTerms and set amiFamily: AL2".into(),
            });
        }
        (Some("Custom"), false) => {
            return Err(Unconvertible {
                path: "spec.amiSelectorTerms".into(),
                message: "amiFamily Custom needs amiSelectorTerms naming the AMIs (required in v1)"
                    .into(),
            });
        }
        (None, true) => {
            spec.insert("amiFamily".into(), json!("AL2"));
            notes.add("spec.amiFamily: set to AL2 (v1beta1's default; v1 requires it unless amiSelectorTerms uses an alias)");
        }
        (family, false) => {
            let family = family.unwrap_or("AL2");
            let alias = crate::v1::AmiFamily::ALIASED
                .iter()
                .find(|f| f.as_str() == family)
                .and_then(|f| f.alias_name())
                .ok_or_else(|| Unconvertible {
                    path: "spec.amiFamily".into(),
                    message: format!("unknown amiFamily {family:?}"),
                })?;
            spec.insert(
                "amiSelectorTerms".into(),
                json!([{"alias": format!("{alias}@latest")}]),
            );
            notes.add(format!(
                "spec.amiSelectorTerms: set to [{{alias: {alias}@latest}}] (v1 requires amiSelectorTerms; the latest EKS-optimized {family} AMI is what v1beta1 used — pin a version for production)"
            ));
        }
        (Some(_), true) => {}
    }

    match spec
        .get_mut("metadataOptions")
        .and_then(Value::as_object_mut)
    {
        None => {
            spec.insert("metadataOptions".into(), v1beta1_metadata_options());
            notes.add("spec.metadataOptions: set to v1beta1's defaults (httpPutResponseHopLimit: 2); v1 would default to 1, which blocks IMDS from pods — remove it to take the v1 default");
        }
        Some(options) if !options.contains_key("httpPutResponseHopLimit") => {
            options.insert("httpPutResponseHopLimit".into(), json!(2));
            notes.add("spec.metadataOptions.httpPutResponseHopLimit: set to 2 (v1beta1's default; v1 defaults to 1)");
        }
        Some(_) => {}
    }

    Ok(ConvertedObject {
        value,
        notes: notes.notes,
        kubelet: None,
    })
}

fn display(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1beta1_pool(spec: Value) -> Value {
        json!({"apiVersion": NODE_POOL_V1BETA1, "kind": "NodePool", "metadata": {"name": "default"}, "spec": spec})
    }

    fn v1beta1_class(spec: Value) -> Value {
        json!({"apiVersion": NODE_CLASS_V1BETA1, "kind": "EC2NodeClass", "metadata": {"name": "default"}, "spec": spec})
    }

    fn template(extra: Value) -> Value {
        let mut spec = json!({
            "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
            "nodeClassRef": {"apiVersion": "karpenter.k8s.aws/v1beta1", "kind": "EC2NodeClass", "name": "default"},
        });
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra);
        }
        json!({"spec": spec})
    }

    /// (input, JSON pointer, expected value there, a note that must be produced)
    #[test]
    fn converts_v1beta1_fields() {
        let cases: Vec<(Value, &str, Value, &str)> = vec![
            (
                v1beta1_pool(
                    json!({"template": template(json!({})), "disruption": {"consolidationPolicy": "WhenUnderutilized"}}),
                ),
                "/spec/disruption/consolidationPolicy",
                json!("WhenEmptyOrUnderutilized"),
                "WhenUnderutilized → WhenEmptyOrUnderutilized",
            ),
            (
                v1beta1_pool(
                    json!({"template": template(json!({})), "disruption": {"consolidationPolicy": "WhenUnderutilized"}}),
                ),
                "/spec/disruption/consolidateAfter",
                json!("0s"),
                "consolidateAfter: set to 0s",
            ),
            (
                v1beta1_pool(
                    json!({"template": template(json!({})), "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "30s", "expireAfter": "168h"}}),
                ),
                "/spec/template/spec/expireAfter",
                json!("168h"),
                "spec.disruption.expireAfter (168h) → spec.template.spec.expireAfter",
            ),
            (
                v1beta1_pool(json!({"template": template(json!({}))})),
                "/spec/template/spec/nodeClassRef",
                json!({"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}),
                "nodeClassRef.apiVersion (karpenter.k8s.aws/v1beta1) → spec.template.spec.nodeClassRef.group (karpenter.k8s.aws)",
            ),
            (
                v1beta1_pool(
                    json!({"template": {"spec": {"requirements": [], "nodeClassRef": {"name": "x"}}}}),
                ),
                "/spec/template/spec/nodeClassRef",
                json!({"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "x"}),
                "nodeClassRef.kind: set to EC2NodeClass",
            ),
            (
                v1beta1_pool(json!({"template": template(json!({"kubelet": {"maxPods": 110}}))})),
                "/metadata/annotations/compatibility.karpenter.sh~1v1beta1-kubelet-conversion",
                json!("{\"maxPods\":110}"),
                "spec.template.spec.kubelet: removed from the NodePool; v1 reads kubelet settings from EC2NodeClass/default spec.kubelet",
            ),
            (
                v1beta1_pool(json!({"template": template(json!({}))})),
                "/apiVersion",
                json!("karpenter.sh/v1"),
                "apiVersion: karpenter.sh/v1beta1 → karpenter.sh/v1",
            ),
            (
                v1beta1_class(json!({"amiFamily": "AL2023", "role": "r"})),
                "/spec/amiSelectorTerms",
                json!([{"alias": "al2023@latest"}]),
                "set to [{alias: al2023@latest}]",
            ),
            (
                v1beta1_class(json!({"role": "r"})),
                "/spec/amiSelectorTerms",
                json!([{"alias": "al2@latest"}]),
                "set to [{alias: al2@latest}]",
            ),
            (
                v1beta1_class(
                    json!({"amiFamily": "Bottlerocket", "role": "r", "metadataOptions": {"httpTokens": "required"}}),
                ),
                "/spec/metadataOptions/httpPutResponseHopLimit",
                json!(2),
                "httpPutResponseHopLimit: set to 2",
            ),
            (
                v1beta1_class(json!({"amiSelectorTerms": [{"id": "ami-123"}], "role": "r"})),
                "/spec/amiFamily",
                json!("AL2"),
                "spec.amiFamily: set to AL2",
            ),
            (
                v1beta1_class(
                    json!({"amiFamily": "Ubuntu", "amiSelectorTerms": [{"id": "ami-123"}], "role": "r"}),
                ),
                "/spec/amiFamily",
                json!("AL2"),
                "Ubuntu → AL2",
            ),
            (
                v1beta1_class(json!({"amiFamily": "AL2", "role": "r"})),
                "/spec/metadataOptions",
                v1beta1_metadata_options(),
                "v1 would default to 1",
            ),
        ];
        for (input, pointer, want, note) in cases {
            let converted = convert(input.clone()).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                converted.value.pointer(pointer),
                Some(&want),
                "{input} at {pointer}: {}",
                converted.value
            );
            assert!(
                converted.notes.iter().any(|n| n.message.contains(note)),
                "{input}: no note containing {note:?} in {:#?}",
                converted.notes
            );
        }
    }

    #[test]
    fn moves_nothing_it_need_not() {
        let pool = v1beta1_pool(
            json!({"template": template(json!({})), "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "30s"}}),
        );
        let converted = convert(pool).unwrap();
        assert_eq!(
            converted.value.pointer("/spec/disruption"),
            Some(&json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "30s"}))
        );
        assert_eq!(
            converted.value.pointer("/spec/template/spec/expireAfter"),
            None
        );
        // apiVersion and nodeClassRef only.
        assert_eq!(converted.notes.len(), 2, "{:#?}", converted.notes);
    }

    #[test]
    fn leaves_v1_and_foreign_objects_alone() {
        for value in [
            json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "a"}, "spec": {}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}}),
        ] {
            let converted = convert(value.clone()).unwrap();
            assert_eq!(converted.value, value);
            assert!(converted.notes.is_empty());
        }
    }

    #[test]
    fn refuses_what_it_cannot_convert() {
        let cases = [
            (
                v1beta1_class(json!({"amiFamily": "Custom", "role": "r"})),
                "spec.amiSelectorTerms: amiFamily Custom needs amiSelectorTerms",
            ),
            (
                v1beta1_class(json!({"amiFamily": "Ubuntu", "role": "r"})),
                "spec.amiFamily: Ubuntu is not an AMI family in v1",
            ),
            (
                v1beta1_pool(json!({"template": {"spec": {"requirements": []}}})),
                "spec.template.spec.nodeClassRef: missing",
            ),
            (
                json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner", "metadata": {"name": "a"}}),
                "predates v1beta1",
            ),
        ];
        for (input, want) in cases {
            let err = convert(input.clone()).unwrap_err();
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
    }
}

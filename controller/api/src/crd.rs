//! The CustomResourceDefinitions karpctl installs, generated from the Rust types.
//!
//! `karpctl init` applies [`crds`]; `crdgen` prints [`crds_yaml`]; `templates/crds/` holds the
//! same text for review and a test fails when it is stale, so the three never disagree.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube_core::CustomResourceExt;
use serde_json::{Value, json};

use crate::v1::{EC2NodeClass, NodeClaim, NodePool};

/// The three CRDs, in the order they should be applied.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![NodePool::crd(), NodeClaim::crd(), EC2NodeClass::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                post_process(schema);
            }
        }
    }
    crds
}

/// Fix-ups the derive cannot express.
fn post_process(schema: &mut JSONSchemaProps) {
    let Ok(mut value) = serde_json::to_value(&*schema) else {
        return;
    };
    restore_int_or_string(&mut value);
    if let Ok(fixed) = serde_json::from_value(value) {
        *schema = fixed;
    }
}

/// kube's structural rewrite strips the `type`s out of an int-or-string `anyOf`, leaving
/// `anyOf: [{}, {}]`; put back the form the API server documents (and upstream ships).
fn restore_int_or_string(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                object.insert(
                    "anyOf".into(),
                    json!([{"type": "integer"}, {"type": "string"}]),
                );
            }
            object.values_mut().for_each(restore_int_or_string);
        }
        Value::Array(items) => items.iter_mut().for_each(restore_int_or_string),
        _ => {}
    }
}

/// The file name a CRD is committed under in `templates/crds/` (upstream's naming).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document, starting with `---`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!("---\n{}", serde_saphyr::to_string(crd)?))
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    crds().iter().map(to_yaml).collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn crd(kind: &str) -> CustomResourceDefinition {
        crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .expect(kind)
    }

    fn schema_json(kind: &str) -> Value {
        let crd = crd(kind);
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        serde_json::to_value(schema).unwrap()
    }

    /// Every `x-kubernetes-validations` message in a schema.
    fn rule_messages(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::Array(rules)) = object.get("x-kubernetes-validations") {
                    out.extend(
                        rules
                            .iter()
                            .filter_map(|r| r["message"].as_str().map(str::to_owned)),
                    );
                }
                object.values().for_each(|v| rule_messages(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| rule_messages(v, out)),
            _ => {}
        }
    }

    #[test]
    fn printer_columns_match_upstream() {
        let cases: &[(&str, &[&str])] = &[
            (
                "NodeClaim",
                &[
                    "Type",
                    "Capacity",
                    "Zone",
                    "Node",
                    "Ready",
                    "Age",
                    "ImageID",
                    "ID",
                    "NodePool",
                    "NodeClass",
                    "Drifted",
                ],
            ),
            (
                "NodePool",
                &[
                    "NodeClass",
                    "Nodes",
                    "Ready",
                    "Age",
                    "Weight",
                    "CPU",
                    "Memory",
                ],
            ),
            ("EC2NodeClass", &["Ready", "Age", "Role"]),
        ];
        for (kind, want) in cases {
            let crd = crd(kind);
            let columns = crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap_or_default();
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(&names, want, "{kind}");
            // Only the first columns are shown without `-o wide`, as upstream.
            let default_columns = columns
                .iter()
                .filter(|c| c.priority.unwrap_or(0) == 0)
                .count();
            let want_default = match *kind {
                "NodeClaim" => 6,
                "NodePool" => 4,
                _ => 2,
            };
            assert_eq!(default_columns, want_default, "{kind}");
        }
    }

    #[test]
    fn names_scope_and_subresources_match_upstream() {
        let cases = [
            ("NodePool", "nodepools.karpenter.sh", vec![]),
            ("NodeClaim", "nodeclaims.karpenter.sh", vec![]),
            (
                "EC2NodeClass",
                "ec2nodeclasses.karpenter.k8s.aws",
                vec!["ec2nc", "ec2ncs"],
            ),
        ];
        for (kind, name, short_names) in cases {
            let crd = crd(kind);
            assert_eq!(crd.metadata.name.as_deref(), Some(name));
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(
                crd.spec.names.categories,
                Some(vec!["karpenter".to_owned()])
            );
            assert_eq!(crd.spec.names.short_names.unwrap_or_default(), short_names);
            let version = &crd.spec.versions[0];
            assert_eq!(
                (version.name.as_str(), version.served, version.storage),
                ("v1", true, true)
            );
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{kind}"
            );
        }
        let scale = crd("NodePool").spec.versions[0]
            .subresources
            .clone()
            .unwrap()
            .scale
            .unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.nodes");
    }

    #[test]
    fn schemas_carry_the_cel_rules_users_rely_on() {
        let cases: &[(&str, &[&str])] = &[
            (
                "NodePool",
                &[
                    "requirements with operator 'In' must have a value defined",
                    "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value",
                    "requirements with 'minValues' must have at least that many values specified in the 'values' field",
                    "label domain \"kubernetes.io\" is restricted",
                    "label domain \"karpenter.sh\" is restricted",
                    "label \"kubernetes.io/hostname\" is restricted",
                    "label \"karpenter.sh/nodepool\" is restricted",
                    "'schedule' must be set with 'duration'",
                    "nodeClassRef.group is immutable",
                    "group may not be empty",
                ],
            ),
            (
                "NodeClaim",
                &[
                    "spec is immutable",
                    "requirements with operator 'In' must have a value defined",
                ],
            ),
            (
                "EC2NodeClass",
                &[
                    "must specify exactly one of ['role', 'instanceProfile']",
                    "must specify amiFamily if amiSelectorTerms does not contain an alias",
                    "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms",
                    "'alias' is improperly formatted, must match the format 'family@version'",
                    "if set, amiFamily must be 'AL2023' or 'Custom' when using an AL2023 alias",
                    "subnetSelectorTerms cannot be empty",
                    "must have only one blockDeviceMappings with rootVolume",
                    "imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent",
                ],
            ),
        ];
        for (kind, want) in cases {
            let mut messages = Vec::new();
            rule_messages(&schema_json(kind), &mut messages);
            for message in *want {
                assert!(
                    messages.iter().any(|m| m == message),
                    "{kind} lacks rule {message:?}"
                );
            }
        }
    }

    #[test]
    fn defaults_and_enums_match_upstream() {
        let pool = schema_json("NodePool");
        let spec = &pool["properties"]["spec"]["properties"];
        assert_eq!(
            spec["disruption"]["default"],
            json!({"consolidateAfter": "0s"})
        );
        assert_eq!(
            spec["disruption"]["properties"]["consolidationPolicy"]["default"],
            "WhenEmptyOrUnderutilized"
        );
        assert_eq!(
            spec["disruption"]["properties"]["budgets"]["default"],
            json!([{"nodes": "10%"}])
        );
        assert_eq!(
            spec["template"]["properties"]["spec"]["properties"]["expireAfter"]["default"],
            "720h"
        );
        assert_eq!(
            spec["template"]["properties"]["spec"]["required"],
            json!(["nodeClassRef", "requirements"])
        );
        assert_eq!(
            spec["limits"]["additionalProperties"]["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        let operators = &spec["template"]["properties"]["spec"]["properties"]["requirements"]["items"]
            ["properties"]["operator"]["enum"];
        assert_eq!(
            operators,
            &json!([
                "In",
                "NotIn",
                "Exists",
                "DoesNotExist",
                "Gt",
                "Lt",
                "Gte",
                "Lte"
            ])
        );

        let class = schema_json("EC2NodeClass");
        let spec = &class["properties"]["spec"];
        assert_eq!(
            spec["required"],
            json!([
                "amiSelectorTerms",
                "securityGroupSelectorTerms",
                "subnetSelectorTerms"
            ])
        );
        assert_eq!(
            spec["properties"]["metadataOptions"]["default"]["httpPutResponseHopLimit"],
            1
        );
    }

    /// The YAML we print must mean exactly the CRDs we build (folded long rules included).
    #[test]
    fn yaml_round_trips() {
        let yaml = crds_yaml().unwrap();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        let built: Vec<Value> = crds()
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        assert_eq!(parsed, built);
    }

    /// `templates/crds/` is what reviewers read and what gets shipped; regenerate it with
    /// `KARPCTL_UPDATE_CRDS=1 cargo test -p karpctl-api crd::`.
    #[test]
    fn committed_crds_are_current() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../templates/crds");
        let update = std::env::var_os("KARPCTL_UPDATE_CRDS").is_some();
        let mut stale = Vec::new();
        for crd in crds() {
            let path = dir.join(file_name(&crd));
            let want = to_yaml(&crd).unwrap();
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &want).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "stale CRDs: {stale:?}; regenerate with `KARPCTL_UPDATE_CRDS=1 cargo test -p karpctl-api crd::`"
        );
    }
}

//! `karpctl render` as pure data: the desired state `init` plans from ([`Desired`]), written
//! out as files instead of applied — the Kubernetes objects init server-side applies (its
//! CRDs, the controller's objects, each EC2NodeClass and NodePool) and the AWS documents it
//! creates (role trust policies, controller policies, the queue policy, the rules' event
//! patterns). Nothing here is computed a second time: every body comes from `Desired` (and
//! [`desired_crds`]), so what is reviewed in Git is what `init` would apply.
//!
//! Not rendered: init's own bookkeeping (the `karpctl-state` ConfigMap, the Cluster
//! Autoscaler scaled to 0, the aws-auth row or access entry, discovery tags) — these are
//! changes to what the cluster already has, not manifests to commit.

use serde::Serialize;
use serde_json::Value;

use crate::kube::cluster_state::desired_crds;
use crate::plan::init::Desired;

/// One file of the rendered tree, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedFile {
    pub path: String,
    #[serde(skip)]
    pub body: Value,
}

/// Everything `render` writes: `cluster/` in apply order, then `aws/`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub cluster: Vec<RenderedFile>,
    pub aws: Vec<RenderedFile>,
}

/// Directory of the Kubernetes manifests (with its kustomization.yaml).
pub const CLUSTER_DIR: &str = "cluster";
/// Directory of the AWS documents.
pub const AWS_DIR: &str = "aws";

/// A file name from a kind and a name: `deployment-kube-system-karpenter.yaml`.
fn file_name(kind: &str, namespace: Option<&str>, name: &str, ext: &str) -> String {
    let mut parts = vec![kind.to_ascii_lowercase()];
    parts.extend(namespace.map(str::to_owned));
    parts.push(name.to_owned());
    format!("{}.{ext}", parts.join("-"))
}

pub fn render(desired: &Desired) -> Rendered {
    let mut cluster = Vec::new();
    // The CRDs first: the NodePool and EC2NodeClass need them Established.
    for crd in desired_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        cluster.push(RenderedFile {
            path: format!(
                "{CLUSTER_DIR}/{}",
                file_name("CustomResourceDefinition", None, &name, "yaml")
            ),
            body: serde_json::to_value(&crd).expect("a CRD serializes"),
        });
    }
    for object in &desired.objects {
        cluster.push(RenderedFile {
            path: format!(
                "{CLUSTER_DIR}/{}",
                file_name(
                    &object.kind,
                    object.namespace.as_deref(),
                    &object.name,
                    "yaml"
                )
            ),
            body: object.body.clone(),
        });
    }

    let mut aws = Vec::new();
    let mut doc = |kind: &str, name: &str, what: &str, body: Value| {
        aws.push(RenderedFile {
            path: format!(
                "{AWS_DIR}/{}",
                file_name(kind, None, name, &format!("{what}.json"))
            ),
            body,
        });
    };
    for role in [&desired.node_role, &desired.controller_role] {
        doc("iam-role", &role.name, "trust", role.trust.clone());
        doc(
            "iam-role",
            &role.name,
            "attached-policies",
            Value::from(role.policies.clone()),
        );
    }
    for (policy, _arn) in &desired.policies {
        doc(
            "iam-policy",
            &policy.name,
            "policy",
            policy.document.clone(),
        );
    }
    let queue_policy = desired
        .queue_attributes
        .get("Policy")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    doc("sqs-queue", &desired.queue_name, "policy", queue_policy);
    for rule in &desired.rules {
        doc(
            "eventbridge-rule",
            &rule.name,
            "pattern",
            rule.pattern.clone(),
        );
    }
    Rendered { cluster, aws }
}

impl Rendered {
    /// The kustomization listing every cluster file in apply order (kustomize itself also
    /// puts CRDs and Namespaces first).
    pub fn kustomization(&self) -> Value {
        let resources: Vec<String> = self
            .cluster
            .iter()
            .map(|f| {
                f.path
                    .trim_start_matches(&format!("{CLUSTER_DIR}/"))
                    .to_owned()
            })
            .collect();
        serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::init::tests::cluster;
    use crate::plan::init::{Current, IdentityMode, InitOp, Options, plan};
    use std::collections::BTreeMap;

    fn desired(identity: IdentityMode) -> Desired {
        Desired::new(
            cluster(),
            &Options {
                identity: Some(identity),
                ..Options::default()
            },
        )
        .unwrap()
    }

    /// The comparison the issue asks for: what `init` would apply to a fresh cluster and
    /// account (its plan's operations) against what `render` writes, object by object and
    /// document by document.
    #[test]
    fn render_writes_exactly_what_init_would_apply() {
        for identity in [IdentityMode::PodIdentity, IdentityMode::Irsa] {
            let d = desired(identity);
            let rendered = render(&d);
            let by_path: BTreeMap<&str, &Value> = rendered
                .cluster
                .iter()
                .chain(&rendered.aws)
                .map(|f| (f.path.as_str(), &f.body))
                .collect();
            assert_eq!(
                by_path.len(),
                rendered.cluster.len() + rendered.aws.len(),
                "two files with one path"
            );
            let p = plan(&d, &Current::default()).unwrap();
            let (mut objects, mut crds, mut roles, mut policies, mut rules, mut queues) =
                (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
            for op in p.items.iter().flat_map(|i| &i.ops) {
                match op {
                    InitOp::ApplyObject { object } => {
                        objects += 1;
                        let path = format!(
                            "cluster/{}",
                            file_name(
                                &object.kind,
                                object.namespace.as_deref(),
                                &object.name,
                                "yaml"
                            )
                        );
                        assert_eq!(by_path.get(path.as_str()), Some(&&object.body), "{path}");
                    }
                    InitOp::ApplyCrd { name } => {
                        crds += 1;
                        let body = by_path
                            [format!("cluster/customresourcedefinition-{name}.yaml").as_str()];
                        assert_eq!(body["metadata"]["name"], name.as_str());
                        let applied = desired_crds()
                            .into_iter()
                            .find(|c| c.metadata.name.as_deref() == Some(name.as_str()))
                            .unwrap();
                        assert_eq!(body, &serde_json::to_value(applied).unwrap());
                    }
                    InitOp::CreateRole { name, trust, .. } => {
                        roles += 1;
                        let body = by_path[format!("aws/iam-role-{name}.trust.json").as_str()];
                        assert_eq!(body, &serde_json::from_str::<Value>(trust).unwrap());
                    }
                    InitOp::AttachRolePolicy { role, policy_arn } => {
                        let body =
                            by_path[format!("aws/iam-role-{role}.attached-policies.json").as_str()];
                        assert!(
                            body.as_array().unwrap().iter().any(|a| a == policy_arn),
                            "{policy_arn} not listed for {role}"
                        );
                    }
                    InitOp::CreatePolicy { name, document, .. } => {
                        policies += 1;
                        let body = by_path[format!("aws/iam-policy-{name}.policy.json").as_str()];
                        assert_eq!(body, &serde_json::from_str::<Value>(document).unwrap());
                    }
                    InitOp::CreateQueue {
                        name, attributes, ..
                    } => {
                        queues += 1;
                        let body = by_path[format!("aws/sqs-queue-{name}.policy.json").as_str()];
                        assert_eq!(
                            body,
                            &serde_json::from_str::<Value>(&attributes["Policy"]).unwrap()
                        );
                    }
                    InitOp::PutRule { name, pattern, .. } => {
                        rules += 1;
                        let body =
                            by_path[format!("aws/eventbridge-rule-{name}.pattern.json").as_str()];
                        assert_eq!(body, &serde_json::from_str::<Value>(pattern).unwrap());
                    }
                    _ => {}
                }
            }
            assert_eq!(objects + crds, rendered.cluster.len(), "{identity:?}");
            assert_eq!((crds, roles, queues, rules), (3, 2, 1, 5), "{identity:?}");
            assert_eq!(policies, d.policies.len());
            assert!(
                objects >= 12,
                "controller objects, EC2NodeClass, NodePool: {objects}"
            );
        }
    }

    #[test]
    fn the_kustomization_lists_every_cluster_file_crds_first() {
        let rendered = render(&desired(IdentityMode::PodIdentity));
        let k = rendered.kustomization();
        let resources: Vec<&str> = k["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(resources.len(), rendered.cluster.len());
        assert!(resources[0].starts_with("customresourcedefinition-"));
        assert!(
            resources.contains(&"nodepool-default.yaml"),
            "{resources:?}"
        );
        assert!(resources.contains(&"deployment-kube-system-karpenter.yaml"));
    }
}

//! The cluster a what-if plan is made for, read from manifests: workloads (Pods,
//! Deployments, ReplicaSets, StatefulSets and Jobs, expanded to one pod per replica),
//! DaemonSets (overhead on every node they fit), Nodes with the Pods bound to them, and the
//! NodePools and EC2NodeClasses (v1, or v1beta1 converted by `karpctl_api::manifest`).
//!
//! Kubernetes objects are decoded strictly: an unknown field is an error naming the file,
//! the object and the field, as a typo in a manifest would otherwise be silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use karpctl_api::manifest::{self, Object, Origin};
use karpctl_api::v1::{EC2NodeClass, NodePool};
use karpctl_scheduling::kubernetes::{existing_node, pod_from_spec};
use karpctl_scheduling::{ExistingNode, Pod};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Everything read from the manifests.
#[derive(Default)]
pub struct Cluster {
    /// Pods waiting for capacity, one per replica.
    pub pods: Vec<Pod>,
    pub daemon_sets: Vec<Pod>,
    pub nodes: Vec<ExistingNode>,
    pub node_pools: Vec<Sourced<NodePool>>,
    pub node_classes: Vec<Sourced<EC2NodeClass>>,
    /// What was converted or skipped, for stderr.
    pub notes: Vec<String>,
}

/// An object with where it was read from, so errors found after reading (a NodePool naming
/// an instance type the catalogue lacks) name the file, document line and object as the
/// errors of reading do.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    pub origin: Origin,
    pub object: T,
}

/// Read every file (`-` is stdin) into one cluster.
pub fn read(files: &[PathBuf]) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::default();
    let mut bound: Vec<(String, Pod)> = Vec::new();
    let mut nodes: Vec<(Origin, core::Node)> = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = if name == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading stdin")?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?
        };
        let source = if name == "-" {
            "<stdin>".to_string()
        } else {
            name
        };
        let manifests = manifest::read(&source, &text)?;
        cluster
            .notes
            .extend(manifests.notes.iter().map(|n| format!("{source}: {n}")));
        for (object, origin) in manifests.with_origins() {
            let origin = origin.clone();
            match object {
                Object::NodePool(pool) => cluster.node_pools.push(Sourced {
                    origin,
                    object: pool.as_ref().clone(),
                }),
                Object::EC2NodeClass(class) => cluster.node_classes.push(Sourced {
                    origin,
                    object: class.as_ref().clone(),
                }),
                Object::NodeClaim(_) => {}
                Object::Other(value) => {
                    read_object(&origin, value, &mut cluster, &mut bound, &mut nodes)?
                }
            }
        }
    }
    for (origin, node) in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let pods: Vec<Pod> = bound
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
            .collect();
        let node = existing_node(&node, pods).map_err(|e| anyhow!("{origin}: {e}"))?;
        cluster.nodes.push(node);
    }
    for (node, pod) in bound {
        if !cluster.nodes.iter().any(|n| n.name == node) {
            cluster.notes.push(format!(
                "pod {pod} is bound to node {node}, which is not in the input; ignored"
            ));
        }
    }
    Ok(cluster)
}

fn object_name(value: &Value) -> String {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("(no kind)");
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(no name)");
    format!("{kind}/{name}")
}

fn read_object(
    origin: &Origin,
    value: &Value,
    cluster: &mut Cluster,
    bound: &mut Vec<(String, Pod)>,
    nodes: &mut Vec<(Origin, core::Node)>,
) -> anyhow::Result<()> {
    let object = object_name(value);
    let origin = Origin {
        object: Some(object.clone()),
        ..origin.clone()
    };
    let at = |e: String| anyhow!("{origin}: {e}");
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let supported = matches!(
        (kind, api_version),
        ("Pod" | "Node", "v1")
            | (
                "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet",
                "apps/v1"
            )
            | ("Job", "batch/v1")
    );
    if !supported {
        if matches!(
            kind,
            "Pod" | "Node" | "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job"
        ) {
            return Err(at(format!(
                "apiVersion: {api_version:?} is not supported for {kind}"
            )));
        }
        cluster.notes.push(format!(
            "{}: {object}: not a workload, node or Karpenter object; ignored",
            origin.source
        ));
        return Ok(());
    }
    match kind {
        "Pod" => {
            let p: core::Pod = strict(value).map_err(at)?;
            if matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ) {
                return Ok(());
            }
            let pod = karpctl_scheduling::Pod::try_from(&p).map_err(|e| at(e.to_string()))?;
            match p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                Some(node) => bound.push((node, pod)),
                None => cluster.pods.push(pod.owner(&object)),
            }
        }
        "Node" => nodes.push((origin.clone(), strict(value).map_err(at)?)),
        "DaemonSet" => {
            let d: apps::DaemonSet = strict(value).map_err(at)?;
            cluster.daemon_sets.push(
                template_pod(&d.metadata, &d.spec.template, "spec.template", &object, 0)
                    .map_err(at)?,
            );
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "Job" => {
            let (metadata, template, replicas) = match kind {
                "Deployment" => {
                    let d: apps::Deployment = strict(value).map_err(at)?;
                    (d.metadata, d.spec.template, d.spec.replicas.unwrap_or(1))
                }
                "ReplicaSet" => {
                    let d: apps::ReplicaSet = strict(value).map_err(at)?;
                    let template = d
                        .spec
                        .template
                        .ok_or_else(|| at("spec.template: missing".into()))?;
                    (d.metadata, template, d.spec.replicas.unwrap_or(1))
                }
                "StatefulSet" => {
                    let d: apps::StatefulSet = strict(value).map_err(at)?;
                    (d.metadata, d.spec.template, d.spec.replicas.unwrap_or(1))
                }
                _ => {
                    let j: batch::Job = strict(value).map_err(at)?;
                    let spec = j.spec.ok_or_else(|| at("spec: missing".into()))?;
                    // Pods running at once: parallelism, but never more than completions.
                    let parallelism = spec.parallelism.unwrap_or(1);
                    let running = spec.completions.map_or(parallelism, |c| c.min(parallelism));
                    (j.metadata, spec.template, running)
                }
            };
            if replicas < 0 {
                return Err(at(format!(
                    "spec.replicas: must not be negative, got {replicas}"
                )));
            }
            for i in 0..replicas {
                cluster.pods.push(
                    template_pod(&metadata, &template, "spec.template", &object, i).map_err(at)?,
                );
            }
        }
        _ => unreachable!("filtered above"),
    }
    Ok(())
}

fn template_pod(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    template: &core::PodTemplateSpec,
    field: &str,
    owner: &str,
    replica: i32,
) -> Result<Pod, String> {
    let spec = template
        .spec
        .as_ref()
        .ok_or_else(|| format!("{field}.spec: missing"))?;
    let labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let name = format!("{}-{replica}", metadata.name.as_deref().unwrap_or("pod"));
    let namespace = metadata.namespace.as_deref().unwrap_or("default");
    pod_from_spec(namespace, &name, &labels, spec, &format!("{field}.spec"))
        .map(|p| p.owner(owner))
        .map_err(|e| e.to_string())
}

/// Decode a Kubernetes object, refusing fields the type does not have.
fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let decoded: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!(
            "{}: {}",
            if path == "." {
                "(object)".to_string()
            } else {
                path
            },
            e.inner()
        )
    })?;
    // k8s-openapi ignores unknown fields; anything that does not survive a round trip was one.
    let back = serde_json::to_value(&decoded).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    unknown_fields(value, &back, "", &mut unknown);
    if let Some(first) = unknown.first() {
        return Err(format!("{first}: unknown field"));
    }
    Ok(decoded)
}

fn unknown_fields(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() || k == "status" && path.is_empty() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => unknown_fields(v, w, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The (namespace/)name a user typed, matched against a pod.
pub fn matches_pod(pod: &Pod, wanted: &str) -> bool {
    match wanted.split_once('/') {
        Some((ns, name)) => pod.namespace == ns && pod.name == name,
        None => pod.name == wanted,
    }
}

/// Fail with the list of known names when no pod matches.
pub fn find_pod<'a>(cluster: &'a Cluster, wanted: &str) -> anyhow::Result<&'a Pod> {
    if let Some(p) = cluster.pods.iter().find(|p| matches_pod(p, wanted)) {
        return Ok(p);
    }
    let known: Vec<String> = cluster
        .pods
        .iter()
        .take(10)
        .map(|p| p.to_string())
        .collect();
    if known.is_empty() {
        bail!("no pending pods in the input; nothing to explain");
    }
    bail!(
        "no pending pod named {wanted:?} (pods are named <workload>-<replica>, e.g. {})",
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(yaml: &str) -> anyhow::Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("karpctl-workloads-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!(
            "{:x}.yaml",
            yaml.len() ^ yaml.bytes().map(u64::from).sum::<u64>() as usize
        ));
        std::fs::write(&path, yaml)?;
        let out = read(std::slice::from_ref(&path));
        let _ = std::fs::remove_file(path);
        out
    }

    #[test]
    fn workloads_expand_to_one_pod_per_replica() {
        let cases: &[(&str, usize, usize)] = &[
            (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c}]}\n",
                3,
                0,
            ),
            (
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c}]}\n",
                1,
                0,
            ),
            (
                "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  parallelism: 5\n  completions: 2\n  template:\n    spec: {restartPolicy: Never, containers: [{name: c}]}\n",
                2,
                0,
            ),
            (
                "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec: {containers: [{name: c}]}\n",
                0,
                1,
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n",
                1,
                0,
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {}\n",
                0,
                0,
            ),
        ];
        for (yaml, pods, daemons) in cases {
            let c = read_text(yaml).unwrap();
            assert_eq!(c.pods.len(), *pods, "{yaml}");
            assert_eq!(c.daemon_sets.len(), *daemons, "{yaml}");
        }
    }

    #[test]
    fn bad_input_names_file_object_and_field() {
        let cases: &[(&str, &str)] = &[
            (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec:\n  replica: 3\n  selector: {matchLabels: {app: a}}\n  template:\n    spec: {containers: [{name: c}]}\n",
                "Deployment/typo: spec.replica: unknown field",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, resources: {requests: {memory: lots}}}]}\n",
                "Pod/p: spec.containers[0].resources",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p\n",
                "invalid YAML",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {allocatable: {cpu: many}}\n",
                "document 2 (line 5), Node/node-1: ",
            ),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec: {replica: 3, selector: {}, template: {spec: {containers: []}}}\n",
                "document 2 (line 5), Deployment/typo: spec.replica: unknown field",
            ),
            (
                "apiVersion: v2\nkind: Pod\nmetadata: {name: p}\n",
                "apiVersion",
            ),
        ];
        for (yaml, want) in cases {
            let e = format!("{:#}", read_text(yaml).err().expect(yaml));
            assert!(
                e.contains(want) && e.contains(".yaml"),
                "{e} should mention {want} and the file"
            );
        }
    }

    #[test]
    fn bound_pods_land_on_their_nodes() {
        let c = read_text(
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {allocatable: {cpu: '2', memory: 4Gi, pods: '10'}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: n1, containers: [{name: c}]}\n",
        )
        .unwrap();
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].pods.len(), 1);
        assert!(c.pods.is_empty());
    }
}

//! The Kubernetes side of `karpctl init` beyond aws-auth: the CRDs (server-side applied as
//! field manager `karpctl`, then waited on until Established) and the Cluster Autoscaler
//! (found, its replica count recorded in the `karpctl-state` ConfigMap, then scaled to 0).
//! What to do is decided in `plan::init`; this reads the state it needs and executes its ops.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};

use crate::plan::init::{Autoscaler, MANAGED_BY};

pub const FIELD_MANAGER: &str = "karpctl";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// A hash of the spec karpctl last applied: a different hash means our CRDs changed.
pub const SPEC_HASH_ANNOTATION: &str = "karpctl.sh/spec-hash";
pub const STATE_NAMESPACE: &str = "kube-system";
/// Where init records what it changed, so `uninstall` on any machine can restore it.
pub const STATE_CONFIG_MAP: &str = "karpctl-state";
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// FNV-1a over the spec's JSON: stable across Rust releases and machines, unlike `Hash`.
pub fn spec_hash(crd: &CustomResourceDefinition) -> String {
    let json = serde_json::to_vec(&crd.spec).expect("a CRD spec serializes");
    format!("{:016x}", karpctl_api::hash::fnv1a64(json))
}

/// karpctl's CRDs as they are applied: labelled as karpctl's and carrying their spec hash.
pub fn desired_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = karpctl_api::crd::crds();
    for crd in &mut crds {
        let hash = spec_hash(crd);
        crd.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(SPEC_HASH_ANNOTATION.into(), hash);
    }
    crds
}

/// The spec-hash annotation of each of our CRDs that exists ("" when it lacks one).
pub async fn crd_hashes(
    client: &kube::Client,
    names: impl Iterator<Item = &str>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = BTreeMap::new();
    for name in names {
        if let Some(crd) = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading CustomResourceDefinition {name}"))?
        {
            let hash = crd
                .metadata
                .annotations
                .and_then(|mut a| a.remove(SPEC_HASH_ANNOTATION))
                .unwrap_or_default();
            out.insert(name.to_string(), hash);
        }
    }
    Ok(out)
}

/// Server-side applies one of our CRDs, then waits until the API server reports it
/// Established (its resources can be served), with a progress line while it waits.
pub async fn apply_crd(
    client: &kube::Client,
    name: &str,
    progress: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let crd = desired_crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .with_context(|| format!("karpctl has no CRD named {name}"))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| format!("server-side applying CustomResourceDefinition {name}"))?;
    progress(&format!("  waiting for CRD {name} to be Established..."));
    let deadline = tokio::time::Instant::now() + ESTABLISHED_TIMEOUT;
    loop {
        let served = api
            .get(name)
            .await
            .with_context(|| format!("reading CustomResourceDefinition {name}"))?;
        let conditions = served.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let why = conditions
                .iter()
                .map(|c| {
                    format!(
                        "{}={} ({})",
                        c.type_,
                        c.status,
                        c.message.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "CustomResourceDefinition {name} was not Established within {}s; conditions: [{why}]",
                ESTABLISHED_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a Deployment's pod template runs the Cluster Autoscaler.
fn runs_cluster_autoscaler(d: &Deployment) -> bool {
    let template = &d.spec.template;
    let labelled = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .is_some_and(|l| {
            ["app", "app.kubernetes.io/name"]
                .iter()
                .any(|k| l.get(*k).map(String::as_str) == Some("cluster-autoscaler"))
        });
    let image = template.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| {
            c.image
                .as_deref()
                .unwrap_or("")
                .contains("cluster-autoscaler")
        })
    });
    labelled || image
}

/// Every Deployment, in any namespace, that runs the Cluster Autoscaler.
pub async fn autoscalers(client: &kube::Client) -> anyhow::Result<Vec<Autoscaler>> {
    let api: Api<Deployment> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .context("listing Deployments to find the Cluster Autoscaler")?;
    let mut out: Vec<Autoscaler> = list
        .items
        .iter()
        .filter(|d| runs_cluster_autoscaler(d))
        .map(|d| Autoscaler {
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            name: d.metadata.name.clone().unwrap_or_default(),
            replicas: d.spec.replicas.unwrap_or(1),
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// `data` of the karpctl-state ConfigMap; empty when it does not exist.
pub async fn recorded_state(client: &kube::Client) -> anyhow::Result<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), STATE_NAMESPACE);
    let cm = api
        .get_opt(STATE_CONFIG_MAP)
        .await
        .context("reading ConfigMap kube-system/karpctl-state")?;
    Ok(cm.and_then(|cm| cm.data).unwrap_or_default())
}

/// Sets one key of karpctl-state (creating the ConfigMap if needed); every other key is kept,
/// and a 409 conflict is retried on fresh data.
pub async fn record(client: &kube::Client, key: &str, value: &str) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), STATE_NAMESPACE);
    for _ in 0..5 {
        let result = match api
            .get_opt(STATE_CONFIG_MAP)
            .await
            .context("reading ConfigMap kube-system/karpctl-state")?
        {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(STATE_CONFIG_MAP.into()),
                        namespace: Some(STATE_NAMESPACE.into()),
                        labels: Some([(MANAGED_BY_LABEL.into(), MANAGED_BY.into())].into()),
                        ..ObjectMeta::default()
                    },
                    data: Some([(key.to_string(), value.to_string())].into()),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &cm).await
            }
            Some(mut cm) => {
                cm.data
                    .get_or_insert_with(Default::default)
                    .insert(key.to_string(), value.to_string());
                api.replace(STATE_CONFIG_MAP, &PostParams::default(), &cm)
                    .await
            }
        };
        match result {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e).context("writing ConfigMap kube-system/karpctl-state"),
        }
    }
    bail!(
        "ConfigMap kube-system/karpctl-state kept changing under us (5 conflicts); run init again"
    )
}

/// Every CRD labelled as managed by karpctl, by name (all `true`: the label says they are ours).
pub async fn owned_crds(client: &kube::Client) -> anyhow::Result<BTreeMap<String, bool>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")))
        .await
        .context("listing CustomResourceDefinitions managed by karpctl")?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .map(|n| (n, true))
        .collect())
}

/// Deletes a CRD (gone already is fine) and waits until it is gone: a CRD lingers while the
/// API server removes its objects, and a re-run must not see it again.
pub async fn delete_crd(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.delete(name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("deleting CustomResourceDefinition {name}"));
        }
    }
    let deadline = tokio::time::Instant::now() + ESTABLISHED_TIMEOUT;
    while api
        .get_opt(name)
        .await
        .with_context(|| format!("reading CustomResourceDefinition {name}"))?
        .is_some()
    {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "CustomResourceDefinition {name} is still terminating after {}s; its objects may have finalizers",
                ESTABLISHED_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// `data` of karpctl-state; None when the ConfigMap does not exist.
pub async fn recorded_state_opt(
    client: &kube::Client,
) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), STATE_NAMESPACE);
    let cm = api
        .get_opt(STATE_CONFIG_MAP)
        .await
        .context("reading ConfigMap kube-system/karpctl-state")?;
    Ok(cm.map(|cm| cm.data.unwrap_or_default()))
}

/// Drops one key of karpctl-state (every other key kept; a 409 retried on fresh data).
pub async fn forget(client: &kube::Client, key: &str) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), STATE_NAMESPACE);
    for _ in 0..5 {
        let Some(mut cm) = api
            .get_opt(STATE_CONFIG_MAP)
            .await
            .context("reading ConfigMap kube-system/karpctl-state")?
        else {
            return Ok(());
        };
        if cm.data.as_mut().and_then(|d| d.remove(key)).is_none() {
            return Ok(());
        }
        match api
            .replace(STATE_CONFIG_MAP, &PostParams::default(), &cm)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e).context("writing ConfigMap kube-system/karpctl-state"),
        }
    }
    bail!("ConfigMap kube-system/karpctl-state kept changing under us (5 conflicts)")
}

/// Deletes karpctl-state (gone already is fine).
pub async fn delete_state(client: &kube::Client) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), STATE_NAMESPACE);
    match api.delete(STATE_CONFIG_MAP, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).context("deleting ConfigMap kube-system/karpctl-state"),
    }
}

/// Sets a Deployment's replicas.
pub async fn scale(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
    )
    .await
    .with_context(|| format!("scaling Deployment {namespace}/{name} to {replicas}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn deployment(labels: &[(&str, &str)], image: &str) -> Deployment {
        let mut d = Deployment::default();
        d.spec.template.metadata = Some(ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        });
        d.spec.template.spec = Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        d
    }

    #[test]
    fn the_cluster_autoscaler_is_found_by_label_or_image() {
        for (labels, image, expected) in [
            (vec![("app", "cluster-autoscaler")], "example/ca:1", true),
            (
                vec![("app.kubernetes.io/name", "cluster-autoscaler")],
                "example/ca:1",
                true,
            ),
            (
                vec![],
                "registry.k8s.io/autoscaling/cluster-autoscaler:v1.37.0",
                true,
            ),
            (vec![("app", "coredns")], "eks/coredns:v1.12.4", false),
        ] {
            assert_eq!(
                runs_cluster_autoscaler(&deployment(&labels, image)),
                expected,
                "{labels:?} {image}"
            );
        }
    }
}

//! Applying init's Kubernetes objects (the controller's manifests, the default NodePool and
//! EC2NodeClass) without knowing their types: dynamic objects addressed by apiVersion, kind
//! and name, server-side applied with field manager `karpctl`, and a Deployment's rollout
//! waited on with progress. What to apply is decided in `plan::controller`/`plan::init`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use crate::plan::controller::{KubeObject, MANAGED_BY_LABEL, SPEC_HASH_ANNOTATION};
use crate::plan::init::{ObjectState, object_key};

const FIELD_MANAGER: &str = "karpctl";
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);

fn api(client: &kube::Client, o: &KubeObject) -> Api<DynamicObject> {
    let (group, version) = match o.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", o.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &o.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &o.plural());
    match &o.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Which of `objects` exist, with their owner label and karpctl's hash annotation. A kind
/// whose CRD is not installed yet reads as absent.
pub async fn current(
    client: &kube::Client,
    objects: &[KubeObject],
) -> anyhow::Result<BTreeMap<String, ObjectState>> {
    let mut out = BTreeMap::new();
    for o in objects {
        let found = match api(client, o).get_opt(&o.name).await {
            Ok(found) => found,
            // 404 for the whole resource (CRD not installed yet): nothing exists.
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading {} {}", o.kind, o.id()));
            }
        };
        if let Some(found) = found {
            let label = |m: &Option<BTreeMap<String, String>>, k: &str| {
                m.as_ref()
                    .and_then(|m| m.get(k))
                    .cloned()
                    .unwrap_or_default()
            };
            out.insert(
                object_key(o),
                ObjectState {
                    managed_by: label(&found.metadata.labels, MANAGED_BY_LABEL),
                    hash: label(&found.metadata.annotations, SPEC_HASH_ANNOTATION),
                },
            );
        }
    }
    Ok(out)
}

/// Server-side applies `o` (forcing karpctl's fields: an earlier karpctl owned them), then
/// waits for it when it asks to be waited on.
pub async fn apply(
    client: &kube::Client,
    o: &KubeObject,
    progress: &dyn Fn(String),
) -> anyhow::Result<()> {
    api(client, o)
        .patch(
            &o.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&o.body),
        )
        .await
        .with_context(|| format!("applying {} {}", o.kind, o.id()))?;
    if o.wait && o.kind == "Deployment" {
        wait_rollout(client, o, progress).await?;
    }
    Ok(())
}

/// Waits until every replica of the Deployment runs the applied template and is available,
/// printing progress whenever the count changes.
async fn wait_rollout(
    client: &kube::Client,
    o: &KubeObject,
    progress: &dyn Fn(String),
) -> anyhow::Result<()> {
    let ns = o.namespace.as_deref().unwrap_or("default");
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let d = api
            .get(&o.name)
            .await
            .with_context(|| format!("reading Deployment {}", o.id()))?;
        let want = d.spec.replicas.unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let observed =
            status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        let total = status.replicas.unwrap_or(0);
        if observed && updated == want && available == want && total == want {
            progress(format!(
                "deployment {}: rolled out, {available}/{want} available",
                o.id()
            ));
            return Ok(());
        }
        let line = format!(
            "deployment {}: waiting for rollout, {updated}/{want} updated, {available}/{want} available",
            o.id()
        );
        if line != last {
            progress(line.clone());
            last = line;
        }
        if start.elapsed() > ROLLOUT_TIMEOUT {
            let why = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.status.as_deref() != Some("True"))
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.type_.unwrap_or_default(),
                        c.message.unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            bail!(
                "Deployment {} did not roll out within {}s ({updated}/{want} updated, {available}/{want} available{}); see `kubectl -n {ns} describe deployment {}` and its pods' events, fix the cause, then run init again",
                o.id(),
                ROLLOUT_TIMEOUT.as_secs(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!("; {why}")
                },
                o.name
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

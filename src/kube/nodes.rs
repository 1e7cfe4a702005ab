//! Nodes and pods for `migrate-from-cas`: reading them, cordoning, and the two ways a pod is
//! moved off a node — the Eviction API (PodDisruptionBudgets apply) on a client that does not
//! retry 429 (a refusal is an answer the drain reports, not something to wait out inside the
//! client), and deletion. What to do to which pod is decided by the drain rules
//! (`karpctl_scheduling::drain`), not here.

use anyhow::Context;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;

/// The same cluster as `client`'s kubeconfig context, without kube's retry of 429/503.
pub async fn client_without_retries(context: Option<&str>) -> anyhow::Result<kube::Client> {
    let mut config = match context {
        None => kube::Config::infer().await.map_err(anyhow::Error::from),
        Some(name) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(name.to_string()),
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::from),
    }
    .context("loading the kubeconfig for the cluster")?;
    config.default_retry = false;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

pub async fn nodes(client: &kube::Client, selector: Option<&str>) -> anyhow::Result<Vec<Node>> {
    let api: Api<Node> = Api::all(client.clone());
    let mut params = ListParams::default();
    if let Some(s) = selector {
        params = params.labels(s);
    }
    Ok(api.list(&params).await.context("listing Nodes")?.items)
}

pub async fn pods(client: &kube::Client) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await
        .context("listing Pods")?
        .items)
}

pub async fn pods_on(client: &kube::Client, node: &str) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await
        .with_context(|| format!("listing the pods on node {node}"))?
        .items)
}

pub async fn pdbs(client: &kube::Client) -> anyhow::Result<Vec<PodDisruptionBudget>> {
    let api: Api<PodDisruptionBudget> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await
        .context("listing PodDisruptionBudgets")?
        .items)
}

/// Marks a node unschedulable (or schedulable again).
pub async fn cordon(client: &kube::Client, node: &str, unschedulable: bool) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    match api
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": unschedulable}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "{} node {node}",
                if unschedulable {
                    "cordoning"
                } else {
                    "uncordoning"
                }
            )
        }),
    }
}

/// What the Eviction API answered.
pub enum Eviction {
    Evicted,
    /// 429: a PodDisruptionBudget refuses it now (the message names it).
    Refused(String),
}

pub async fn evict(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<Eviction> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match api.evict(name, &EvictParams::default()).await {
        Ok(_) => Ok(Eviction::Evicted),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Evicted),
        Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Refused(s.message)),
        Err(e) => Err(e).with_context(|| format!("evicting pod {namespace}/{name}")),
    }
}

pub async fn delete_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    grace_seconds: i64,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: u32::try_from(grace_seconds.max(0)).ok(),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting pod {namespace}/{name}")),
    }
}

//! Reading and writing the `aws-auth` ConfigMap. The merge itself is pure
//! ([`super::aws_auth`]); this is the read-merge-write loop around it, retrying on a 409
//! Conflict with fresh data so a concurrent edit is merged, never overwritten.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::aws_auth::{self, MapRole, Merge};

const NAMESPACE: &str = "kube-system";
const NAME: &str = "aws-auth";
const KEY: &str = "mapRoles";

/// A client from the kubeconfig as kubectl finds it (KUBECONFIG, ~/.kube/config, current
/// context unless `context` names one), or the in-cluster service account.
pub async fn client(context: Option<&str>) -> anyhow::Result<kube::Client> {
    let config = match context {
        None => kube::Config::infer().await.map_err(anyhow::Error::from),
        Some(name) => kube::Config::from_kubeconfig(&kube::config::KubeConfigOptions {
            context: Some(name.to_string()),
            ..Default::default()
        })
        .await
        .map_err(anyhow::Error::from),
    }
    .context("loading the kubeconfig (KUBECONFIG or ~/.kube/config) for the cluster")?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// `data.mapRoles` of aws-auth; None when the ConfigMap does not exist.
pub async fn map_roles(client: &kube::Client) -> anyhow::Result<Option<String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let cm = api
        .get_opt(NAME)
        .await
        .context("reading ConfigMap kube-system/aws-auth")?;
    Ok(cm.map(|cm| cm.data.and_then(|mut d| d.remove(KEY)).unwrap_or_default()))
}

/// Adds `row` to aws-auth (creating the ConfigMap if there is none), retrying conflicts.
pub async fn add_role(client: &kube::Client, row: &MapRole) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    for _ in 0..5 {
        let current = api
            .get_opt(NAME)
            .await
            .context("reading ConfigMap kube-system/aws-auth")?;
        let result = match current {
            None => {
                let Merge::Changed(text) = aws_auth::add_role("", row)? else {
                    return Ok(());
                };
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        namespace: Some(NAMESPACE.into()),
                        ..ObjectMeta::default()
                    },
                    data: Some([(KEY.to_string(), text)].into()),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &cm).await
            }
            Some(mut cm) => {
                let data = cm.data.get_or_insert_with(Default::default);
                let text = data.get(KEY).cloned().unwrap_or_default();
                match aws_auth::add_role(&text, row)? {
                    Merge::Unchanged => return Ok(()),
                    Merge::Changed(text) => {
                        data.insert(KEY.to_string(), text);
                        // `replace` sends the resourceVersion we read: a concurrent edit is a 409.
                        api.replace(NAME, &PostParams::default(), &cm).await
                    }
                }
            }
        };
        match result {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e).context("writing ConfigMap kube-system/aws-auth"),
        }
    }
    bail!("ConfigMap kube-system/aws-auth kept changing under us (5 conflicts); run init again")
}

/// Removes the rows of `rolearn` from aws-auth (only those; every other byte kept),
/// retrying conflicts. Nothing to do when the ConfigMap or the row is gone.
pub async fn remove_role(client: &kube::Client, rolearn: &str) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    for _ in 0..5 {
        let Some(mut cm) = api
            .get_opt(NAME)
            .await
            .context("reading ConfigMap kube-system/aws-auth")?
        else {
            return Ok(());
        };
        let data = cm.data.get_or_insert_with(Default::default);
        let text = data.get(KEY).cloned().unwrap_or_default();
        let Merge::Changed(text) = aws_auth::remove_role(&text, rolearn)? else {
            return Ok(());
        };
        data.insert(KEY.to_string(), text);
        match api.replace(NAME, &PostParams::default(), &cm).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e).context("writing ConfigMap kube-system/aws-auth"),
        }
    }
    bail!(
        "ConfigMap kube-system/aws-auth kept changing under us (5 conflicts); run uninstall again"
    )
}

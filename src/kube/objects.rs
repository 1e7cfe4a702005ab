//! Applying init's Kubernetes objects (the controller's manifests, the default NodePool and
//! EC2NodeClass) without knowing their types: dynamic objects addressed by apiVersion, kind
//! and name, server-side applied with field manager `karpctl`, and a Deployment's rollout
//! waited on with progress; for uninstall, finding them again by label and deleting them,
//! waiting for finalizers and NodeClaims. What to do is decided in `plan::*`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};

use crate::plan::controller::{KubeObject, MANAGED_BY_LABEL, SPEC_HASH_ANNOTATION, plural};
use crate::plan::init::{ObjectState, object_key};
use crate::plan::uninstall::FoundObject;

const FIELD_MANAGER: &str = "karpctl";
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long uninstall waits for the controller to terminate nodes and run finalizers.
const DELETE_TIMEOUT: Duration = Duration::from_secs(900);
/// How long uninstall waits on the controller's finalizers while no controller runs at all.
const NOT_RUNNING_TIMEOUT: Duration = Duration::from_secs(60);
/// The Lease the controller's replicas compete for (its `LEADER_ELECTION_NAME` default).
const LEADER_LEASE: &str = "karpenter-leader-election";

/// Whether a controller replica leads: the leader Lease (in any namespace) has a holder that
/// renewed it within its lease duration (with slack for clock skew between here and the
/// cluster). `Err` says why not, naming the Lease.
pub async fn controller_running(client: &kube::Client) -> anyhow::Result<Result<String, String>> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::all(client.clone());
    let found = leases
        .list(&ListParams::default().fields(&format!("metadata.name={LEADER_LEASE}")))
        .await
        .context("reading the controller's leader Lease")?;
    Ok(leader_of(&found.items, k8s_openapi::jiff::Timestamp::now()))
}

/// The live holder among `leases`, or why there is none (pure, for tests).
pub fn leader_of(
    leases: &[k8s_openapi::api::coordination::v1::Lease],
    now: k8s_openapi::jiff::Timestamp,
) -> Result<String, String> {
    let Some(lease) = leases.first() else {
        return Err(format!(
            "no Lease {LEADER_LEASE} exists: the controller has never run in this cluster"
        ));
    };
    let id = format!(
        "{}/{}",
        lease.metadata.namespace.as_deref().unwrap_or_default(),
        lease.metadata.name.as_deref().unwrap_or_default()
    );
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed_ago = spec
        .renew_time
        .map(|t| (now.as_millisecond() - t.0.as_millisecond()) / 1000);
    match (holder, renewed_ago) {
        (Some(h), Some(ago)) if ago <= duration * 2 + 10 => Ok(h),
        (Some(h), Some(ago)) => Err(format!(
            "Lease {id} was last renewed by {h} {ago}s ago: no controller replica is running"
        )),
        _ => Err(format!(
            "Lease {id} has no holder: no controller replica is running"
        )),
    }
}

/// What to tell a user waiting on the controller, and whether to give up: `None` while a
/// controller leads; else the message, and since when it has not been running.
struct ControllerWatch {
    down_since: Option<Instant>,
}

impl ControllerWatch {
    fn new() -> Self {
        Self { down_since: None }
    }

    /// Check the controller; an error once it has been down for [`NOT_RUNNING_TIMEOUT`].
    async fn check(
        &mut self,
        client: &kube::Client,
        waiting_for: &str,
        progress: &dyn Fn(String),
    ) -> anyhow::Result<()> {
        let running = match controller_running(client).await {
            Ok(running) => running,
            // Not allowed to read Leases, or a blip: say nothing rather than guess.
            Err(_) => return Ok(()),
        };
        match running {
            Ok(_) => {
                if self.down_since.take().is_some() {
                    progress("the controller is running again".to_owned());
                }
                Ok(())
            }
            Err(why) => {
                let since = *self.down_since.get_or_insert_with(|| {
                    progress(format!(
                        "{waiting_for}: but the controller is not running ({why}); nothing will finish this until it does"
                    ));
                    Instant::now()
                });
                if since.elapsed() > NOT_RUNNING_TIMEOUT {
                    bail!(
                        "{waiting_for}, but the controller is not running ({why}). Start it (`kubectl -n kube-system scale deployment karpenter --replicas=2`, or run `karpctl init` again) so it drains and terminates the nodes, then run uninstall again"
                    );
                }
                Ok(())
            }
        }
    }
}

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

/// Kinds of the controller's objects, as `init` creates them from templates/controller.
const CONTROLLER_KINDS: &[(&str, &str, bool)] = &[
    ("apps/v1", "Deployment", true),
    ("v1", "Service", true),
    ("policy/v1", "PodDisruptionBudget", true),
    ("v1", "ServiceAccount", true),
    ("rbac.authorization.k8s.io/v1", "Role", true),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", true),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", false),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", false),
    ("v1", "Namespace", false),
];

fn found_api(client: &kube::Client, o: &FoundObject) -> Api<DynamicObject> {
    let (group, version) = match o.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", o.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &o.kind);
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural(&o.kind));
    match &o.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Every controller object labelled managed by karpctl, in any namespace.
pub async fn controller_objects(client: &kube::Client) -> anyhow::Result<Vec<FoundObject>> {
    let mut out = Vec::new();
    let selector = format!("{MANAGED_BY_LABEL}={}", crate::plan::init::MANAGED_BY);
    for (api_version, kind, namespaced) in CONTROLLER_KINDS {
        let probe = FoundObject {
            api_version: (*api_version).into(),
            kind: (*kind).into(),
            namespace: None,
            name: String::new(),
        };
        let list = found_api(client, &probe)
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing {kind}s labelled {selector}"))?;
        for item in list.items {
            out.push(FoundObject {
                api_version: (*api_version).into(),
                kind: (*kind).into(),
                namespace: if *namespaced {
                    item.metadata.namespace.clone()
                } else {
                    None
                },
                name: item.metadata.name.clone().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Names of every object of a Karpenter kind; empty when its CRD is not served.
pub async fn names_of(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
) -> anyhow::Result<Vec<String>> {
    let probe = FoundObject {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: None,
        name: String::new(),
    };
    match found_api(client, &probe).list(&ListParams::default()).await {
        Ok(list) => Ok(list
            .items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("listing {kind}s")),
    }
}

/// Deletes `o` (absent is fine); with `wait`, polls until it is gone so its finalizers ran.
pub async fn delete(
    client: &kube::Client,
    o: &FoundObject,
    wait: bool,
    progress: &dyn Fn(String),
) -> anyhow::Result<()> {
    let api = found_api(client, o);
    match api.delete(&o.name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("deleting {} {}", o.kind, o.id())),
    }
    if !wait {
        return Ok(());
    }
    let start = Instant::now();
    let mut said = false;
    // Karpenter's own objects are finalized by the controller; say so when it is not there.
    let needs_controller = o.api_version.starts_with("karpenter.");
    let mut controller = ControllerWatch::new();
    while api
        .get_opt(&o.name)
        .await
        .with_context(|| format!("reading {} {}", o.kind, o.id()))?
        .is_some()
    {
        if needs_controller {
            let what = format!("{} {} waits for the controller's finalizer", o.kind, o.id());
            controller.check(client, &what, progress).await?;
        }
        if start.elapsed() > DELETE_TIMEOUT {
            bail!(
                "{} {} is still terminating after {}s: its finalizer is held by the Karpenter controller; check it runs (`kubectl -n kube-system logs -l app.kubernetes.io/instance=karpenter`), then run uninstall again",
                o.kind,
                o.id(),
                DELETE_TIMEOUT.as_secs()
            );
        }
        if !said {
            progress(format!("{} {}: waiting for its finalizers", o.kind, o.id()));
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Waits until no NodeClaim is left, reporting the count as it falls.
pub async fn wait_node_claims_gone(
    client: &kube::Client,
    progress: &dyn Fn(String),
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = usize::MAX;
    let mut controller = ControllerWatch::new();
    loop {
        let left = names_of(client, "karpenter.sh/v1", "NodeClaim").await?;
        if left.is_empty() {
            return Ok(());
        }
        let what = format!(
            "{} NodeClaim(s) wait to be drained and terminated by the controller ({})",
            left.len(),
            left.join(", ")
        );
        controller.check(client, &what, progress).await?;
        if left.len() != last {
            progress(format!(
                "waiting for {} NodeClaim(s) to be drained and terminated: {}",
                left.len(),
                left.join(", ")
            ));
            last = left.len();
        }
        if start.elapsed() > DELETE_TIMEOUT {
            bail!(
                "{} NodeClaim(s) still exist after {}s ({}); the controller drains and terminates them — check it runs and what blocks the drain (`kubectl get nodeclaims`, PodDisruptionBudgets, karpenter.sh/do-not-disrupt pods), then run uninstall again",
                left.len(),
                DELETE_TIMEOUT.as_secs(),
                left.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod controller_liveness_tests {
    use super::leader_of;
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use k8s_openapi::jiff::{Timestamp, ToSpan};

    fn lease(holder: Option<&str>, renewed: Option<Timestamp>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                namespace: Some("kube-system".into()),
                name: Some("karpenter-leader-election".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: renewed.map(MicroTime),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn uninstall_tells_a_running_controller_from_a_stopped_one() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let recent = now.checked_sub(5.seconds()).unwrap();
        let stale = now.checked_sub(10.minutes()).unwrap();
        assert_eq!(
            leader_of(&[lease(Some("karpenter-a"), Some(recent))], now),
            Ok("karpenter-a".into())
        );
        let stopped = leader_of(&[lease(Some("karpenter-a"), Some(stale))], now).unwrap_err();
        assert!(stopped.contains("600s ago"), "{stopped}");
        assert!(
            stopped.contains("kube-system/karpenter-leader-election"),
            "{stopped}"
        );
        // A leader that stepped down released the Lease.
        let released = leader_of(&[lease(Some(""), Some(recent))], now).unwrap_err();
        assert!(released.contains("no holder"), "{released}");
        let never = leader_of(&[], now).unwrap_err();
        assert!(never.contains("never run"), "{never}");
    }
}

//! The controller's reconcilers end to end in the sandbox: `karpctl init` deploys it,
//! `sandbox/sandbox controller start` runs it locally with the Deployment's env and
//! ServiceAccount token, the real kube-scheduler marks pods unschedulable, the AWS provider
//! launches into the sandbox's EC2, the registrar turns instances into Nodes and kwok runs
//! the pods.
//!
//! Each test owns a NodePool of its own (its pods select it by `karpenter.sh/nodepool`), so
//! tests neither see each other's capacity nor depend on order; each deletes what it made
//! and waits for the instances to go before the next one takes the controller.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use karpctl_api::v1::{NodeClaim, NodePool};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::controller::{NAMESPACE, forget_lease, sandbox_cmd, start_controller};
use support::{Sandbox, eventually, sandbox, text, unique};

/// One test at a time drives the controller.
static CONTROLLER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the turn; on drop deletes the test's objects, waits for its claims to go (the
/// controller terminates their instances), then stops the controller and forgets the Lease.
struct Run {
    pool: String,
    deployments: Vec<String>,
    restore_registration_ttl: bool,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Run {
    fn drop(&mut self) {
        for d in &self.deployments {
            let _ = sandbox_cmd(&[
                "kubectl",
                "-n",
                "default",
                "delete",
                "deployment",
                d,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        let _ = sandbox_cmd(&[
            "kubectl",
            "delete",
            "nodepool",
            &self.pool,
            "--ignore-not-found",
            "--wait=false",
        ]);
        let selector = format!("karpenter.sh/nodepool={}", self.pool);
        let out = sandbox_cmd(&[
            "kubectl",
            "delete",
            "nodeclaims",
            "-l",
            &selector,
            "--timeout=180s",
        ]);
        // Nodes go once the registrar sees their instances terminated.
        let mut left = sandbox_cmd(&["kubectl", "get", "nodes", "-l", &selector, "-o", "name"]);
        for _ in 0..60 {
            if text(&left.stdout).trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            left = sandbox_cmd(&["kubectl", "get", "nodes", "-l", &selector, "-o", "name"]);
        }
        let _ = sandbox_cmd(&["never-join", "--clear"]);
        if self.restore_registration_ttl {
            let _ = sandbox_cmd(&[
                "kubectl",
                "-n",
                NAMESPACE,
                "set",
                "env",
                "deployment/karpenter",
                "REGISTRATION_TTL-",
            ]);
        }
        let _ = sandbox_cmd(&["controller", "stop"]);
        forget_lease();
        if !std::thread::panicking() {
            assert!(
                out.status.success(),
                "cleaning up nodeclaims: {}",
                text(&out.stderr)
            );
            assert!(
                text(&left.stdout).trim().is_empty(),
                "nodes left behind: {}",
                text(&left.stdout)
            );
        }
    }
}

/// Take the turn, make sure `karpctl init` deployed the controller, create this test's
/// NodePool and start the controller.
async fn start(sb: &Sandbox, pool_spec: Value, env: &[(&str, &str)]) -> (Run, String) {
    let turn = CONTROLLER.lock().await;
    let client = sb.kube().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    if deployments.get_opt("karpenter").await.unwrap().is_none() {
        let out = sb.karpctl(&["init", "--cluster", sb.cluster(), "--yes"]);
        assert!(out.status.success(), "karpctl init: {}", text(&out.stderr));
    }
    let pool = unique("e2e");
    let mut run = Run {
        pool: pool.clone(),
        deployments: Vec::new(),
        restore_registration_ttl: false,
        _turn: turn,
    };
    for (k, v) in env {
        let out = sandbox_cmd(&[
            "kubectl",
            "-n",
            NAMESPACE,
            "set",
            "env",
            "deployment/karpenter",
            &format!("{k}={v}"),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        run.restore_registration_ttl = true;
    }
    let mut spec = json!({
        "template": {
            "metadata": {"labels": {"e2e": pool}},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                    {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]}
                ]
            }
        }
    });
    merge(&mut spec, pool_spec);
    let np: NodePool = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": pool}, "spec": spec
    }))
    .unwrap();
    Api::<NodePool>::all(client)
        .create(&PostParams::default(), &np)
        .await
        .unwrap();
    start_controller();
    (run, pool)
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A pause Deployment whose pods can only land on `pool`'s nodes.
async fn deploy(
    sb: &Sandbox,
    run: &mut Run,
    name: &str,
    replicas: i32,
    cpu: &str,
    extra_pod_spec: Value,
) {
    let mut pod_spec = json!({
        "nodeSelector": {"karpenter.sh/nodepool": run.pool},
        "containers": [{
            "name": "pause", "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
            "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}
        }]
    });
    merge(&mut pod_spec, extra_pod_spec);
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(sb.kube().await, "default")
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    run.deployments.push(name.to_string());
}

async fn pods(sb: &Sandbox, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(sb.kube().await, "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

async fn running(sb: &Sandbox, app: &str, want: usize) -> Vec<Pod> {
    eventually(
        &format!("{want} {app} pods Running"),
        Duration::from_secs(180),
        || async {
            let p = pods(sb, app).await;
            let up = p
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (p.len() == want && up == want).then_some(p)
        },
    )
    .await
}

async fn claims(sb: &Sandbox, pool: &str) -> Vec<NodeClaim> {
    Api::<NodeClaim>::all(sb.kube().await)
        .list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}")))
        .await
        .unwrap()
        .items
}

fn condition(claim: &NodeClaim, type_: &str) -> bool {
    use karpctl_api::v1::Conditions;
    claim.status.as_ref().is_some_and(|s| s.is_true(type_))
}

async fn node(sb: &Sandbox, name: &str) -> Node {
    Api::<Node>::all(sb.kube().await).get(name).await.unwrap()
}

async fn events(sb: &Sandbox, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(sb.kube().await, "default")
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_pods_become_launched_registered_initialized_nodes() {
    let sb = sandbox();
    let (mut run, pool) = start(sb, json!({}), &[]).await;
    let app = unique("inflate");
    deploy(sb, &mut run, &app, 1, "500m", json!({})).await;
    running(sb, &app, 1).await;
    let deployments: Api<Deployment> = Api::namespaced(sb.kube().await, "default");
    deployments
        .patch(
            &app,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let pods = running(sb, &app, 5).await;

    let all = eventually("every claim Ready", Duration::from_secs(60), || async {
        let c = claims(sb, &pool).await;
        c.iter().all(|c| condition(c, "Ready")).then_some(c)
    })
    .await;
    assert!(!all.is_empty());
    let mut claim_nodes = BTreeSet::new();
    for c in &all {
        for t in ["Launched", "Registered", "Initialized"] {
            assert!(condition(c, t), "{} not {t}", c.name_any());
        }
        let status = c.status.as_ref().unwrap();
        let provider_id = status.provider_id.clone().unwrap();
        assert!(provider_id.starts_with("aws:///"), "{provider_id}");
        assert!(
            status
                .image_id
                .as_deref()
                .unwrap_or_default()
                .starts_with("ami-")
        );
        assert!(!status.capacity.is_empty() && !status.allocatable.is_empty());
        let labels = c.labels();
        for key in [
            "node.kubernetes.io/instance-type",
            "topology.kubernetes.io/zone",
            "karpenter.sh/capacity-type",
        ] {
            assert!(labels.contains_key(key), "{} has no {key}", c.name_any());
        }
        let n = node(sb, status.node_name.as_deref().unwrap()).await;
        assert_eq!(
            n.spec.as_ref().unwrap().provider_id.as_deref(),
            Some(provider_id.as_str())
        );
        let nl = n.labels();
        assert_eq!(nl.get("karpenter.sh/nodepool"), Some(&pool));
        assert_eq!(nl.get("e2e"), Some(&pool), "template labels reach the node");
        assert_eq!(
            nl.get("karpenter.sh/registered").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            nl.get("karpenter.sh/initialized").map(String::as_str),
            Some("true")
        );
        assert!(
            n.finalizers()
                .iter()
                .any(|f| f == "karpenter.sh/termination")
        );
        assert!(
            n.owner_references()
                .iter()
                .any(|o| o.kind == "NodeClaim" && o.name == c.name_any())
        );
        assert!(
            !n.spec
                .as_ref()
                .unwrap()
                .taints
                .iter()
                .flatten()
                .any(|t| t.key == "karpenter.sh/unregistered"),
            "the unregistered taint is gone"
        );
        claim_nodes.insert(n.name_any());
    }
    // Every pod runs on a node the controller launched for it.
    for p in &pods {
        let on = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(
            claim_nodes.contains(&on),
            "{} on {on}, not a launched node",
            p.name_any()
        );
    }
    // 5 × (500m, 1Gi) is a packing job, not one node per pod.
    assert!(all.len() < 5, "{} claims for 5 small pods", all.len());

    let np = eventually(
        "NodePool status counts its nodes",
        Duration::from_secs(60),
        || async {
            let np = Api::<NodePool>::all(sb.kube().await)
                .get(&pool)
                .await
                .unwrap();
            (np.status.as_ref().and_then(|s| s.nodes) == Some(all.len() as i64)).then_some(np)
        },
    )
    .await;
    let status = np.status.unwrap();
    assert_ne!(status.resources.get("cpu").map(|q| q.as_str()), Some("0"));
    let nominated = events(sb, "Nominated").await;
    assert!(
        nominated.iter().any(|e| e
            .involved_object
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with(&app)),
        "pods placed on in-flight capacity get a Nominated event"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn taints_zone_spread_and_hostname_anti_affinity_shape_what_launches() {
    let sb = sandbox();
    let (mut run, pool) = start(
        sb,
        json!({"template": {"spec": {"taints": [{"key": "e2e/dedicated", "value": "yes", "effect": "NoSchedule"}]}}}),
        &[],
    )
    .await;
    let app = unique("spread");
    deploy(
        sb,
        &mut run,
        &app,
        3,
        "250m",
        json!({
            "tolerations": [{"key": "e2e/dedicated", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": app}}
            }],
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": app}}
            }]}}
        }),
    )
    .await;
    let pods = running(sb, &app, 3).await;
    let mut hosts = BTreeSet::new();
    let mut zones = BTreeSet::new();
    for p in &pods {
        let n = node(sb, p.spec.as_ref().unwrap().node_name.as_deref().unwrap()).await;
        assert_eq!(n.labels().get("karpenter.sh/nodepool"), Some(&pool));
        assert!(
            n.spec
                .as_ref()
                .unwrap()
                .taints
                .iter()
                .flatten()
                .any(|t| t.key == "e2e/dedicated"),
            "the pool's taint is on {}",
            n.name_any()
        );
        hosts.insert(n.name_any());
        zones.insert(
            n.labels()
                .get("topology.kubernetes.io/zone")
                .cloned()
                .unwrap(),
        );
    }
    assert_eq!(hosts.len(), 3, "hostname anti-affinity: one pod per node");
    assert_eq!(
        zones.len(),
        3,
        "zone spread with maxSkew 1 over three zones"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodepool_limit_stops_launches_and_the_pending_pod_is_told_why() {
    let sb = sandbox();
    let (mut run, pool) = start(sb, json!({"limits": {"cpu": "2"}}), &[]).await;
    let app = unique("limited");
    deploy(
        sb,
        &mut run,
        &app,
        2,
        "1500m",
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": app}}
        }]}}}),
    )
    .await;
    let pending = eventually(
        "one pod running, one told it hits the limit",
        Duration::from_secs(180),
        || async {
            let p = pods(sb, &app).await;
            let up = p
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count();
            let waiting: Vec<&Pod> = p
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
                .collect();
            if up != 1 || waiting.len() != 1 {
                return None;
            }
            let name = waiting[0].name_any();
            let told = events(sb, "FailedScheduling").await.into_iter().any(|e| {
                e.involved_object.name.as_deref() == Some(name.as_str())
                    && e.reporting_component
                        .as_deref()
                        .or(e.source.as_ref().and_then(|s| s.component.as_deref()))
                        != Some("default-scheduler")
                    && e.message.as_deref().unwrap_or_default().contains("limit")
            });
            told.then_some(name)
        },
    )
    .await;
    // Give the provisioner a few more batches: still one claim, the pod still pending.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(claims(sb, &pool).await.len(), 1, "the limit held");
    let p = Api::<Pod>::namespaced(sb.kube().await, "default")
        .get(&pending)
        .await
        .unwrap();
    assert!(
        p.spec.unwrap().node_name.is_none(),
        "{pending} stayed pending"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_never_registers_is_replaced_after_the_registration_ttl() {
    let sb = sandbox();
    let (mut run, pool) = start(sb, json!({}), &[("REGISTRATION_TTL", "20s")]).await;
    let out = sandbox_cmd(&[
        "never-join",
        "--tag",
        &format!("karpenter.sh/nodepool={pool}"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let app = unique("stuck");
    deploy(sb, &mut run, &app, 1, "500m", json!({})).await;
    let first = eventually("a claim launched", Duration::from_secs(60), || async {
        claims(sb, &pool)
            .await
            .into_iter()
            .find(|c| condition(c, "Launched"))
            .map(|c| c.name_any())
    })
    .await;
    eventually(
        &format!("{first} deleted by liveness"),
        Duration::from_secs(90),
        || async {
            (!claims(sb, &pool)
                .await
                .iter()
                .any(|c| c.name_any() == first))
            .then_some(())
        },
    )
    .await;
    let out = sandbox_cmd(&["never-join", "--clear"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pods = running(sb, &app, 1).await;
    let replacement = claims(sb, &pool).await;
    assert_eq!(replacement.len(), 1);
    assert_ne!(replacement[0].name_any(), first);
    assert_eq!(
        replacement[0]
            .status
            .as_ref()
            .and_then(|s| s.node_name.clone()),
        pods[0].spec.as_ref().unwrap().node_name.clone()
    );
    let liveness = Api::<Event>::namespaced(sb.kube().await, "default")
        .list(&ListParams::default().fields(&format!("involvedObject.name={first}")))
        .await
        .unwrap()
        .items;
    assert!(
        liveness
            .iter()
            .any(|e| e.reason.as_deref() == Some("Liveness")),
        "the deleted claim says why: {:?}",
        liveness
            .iter()
            .map(|e| e.reason.clone())
            .collect::<Vec<_>>()
    );
}

//! Driving the bundled controller in the sandbox from the controller tests: the sandbox
//! script, kubectl through it, and one fresh leader-elected replica of the test build.

use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use karpctl_api::v1::{NodeClaim, NodePool};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use super::{Sandbox, controller_binary, eventually, repo_root, text, unique};

/// Where `karpctl init` deploys the controller, and its Lease.
pub const NAMESPACE: &str = "kube-system";
pub const LEASE: &str = "karpenter-leader-election";

/// `sandbox/sandbox ARGS...`.
pub fn sandbox_cmd(args: &[&str]) -> Output {
    Command::new(repo_root().join("sandbox/sandbox"))
        .args(args)
        .output()
        .expect("running sandbox/sandbox")
}

/// `kubectl ARGS...` against the sandbox.
pub fn kubectl(args: &[&str]) -> Output {
    let mut all = vec!["kubectl"];
    all.extend_from_slice(args);
    sandbox_cmd(&all)
}

/// Delete the controller's Lease, so the next replica started leads at once.
pub fn forget_lease() {
    let _ = kubectl(&[
        "-n",
        NAMESPACE,
        "delete",
        "lease",
        LEASE,
        "--ignore-not-found",
    ]);
}

/// One replica of this build's controller, as the Deployment's ServiceAccount, after
/// forgetting any earlier Lease so it leads at once.
pub fn start_controller() {
    forget_lease();
    let binary = controller_binary();
    let out = sandbox_cmd(&[
        "controller",
        "start",
        "--replicas",
        "1",
        "--binary",
        binary.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "controller start: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// One test at a time drives the controller.
static CONTROLLER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the turn; on drop deletes the test's objects, waits for its claims to go (the
/// controller terminates their instances), then stops the controller and forgets the Lease.
pub struct Run {
    pub pool: String,
    pub deployments: Vec<String>,
    /// PodDisruptionBudgets (in `default`) to delete at the end.
    pub pdbs: Vec<String>,
    pub restore_registration_ttl: bool,
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
        for p in &self.pdbs {
            let _ = sandbox_cmd(&[
                "kubectl",
                "-n",
                "default",
                "delete",
                "pdb",
                p,
                "--ignore-not-found",
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
        // A failed test may have left no controller running: the claims need one.
        if !sandbox_cmd(&["controller", "status"]).status.success()
            && std::panic::catch_unwind(start_controller).is_err()
        {
            eprintln!("restarting the controller for clean-up failed");
        }
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
pub async fn start(sb: &Sandbox, pool_spec: Value, env: &[(&str, &str)]) -> (Run, String) {
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
        pdbs: Vec::new(),
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
    // Consolidation stays off unless a test turns it on: tests of provisioning and of a
    // node's end must not see their nodes consolidated under them.
    let mut spec = json!({
        "disruption": {"consolidateAfter": "Never"},
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

pub fn merge(into: &mut Value, from: Value) {
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
pub async fn deploy(
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

pub async fn pods(sb: &Sandbox, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(sb.kube().await, "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

pub async fn running(sb: &Sandbox, app: &str, want: usize) -> Vec<Pod> {
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

pub async fn claims(sb: &Sandbox, pool: &str) -> Vec<NodeClaim> {
    Api::<NodeClaim>::all(sb.kube().await)
        .list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}")))
        .await
        .unwrap()
        .items
}

pub fn condition(claim: &NodeClaim, type_: &str) -> bool {
    use karpctl_api::v1::Conditions;
    claim.status.as_ref().is_some_and(|s| s.is_true(type_))
}

pub async fn node(sb: &Sandbox, name: &str) -> Node {
    Api::<Node>::all(sb.kube().await).get(name).await.unwrap()
}

pub async fn events(sb: &Sandbox, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(sb.kube().await, "default")
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await
        .unwrap()
        .items
}

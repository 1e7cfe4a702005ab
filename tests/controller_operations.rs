//! The controller as a production process, run by `sandbox/sandbox controller` with the
//! Deployment's own env and ServiceAccount token: exactly one of two replicas holds the Lease
//! and reconciles; the standby takes over within the lease duration when the leader is killed,
//! at once when it is stopped (SIGTERM releases the Lease); probes and `/metrics` answer with
//! upstream's metric names; and the process really runs with the ServiceAccount's RBAC.
//!
//! The controller's replicas are one shared thing in the sandbox, so the tests take turns
//! (`CONTROLLER`); each starts from no replicas and no Lease and leaves the same. The
//! Deployment comes from `karpctl init` (run here when an earlier test has not).

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use support::{Sandbox, controller_binary, eventually, repo_root, sandbox, text};

const NAMESPACE: &str = "kube-system";
const LEASE: &str = "karpenter-leader-election";
/// controller-runtime's (and the controller's) lease duration and retry period.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// One test at a time drives the replicas.
static CONTROLLER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `sandbox/sandbox controller <args>`, pointed at the freshly built binary.
fn controller(args: &[&str]) -> std::process::Output {
    let mut all = vec!["controller"];
    all.extend_from_slice(args);
    let binary = controller_binary();
    let binary = binary.to_str().unwrap();
    if args.first() == Some(&"start") {
        all.extend_from_slice(&["--binary", binary]);
    }
    Command::new(repo_root().join("sandbox/sandbox"))
        .args(&all)
        .output()
        .expect("running sandbox/sandbox controller")
}

/// The replicas as `controller status -o json` reports them.
fn status() -> Vec<Value> {
    let out = controller(&["status", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status JSON: {e}: {}", text(&out.stdout)));
    doc["replicas"].as_array().cloned().unwrap_or_default()
}

/// The Deployment from `karpctl init`, applied here if no earlier test did.
async fn deployed(sb: &Sandbox) {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(sb.kube().await, NAMESPACE);
    if deployments.get_opt("karpenter").await.unwrap().is_none() {
        let out = sb.karpctl(&["init", "--cluster", sb.cluster(), "--yes"]);
        assert!(out.status.success(), "karpctl init: {}", text(&out.stderr));
    }
}

/// Holds the turn, and on drop stops the replicas and removes the Lease, pass or fail.
struct Replicas {
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        let out = controller(&["stop"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let _ = Command::new(repo_root().join("sandbox/sandbox"))
            .args(["kubectl", "-n", NAMESPACE, "delete", "lease", LEASE])
            .args(["--ignore-not-found"])
            .output();
    }
}

async fn start(sb: &Sandbox, replicas: usize) -> Replicas {
    let turn = CONTROLLER.lock().await;
    deployed(sb).await;
    let guard = Replicas { _turn: turn };
    // A Lease left by an earlier run would hold the new replicas off for its duration.
    let leases: Api<Lease> = Api::namespaced(sb.kube().await, NAMESPACE);
    let _ = leases.delete(LEASE, &DeleteParams::default()).await;
    let out = controller(&["start", "--replicas", &replicas.to_string()]);
    assert!(
        out.status.success(),
        "controller start: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    guard
}

async fn holder(sb: &Sandbox) -> Option<(String, i32)> {
    let leases: Api<Lease> = Api::namespaced(sb.kube().await, NAMESPACE);
    let spec = leases.get_opt(LEASE).await.unwrap()?.spec?;
    Some((spec.holder_identity?, spec.lease_transitions.unwrap_or(0)))
}

/// A plain HTTP GET on loopback: status, headers and body.
async fn get(port: u64, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

/// `karpenter_cluster_state_synced` as one replica reports it: 1 only where reconcilers run.
async fn synced(replica: &Value) -> Option<f64> {
    let (_, _, body) = get(replica["metrics_port"].as_u64().unwrap(), "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("karpenter_cluster_state_synced "))
        .map(|v| v.parse().unwrap())
}

fn pod_names(replicas: &[Value]) -> BTreeSet<String> {
    replicas
        .iter()
        .map(|r| r["pod_name"].as_str().unwrap().to_string())
        .collect()
}

fn signal(pid: u64, signal: &str) {
    let out = Command::new("kill")
        .args([signal, &pid.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kill {signal} {pid}: {}",
        text(&out.stderr)
    );
}

/// Waits until one replica leads (holds the Lease and reconciles) and the rest stand by;
/// returns (leader, standbys).
async fn one_leader(sb: &Sandbox) -> (Value, Vec<Value>) {
    eventually(
        "exactly one replica leading",
        Duration::from_secs(30),
        || async {
            let replicas = status();
            let (holder, _) = holder(sb).await?;
            let leaders: Vec<&Value> = replicas.iter().filter(|r| r["leader"] == true).collect();
            if leaders.len() != 1 || leaders[0]["pod_name"] != holder.as_str() {
                return None;
            }
            // Only the leader reconciles: its cluster state syncs, the standbys' never does.
            let mut standbys = Vec::new();
            for r in &replicas {
                let value = synced(r).await?;
                match (r["leader"] == true, value) {
                    (true, 1.0) => {}
                    (false, 0.0) => standbys.push(r.clone()),
                    _ => return None,
                }
            }
            Some((leaders[0].clone(), standbys))
        },
    )
    .await
}

#[tokio::test]
async fn one_of_two_replicas_leads_and_the_standby_takes_over_when_it_is_killed() {
    let sb = sandbox();
    let _replicas = start(sb, 2).await;
    let replicas = status();
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    assert_eq!(
        pod_names(&replicas),
        BTreeSet::from(["karpenter-sandbox-0".into(), "karpenter-sandbox-1".into()])
    );

    let (leader, standbys) = one_leader(sb).await;
    let (_, transitions) = holder(sb).await.unwrap();
    let standby = standbys[0]["pod_name"].as_str().unwrap().to_string();

    // SIGKILL: no release; the standby must wait the Lease out, and no longer.
    signal(leader["pid"].as_u64().unwrap(), "-KILL");
    let killed = Instant::now();
    let (new_holder, new_transitions) = eventually(
        "the standby to take the Lease",
        Duration::from_secs(30),
        || async { holder(sb).await.filter(|(h, _)| *h == standby) },
    )
    .await;
    let took = killed.elapsed();
    assert_eq!(new_holder, standby);
    assert_eq!(new_transitions, transitions + 1);
    // It waited for the lease to lapse (the last renewal was at most a retry period before
    // the kill), and took it within one lease duration plus its retry period of that.
    assert!(
        took >= LEASE_DURATION - RETRY_PERIOD,
        "took over after {took:?}, before the lease could have expired"
    );
    assert!(took <= LEASE_DURATION + RETRY_PERIOD * 3, "took {took:?}");
    // And it now reconciles.
    let survivor = status()
        .into_iter()
        .find(|r| r["pod_name"] == standby.as_str())
        .unwrap();
    eventually(
        "the new leader's cluster state to sync",
        Duration::from_secs(20),
        || {
            let survivor = survivor.clone();
            async move { (synced(&survivor).await? == 1.0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    let sb = sandbox();
    let _replicas = start(sb, 2).await;
    let (leader, standbys) = one_leader(sb).await;
    let standby = standbys[0]["pod_name"].as_str().unwrap().to_string();

    signal(leader["pid"].as_u64().unwrap(), "-TERM");
    let stopped = Instant::now();
    eventually(
        "the standby to take the released Lease",
        LEASE_DURATION,
        || async { holder(sb).await.filter(|(h, _)| *h == standby) },
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took < LEASE_DURATION / 2,
        "took {took:?}: the Lease was not released"
    );
    let log = std::fs::read_to_string(leader["log"].as_str().unwrap()).unwrap();
    let messages: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["message"].to_string())
        .collect();
    assert!(
        messages.iter().any(|m| m == "\"released lease\""),
        "{messages:?}"
    );
    let leader_pod = leader["pod_name"].as_str().unwrap();
    eventually(
        "the old leader to exit",
        Duration::from_secs(10),
        || async {
            status()
                .iter()
                .any(|r| r["pod_name"] == leader_pod && r["running"] == false)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn probes_and_metrics_answer_with_upstream_names() {
    let sb = sandbox();
    let _replicas = start(sb, 2).await;
    let (leader, standbys) = one_leader(sb).await;
    for replica in [&leader, &standbys[0]] {
        let probes = replica["health_port"].as_u64().unwrap();
        assert_eq!(get(probes, "/healthz").await.0, 200);
        let (code, _, body) = get(probes, "/readyz").await;
        assert_eq!(code, 200, "{body}");
        // The probe port does not serve metrics, nor the metrics port probes.
        assert_eq!(get(probes, "/metrics").await.0, 404);
        let metrics = replica["metrics_port"].as_u64().unwrap();
        assert_eq!(get(metrics, "/healthz").await.0, 404);

        let (code, head, body) = get(metrics, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        for (name, kind) in [
            ("karpenter_nodeclaims_created_total", "counter"),
            ("karpenter_nodeclaims_terminated_total", "counter"),
            ("karpenter_nodeclaims_disrupted_total", "counter"),
            ("karpenter_nodes_created_total", "counter"),
            ("karpenter_pods_state", "gauge"),
            (
                "karpenter_scheduler_scheduling_duration_seconds",
                "histogram",
            ),
            ("karpenter_cloudprovider_errors_total", "counter"),
            ("karpenter_cloudprovider_duration_seconds", "histogram"),
            ("karpenter_nodepools_usage", "gauge"),
            ("karpenter_nodepools_limit", "gauge"),
            ("karpenter_cluster_state_node_count", "gauge"),
            ("karpenter_cluster_state_synced", "gauge"),
        ] {
            assert!(
                body.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} missing from {}'s /metrics",
                replica["pod_name"]
            );
        }
    }
    // The leader's reconcilers fill what only they know: the cluster's nodes and the
    // default NodePool's limit from `karpctl init`.
    let port = leader["metrics_port"].as_u64().unwrap();
    eventually(
        "the leader's node count and NodePool limit",
        Duration::from_secs(20),
        || async {
            let (_, _, body) = get(port, "/metrics").await;
            let nodes: f64 = body
                .lines()
                .find_map(|l| l.strip_prefix("karpenter_cluster_state_node_count "))?
                .parse()
                .ok()?;
            let limit = body
                .contains("karpenter_nodepools_limit{nodepool=\"default\",resource_type=\"cpu\"}");
            (nodes >= 2.0 && limit).then_some(())
        },
    )
    .await;

    // Every log line is one zap-shaped JSON object.
    let log = std::fs::read_to_string(leader["log"].as_str().unwrap()).unwrap();
    for line in log.lines() {
        let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["level", "time", "logger", "message", "commit"] {
            assert!(doc.get(key).is_some(), "no {key} in {line}");
        }
        assert!(line.starts_with("{\"level\":"), "{line}");
    }
}

#[tokio::test]
async fn replicas_run_as_the_service_account_and_its_rbac_binds() {
    let sb = sandbox();
    let _replicas = start(sb, 1).await;
    let (leader, _) = one_leader(sb).await;
    assert_eq!(leader["pod_name"], "karpenter-sandbox-0");

    // The kubeconfig the runner gave the replica carries a ServiceAccount token, no cert.
    let path = PathBuf::from(sb.var("KARPCTL_SANDBOX_DIR")).join("controller/kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let user = kubeconfig.auth_infos[0].auth_info.clone().unwrap();
    assert!(user.token.is_some() && user.client_certificate.is_none());
    assert_eq!(
        kubeconfig.auth_infos[0].name,
        "system:serviceaccount:kube-system:karpenter"
    );
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    // What the controller needs is allowed...
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let lease = leases
        .get(LEASE)
        .await
        .expect("the controller reads its Lease");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("karpenter-sandbox-0")
    );
    // ...and what upstream's chart does not grant is denied: no Secrets, anywhere.
    let secrets: Api<Secret> = Api::all(client.clone());
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing secrets as the controller: {other:?}"),
    }
    let leases_elsewhere: Api<Lease> = Api::namespaced(client, "default");
    match leases_elsewhere.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing leases in default as the controller: {other:?}"),
    }
}

#[test]
fn a_bad_setting_stops_the_controller_naming_the_variable() {
    let out = Command::new(controller_binary())
        .env_clear()
        .env("CLUSTER_NAME", "sandbox")
        .env("BATCH_IDLE_DURATION", "1x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("BATCH_IDLE_DURATION") && stderr.contains("\"1x\" is not a duration"),
        "{stderr}"
    );

    let out = Command::new(controller_binary())
        .env_clear()
        .env("CLUSTER_NAME", "sandbox")
        .env("BATCH_IDLE_DURATION", "20s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON log line");
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["message"], "invalid settings");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("BATCH_IDLE_DURATION"),
        "{line}"
    );
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_and_exits() {
    let sb = sandbox();
    let _replicas = start(sb, 2).await;
    let (leader, _) = one_leader(sb).await;

    // Someone else takes the Lease (as a partitioned leader would find on its return).
    let leases: Api<Lease> = Api::namespaced(sb.kube().await, NAMESPACE);
    let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap();
    let patch = serde_json::json!({"spec": {
        "holderIdentity": "intruder", "leaseDurationSeconds": 3600, "renewTime": now,
    }});
    leases
        .patch(
            LEASE,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();

    // At its next renewal the leader sees it lost, stops reconciling and exits non-zero (the
    // Deployment would restart it as a candidate).
    let leader_pod = leader["pod_name"].as_str().unwrap().to_string();
    eventually("the old leader to exit", RETRY_PERIOD * 5, || async {
        status()
            .iter()
            .any(|r| r["pod_name"] == leader_pod.as_str() && r["running"] == false)
            .then_some(())
    })
    .await;
    let log = std::fs::read_to_string(leader["log"].as_str().unwrap()).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["message"], "controller stopped");
    assert_eq!(
        last["error"],
        "leader election lost: the lease is now held by intruder"
    );
    // The standby keeps standing by: the intruder's Lease has not expired.
    assert_eq!(holder(sb).await.unwrap().0, "intruder");
}

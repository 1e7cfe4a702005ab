//! Day two against the sandbox, in one test so one `init` serves all of it:
//!
//! 1. `karpctl render` on a fresh cluster makes no writes; after `init --yes`, every object it
//!    rendered is in the cluster with the same content, field by field (the live objects
//!    carry more — defaults, status — never different values).
//! 2. `karpctl doctor` passes every check on the healthy installation (exit 0), and with each
//!    fault planted — the queue deleted, a rule removed, a discovery tag missing, the Pod
//!    Identity association deleted, a NodePool pointing at a missing EC2NodeClass — exactly
//!    that check fails, with a fix, and the exit code is 1; `init` (or deleting the NodePool)
//!    repairs it and doctor passes again.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::controller::{kubectl, start};
use support::footprint::reset;
use support::{Sandbox, eventually, sandbox, text};

/// Every mutating AWS operation init may call (render must call none).
const WRITES: &[&str] = &[
    "CreateRole",
    "UpdateAssumeRolePolicy",
    "TagRole",
    "AttachRolePolicy",
    "CreateQueue",
    "SetQueueAttributes",
    "TagQueue",
    "PutRule",
    "PutTargets",
    "TagResource",
    "CreatePolicy",
    "CreatePolicyVersion",
    "TagPolicy",
    "CreatePodIdentityAssociation",
    "CreateOpenIDConnectProvider",
    "CreateServiceLinkedRole",
    "CreateAccessEntry",
    "CreateTags",
    "CreateAddon",
];

/// `rendered` is contained in `live`: every field it sets has the same value there.
fn contained(rendered: &Value, live: &Value, path: &str, out: &mut Vec<String>) {
    match (rendered, live) {
        (Value::Object(r), Value::Object(l)) => {
            for (k, v) in r {
                match l.get(k) {
                    Some(lv) => contained(v, lv, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: missing in the cluster")),
                }
            }
        }
        (Value::Array(r), Value::Array(l)) if r.len() == l.len() => {
            for (i, (rv, lv)) in r.iter().zip(l).enumerate() {
                contained(rv, lv, &format!("{path}[{i}]"), out);
            }
        }
        (r, l) if r == l => {}
        // JSON has one number type: a schema's `minimum: 0.0` is the server's `0`.
        (Value::Number(r), Value::Number(l)) if r.as_f64() == l.as_f64() => {}
        (r, l) => out.push(format!("{path}: rendered {r}, cluster has {l}")),
    }
}

fn render_dir(sb: &Sandbox, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let out = sb.karpctl(&[
        "render",
        "--cluster",
        sb.cluster(),
        "--out-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "render: {}", text(&out.stderr));
}

fn read_yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// doctor's exit code and the names of the checks that failed.
fn doctor(sb: &Sandbox) -> (Option<i32>, Vec<String>, Value) {
    let out = sb.karpctl(&["doctor", "--cluster", sb.cluster(), "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(doc["schema"], "karpctl.doctor/v1");
    let failed = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    (out.status.code(), failed, doc)
}

async fn healthy(sb: &Sandbox) {
    eventually(
        "doctor to pass every check",
        Duration::from_secs(120),
        || async {
            let (code, failed, _) = doctor(sb);
            (code == Some(0) && failed.is_empty()).then_some(())
        },
    )
    .await;
}

/// Plants nothing itself: asserts that exactly `check` fails, with a fix, exit code 1.
fn only_fails(sb: &Sandbox, check: &str) {
    let (code, failed, doc) = doctor(sb);
    assert_eq!(failed, [check], "{doc:#}");
    assert_eq!(code, Some(1));
    let entry = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == check)
        .unwrap();
    assert!(
        entry["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{entry}"
    );
}

fn reinit(sb: &Sandbox) {
    let out = sb.karpctl(&["init", "--cluster", sb.cluster(), "--yes"]);
    assert!(out.status.success(), "init: {}", text(&out.stderr));
}

#[tokio::test]
async fn render_matches_init_and_doctor_fails_exactly_the_planted_fault() {
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    reset(sb).await;

    // 1. render on a fresh cluster: files, and no writes anywhere.
    let dir = std::env::temp_dir().join(format!("karpctl-render-{}", std::process::id()));
    let before = sb.aws_calls().await.len();
    render_dir(sb, &dir);
    assert_eq!(sb.writes_since(before, WRITES).await, Vec::<String>::new());
    let crd = kubectl(&[
        "get",
        "crd",
        "nodepools.karpenter.sh",
        "--ignore-not-found",
        "-o",
        "name",
    ]);
    assert_eq!(text(&crd.stdout).trim(), "", "render created a CRD");
    let kustomization = read_yaml(&dir.join("cluster/kustomization.yaml"));
    let files: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert!(files.len() >= 15, "{files:?}");
    for doc in [
        format!("aws/iam-role-KarpenterNodeRole-{cluster}.trust.json"),
        format!("aws/iam-role-KarpenterControllerRole-{cluster}.trust.json"),
        format!("aws/sqs-queue-Karpenter-{cluster}.policy.json"),
    ] {
        let body: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(&doc)).unwrap()).unwrap();
        assert_eq!(body["Version"], "2012-10-17", "{doc}");
    }

    // init applies; everything render wrote is in the cluster, field by field.
    reinit(sb);
    for file in &files {
        let rendered = read_yaml(&dir.join("cluster").join(file));
        let kind = rendered["kind"].as_str().unwrap();
        let name = rendered["metadata"]["name"].as_str().unwrap();
        let mut args = vec!["get", kind, name, "-o", "json"];
        if let Some(ns) = rendered["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let got = kubectl(&args);
        assert!(got.status.success(), "{file}: {}", text(&got.stderr));
        let live: Value = serde_json::from_slice(&got.stdout).unwrap();
        let mut differences = Vec::new();
        contained(&rendered, &live, "", &mut differences);
        assert_eq!(differences, Vec::<String>::new(), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);

    // 2. doctor on the healthy installation, with the controller running.
    let (_run, _pool) = start(sb, json!({}), &[]).await;
    healthy(sb).await;
    let aws = sb.aws().await;

    // The queue deleted.
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let url = sqs
        .get_queue_url()
        .queue_name(format!("Karpenter-{cluster}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.delete_queue().queue_url(url).send().await.unwrap();
    only_fails(sb, "interruption-queue");
    reinit(sb);
    healthy(sb).await;

    // One rule removed.
    let events = aws_sdk_eventbridge::Client::new(&aws);
    let rule = format!("Karpenter-{cluster}-Rebalance");
    events
        .remove_targets()
        .rule(&rule)
        .ids("KarpenterInterruptionQueueTarget")
        .send()
        .await
        .unwrap();
    events.delete_rule().name(&rule).send().await.unwrap();
    only_fails(sb, "interruption-rules");
    reinit(sb);
    healthy(sb).await;

    // A discovery tag missing from one subnet.
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let subnet = support::footprint::discovery_targets(sb)
        .await
        .into_iter()
        .find(|id| id.starts_with("subnet-"))
        .unwrap();
    ec2.delete_tags()
        .resources(&subnet)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("karpenter.sh/discovery")
                .build(),
        )
        .send()
        .await
        .unwrap();
    only_fails(sb, "discovery-tags");
    reinit(sb);
    healthy(sb).await;

    // The Pod Identity association deleted.
    let eks = aws_sdk_eks::Client::new(&aws);
    let associations = eks
        .list_pod_identity_associations()
        .cluster_name(&cluster)
        .namespace("kube-system")
        .service_account("karpenter")
        .send()
        .await
        .unwrap();
    for a in associations.associations() {
        eks.delete_pod_identity_association()
            .cluster_name(&cluster)
            .association_id(a.association_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    only_fails(sb, "controller-identity");
    reinit(sb);
    healthy(sb).await;

    // A NodePool pointing at an EC2NodeClass that does not exist.
    let orphan = json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": "doctor-orphan"},
        "spec": {"template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "missing"},
            "requirements": []
        }}}
    });
    let path = std::env::temp_dir().join(format!("karpctl-orphan-{}.json", std::process::id()));
    std::fs::write(&path, orphan.to_string()).unwrap();
    let out = kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    only_fails(sb, "node-pools");
    let _ = kubectl(&["delete", "nodepool", "doctor-orphan", "--wait=true"]);
    let _ = std::fs::remove_file(&path);
    healthy(sb).await;
}

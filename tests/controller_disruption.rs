//! Disruption end to end in the sandbox: scaling a workload down consolidates its nodes (empty
//! ones deleted, the rest replaced by a cheaper type when one fits) while a sampler reads the
//! workload every 500 ms and the test asserts on the worst moment (its PodDisruptionBudget
//! never violated, no pod lost); a `karpenter.sh/do-not-disrupt` pod keeps its node and a
//! budget of `nodes: "0"` blocks disruption, each said in the claim's `status.disruption`;
//! changing the NodePool's labels replaces every node (drift) within the budget.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use karpctl_api::v1::{NodeClaim, NodePool};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::controller::{Run, claims, deploy, pods, running, start};
use support::{Sandbox, eventually, sandbox, unique};

fn serving(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn pdb(sb: &Sandbox, run: &mut Run, app: &str, spec: Value) {
    let mut full = json!({"selector": {"matchLabels": {"app": app}}});
    support::controller::merge(&mut full, spec);
    let b: PodDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": "default"}, "spec": full
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(sb.kube().await, "default")
        .create(&PostParams::default(), &b)
        .await
        .unwrap();
    run.pdbs.push(app.to_owned());
}

async fn scale(sb: &Sandbox, app: &str, replicas: i32) {
    Api::<Deployment>::namespaced(sb.kube().await, "default")
        .patch(
            app,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// The worst moment the sampler saw: fewest pods serving, and whether a pod that was serving
/// vanished without a replacement serving.
#[derive(Debug, Default, Clone)]
struct Seen {
    samples: usize,
    min_serving: usize,
}

fn sample(
    sb: &'static Sandbox,
    app: String,
) -> (Arc<Mutex<Seen>>, tokio::sync::oneshot::Sender<()>) {
    let seen = Arc::new(Mutex::new(Seen {
        min_serving: usize::MAX,
        ..Seen::default()
    }));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let n = pods(sb, &app).await.iter().filter(|p| serving(p)).count();
            {
                let mut s = out.lock().unwrap();
                s.samples += 1;
                s.min_serving = s.min_serving.min(n);
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    (seen, stop)
}

fn vcpus(claim: &NodeClaim) -> i64 {
    claim
        .labels()
        .get("karpenter.k8s.aws/instance-cpu")
        .and_then(|v| v.parse().ok())
        .unwrap_or(i64::MAX)
}

fn verdict(claim: &NodeClaim) -> Option<(String, String)> {
    let d = claim.status.as_ref()?.disruption.as_ref()?;
    Some((d.outcome.clone(), d.message.clone()))
}

/// Scale 10 → 2 with a PDB: the emptied nodes go and what is left is consolidated onto one
/// node no bigger than the 2 pods need (a c5.large: c5 is the only family offered), with the
/// workload served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn scaling_down_consolidates_within_the_pdb_and_no_pod_is_lost() {
    let sb = sandbox();
    let (mut run, pool) = start(
        sb,
        json!({
            "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "0s", "budgets": [{"nodes": "100%"}]},
            "template": {"spec": {"requirements": [
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["c5.large", "c5.xlarge", "c5.2xlarge", "c5.4xlarge"]}
            ]}}
        }),
        &[],
    )
    .await;
    let app = unique("shrink");
    deploy(sb, &mut run, &app, 10, "500m", json!({})).await;
    running(sb, &app, 10).await;
    pdb(sb, &mut run, &app, json!({"maxUnavailable": 1})).await;
    let before = claims(sb, &pool).await;
    let before_cpus: i64 = before.iter().map(vcpus).sum();
    scale(sb, &app, 2).await;
    running(sb, &app, 2).await;
    let (seen, stop) = sample(sb, app.clone());
    let settled = eventually(
        "the pool consolidated to one node that fits the 2 pods",
        Duration::from_secs(420),
        || async {
            let c = claims(sb, &pool).await;
            let live: Vec<NodeClaim> = c
                .into_iter()
                .filter(|c| c.metadata.deletion_timestamp.is_none())
                .collect();
            let p = pods(sb, &app).await;
            (live.len() == 1
                && vcpus(&live[0]) == 2
                && p.iter().filter(|p| serving(p)).count() == 2)
                .then_some(live)
        },
    )
    .await;
    let _ = stop.send(());
    let seen = seen.lock().unwrap().clone();
    assert!(seen.samples > 2, "{seen:?}");
    assert!(
        seen.min_serving >= 1,
        "the PDB (maxUnavailable 1 of 2) was violated: {} serving at the worst moment",
        seen.min_serving
    );
    let kept = &settled[0];
    // 2 pods × 500m + DaemonSets fit the smallest type offered; anything bigger would have
    // been replaced by it.
    assert_eq!(
        vcpus(kept),
        2,
        "the remaining node is {} vCPUs (started with {before_cpus} vCPUs on {} nodes)",
        vcpus(kept),
        before.len()
    );
    assert!(
        before_cpus >= 4,
        "10 pods of 500m needed more than one small node"
    );
    // The decisions were logged with upstream's message, and events were published.
    let log = std::fs::read_dir(std::path::Path::new(sb.var("KARPCTL_SANDBOX_DIR")).join("logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("karpctl-controller")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        log.contains("\"message\":\"disrupting node(s)\""),
        "no 'disrupting node(s)' log line"
    );
    drop(run);
}

/// A do-not-disrupt pod keeps its node, and a `nodes: "0"` budget keeps an empty node; both
/// are explained in the claim's status; opening the budget lets the empty node go.
#[tokio::test(flavor = "multi_thread")]
async fn do_not_disrupt_and_a_closed_budget_hold_nodes_and_say_why() {
    let sb = sandbox();
    let (mut run, pool) = start(
        sb,
        json!({
            "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "0s", "budgets": [{"nodes": "0"}]},
        }),
        &[],
    )
    .await;
    let keep = unique("keep");
    deploy(
        sb,
        &mut run,
        &keep,
        1,
        "500m",
        json!({"terminationGracePeriodSeconds": 1}),
    )
    .await;
    // The annotation on the pod template: every pod of it asks not to be disrupted.
    Api::<Deployment>::namespaced(sb.kube().await, "default")
        .patch(
            &keep,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}}})),
        )
        .await
        .unwrap();
    let gone = unique("gone");
    deploy(
        sb,
        &mut run,
        &gone,
        1,
        "500m",
        json!({"terminationGracePeriodSeconds": 1, "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": keep}}
        }]}}}),
    )
    .await;
    let kept_pod = running(sb, &keep, 1).await;
    running(sb, &gone, 1).await;
    // Wait until the rollout of the annotated template is the only pod.
    let keep_node = eventually(
        "the annotated pod runs",
        Duration::from_secs(120),
        || async {
            let p = pods(sb, &keep).await;
            let annotated: Vec<&Pod> = p
                .iter()
                .filter(|p| serving(p))
                .filter(|p| {
                    p.annotations()
                        .get("karpenter.sh/do-not-disrupt")
                        .map(String::as_str)
                        == Some("true")
                })
                .collect();
            (p.len() == 1 && annotated.len() == 1).then(|| {
                annotated[0]
                    .spec
                    .as_ref()
                    .unwrap()
                    .node_name
                    .clone()
                    .unwrap()
            })
        },
    )
    .await;
    let _ = kept_pod;
    let gone_node = pods(sb, &gone).await[0]
        .spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap();
    assert_ne!(keep_node, gone_node);
    scale(sb, &gone, 0).await;
    let claim_of = |node: &str, c: &[NodeClaim]| {
        c.iter()
            .find(|c| c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .cloned()
    };
    // The budget holds the empty node and says so; the do-not-disrupt pod holds its node.
    let (held_empty, held_pod) = eventually(
        "both claims carry why they are kept",
        Duration::from_secs(120),
        || async {
            let c = claims(sb, &pool).await;
            let empty = verdict(&claim_of(&gone_node, &c)?)?;
            let pod = verdict(&claim_of(&keep_node, &c)?)?;
            (empty.0 == "BudgetExhausted" && pod.0 == "DoNotDisrupt").then_some((empty, pod))
        },
    )
    .await;
    assert!(held_empty.1.contains("budget"), "{held_empty:?}");
    assert!(held_pod.1.contains(&keep), "names the pod: {held_pod:?}");
    // Open the budget: the empty node goes, the annotated pod's node stays.
    Api::<NodePool>::all(sb.kube().await)
        .patch(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"disruption": {"budgets": [{"nodes": "100%"}]}}})),
        )
        .await
        .unwrap();
    eventually(
        "the empty node's claim is deleted",
        Duration::from_secs(180),
        || async {
            let c = claims(sb, &pool).await;
            claim_of(&gone_node, &c).is_none().then_some(())
        },
    )
    .await;
    let c = claims(sb, &pool).await;
    let kept = claim_of(&keep_node, &c).expect("the do-not-disrupt pod's node is kept");
    assert!(kept.metadata.deletion_timestamp.is_none());
    let p = pods(sb, &keep).await;
    assert!(p.iter().all(serving) && p.len() == 1);
    drop(run);
}

/// Changing the NodePool's template labels drifts every node: each is replaced (the new node
/// first, then the old one drained), within the default budget, with the workload served.
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_nodepool_replaces_its_nodes_within_the_budget() {
    let sb = sandbox();
    let (mut run, pool) = start(sb, json!({}), &[]).await;
    let app = unique("drift");
    deploy(
        sb,
        &mut run,
        &app,
        2,
        "1",
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": app}}
        }]}}}),
    )
    .await;
    running(sb, &app, 2).await;
    pdb(sb, &mut run, &app, json!({"maxUnavailable": 1})).await;
    let old: BTreeSet<String> = claims(sb, &pool)
        .await
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(old.len(), 2);
    let (seen, stop) = sample(sb, app.clone());
    Api::<NodePool>::all(sb.kube().await)
        .patch(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"labels": {"rotated": "yes"}}}}}),
            ),
        )
        .await
        .unwrap();
    let most_disrupting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fresh = eventually(
        "every node replaced by one with the new label",
        Duration::from_secs(420),
        || {
            let old = old.clone();
            let most = most_disrupting.clone();
            let (pool, app) = (pool.clone(), app.clone());
            async move {
                let c = claims(sb, &pool).await;
                let deleting = c
                    .iter()
                    .filter(|c| {
                        old.contains(&c.name_any()) && c.metadata.deletion_timestamp.is_some()
                    })
                    .count();
                most.fetch_max(deleting, std::sync::atomic::Ordering::Relaxed);
                let live: Vec<NodeClaim> = c
                    .into_iter()
                    .filter(|c| c.metadata.deletion_timestamp.is_none())
                    .collect();
                let p = pods(sb, &app).await;
                (live.iter().all(|c| {
                    !old.contains(&c.name_any())
                        && c.labels().get("rotated").map(String::as_str) == Some("yes")
                }) && live.len() == 2
                    && p.iter().filter(|p| serving(p)).count() == 2)
                    .then_some(live)
            }
        },
    )
    .await;
    let _ = stop.send(());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(fresh.len(), 2);
    assert!(
        seen.min_serving >= 1,
        "the PDB was violated: {} serving",
        seen.min_serving
    );
    let most_disrupting = most_disrupting.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        most_disrupting <= 1,
        "the default budget (10% of 2 nodes, rounded up: 1) was exceeded: {most_disrupting} deleting at once"
    );
    drop(run);
}

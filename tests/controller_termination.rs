//! A node's end, end to end in the sandbox: deleting a NodeClaim drains its Node through the
//! Eviction API within the workload's PodDisruptionBudget before the instance is terminated;
//! a `karpenter.sh/do-not-disrupt` pod (and a PDB that never allows an eviction) holds the
//! node until the NodePool's `terminationGracePeriod`; `expireAfter` replaces nodes on time;
//! a spot interruption notice drains the node before EC2 reclaims it.
//!
//! Disruption is judged by what users lose: while a node drains, a sampler reads the
//! workload every 500 ms and the test asserts on the worst moment, not only the end state.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use karpctl_api::v1::{Conditions, NodeClaim};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::controller::{Run, claims, deploy, pods, running, sandbox_cmd, start};
use support::{Sandbox, eventually, sandbox, text, unique};

/// Running and not being deleted: serving.
fn serving(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

async fn pdb(sb: &Sandbox, run: &mut Run, name: &str, app: &str, spec: Value) {
    let mut full = json!({"selector": {"matchLabels": {"app": app}}});
    support::controller::merge(&mut full, spec);
    let b: PodDisruptionBudget = serde_json::from_value(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"}, "spec": full
    }))
    .unwrap();
    let api: Api<PodDisruptionBudget> = Api::namespaced(sb.kube().await, "default");
    api.create(&PostParams::default(), &b).await.unwrap();
    run.pdbs.push(name.to_owned());
}

/// Wait until the disruption controller has computed the budget.
async fn budget_allows(sb: &Sandbox, name: &str, allowed: i32) {
    let api: Api<PodDisruptionBudget> = Api::namespaced(sb.kube().await, "default");
    eventually(
        &format!("PDB {name} allowing {allowed}"),
        Duration::from_secs(60),
        || async {
            let b = api.get(name).await.ok()?;
            let s = b.status?;
            (s.disruptions_allowed == Some(allowed) && s.observed_generation.is_some())
                .then_some(())
        },
    )
    .await;
}

/// The claim whose node runs the most of `app`'s pods, with its node name.
async fn busiest_claim(sb: &Sandbox, pool: &str, app: &str) -> (NodeClaim, String, usize) {
    let by_node: BTreeMap<String, usize> =
        pods(sb, app)
            .await
            .iter()
            .fold(BTreeMap::new(), |mut m, p| {
                *m.entry(node_of(p)).or_default() += 1;
                m
            });
    claims(sb, pool)
        .await
        .into_iter()
        .filter_map(|c| {
            let node = c.status.as_ref()?.node_name.clone()?;
            let n = by_node.get(&node).copied().unwrap_or(0);
            Some((c, node, n))
        })
        .max_by_key(|(_, _, n)| *n)
        .expect("a claim with a node")
}

async fn instance_state(sb: &Sandbox, claim: &NodeClaim) -> String {
    let id = claim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(|p| p.rsplit('/').next())
        .unwrap()
        .to_owned();
    let ec2 = aws_sdk_ec2::Client::new(&sb.aws().await);
    let out = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.state()?.name().map(|n| n.as_str().to_owned()))
        .next()
        .unwrap_or_else(|| "gone".into())
}

/// What the sampler saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    samples: usize,
    min_serving: usize,
    /// Pods of the app on the drained node while its instance was already going.
    on_node_after_terminate: usize,
}

/// Reads `app`'s pods (and the victim's instance) every 500 ms until stopped.
fn sample(
    sb: &'static Sandbox,
    app: String,
    victim: Option<(NodeClaim, String)>,
) -> (Arc<Mutex<Seen>>, tokio::sync::oneshot::Sender<()>) {
    let seen = Arc::new(Mutex::new(Seen {
        min_serving: usize::MAX,
        ..Seen::default()
    }));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let p = pods(sb, &app).await;
            let n = p.iter().filter(|p| serving(p)).count();
            let mut going = false;
            if let Some((claim, _)) = &victim {
                let state = instance_state(sb, claim).await;
                going = matches!(state.as_str(), "shutting-down" | "terminated" | "gone");
            }
            {
                let mut s = out.lock().unwrap();
                s.samples += 1;
                s.min_serving = s.min_serving.min(n);
                if going && let Some((_, node)) = &victim {
                    let left = p
                        .iter()
                        .filter(|p| node_of(p) == *node && serving(p))
                        .count();
                    s.on_node_after_terminate = s.on_node_after_terminate.max(left);
                }
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    (seen, stop)
}

fn delete_claim(name: &str) {
    let out = sandbox_cmd(&["kubectl", "delete", "nodeclaim", name, "--wait=false"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

async fn claim_gone(sb: &Sandbox, name: &str, within: Duration) {
    let api: Api<NodeClaim> = Api::all(sb.kube().await);
    eventually(&format!("nodeclaim {name} gone"), within, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_nodeclaim_drains_it_within_its_pdb_before_the_instance_goes() {
    let sb = sandbox();
    let (mut run, pool) = start(sb, json!({}), &[]).await;
    let app = unique("drain");
    deploy(sb, &mut run, &app, 4, "500m", json!({})).await;
    running(sb, &app, 4).await;
    pdb(sb, &mut run, &app, &app, json!({"minAvailable": 3})).await;
    budget_allows(sb, &app, 1).await;
    let (victim, node, on_victim) = busiest_claim(sb, &pool, &app).await;
    assert!(
        on_victim >= 2,
        "the drained node runs several pods ({on_victim})"
    );
    let before: Vec<String> = pods(sb, &app)
        .await
        .iter()
        .filter(|p| node_of(p) == node)
        .map(|p| p.name_any())
        .collect();

    let (seen, stop) = sample(sb, app.clone(), Some((victim.clone(), node.clone())));
    delete_claim(&victim.name_any());
    // While it drains: the claim says so and the node is tainted.
    let api: Api<NodeClaim> = Api::all(sb.kube().await);
    eventually(
        "the claim reports its drain",
        Duration::from_secs(60),
        || async {
            let c = api.get_opt(&victim.name_any()).await.unwrap()?;
            let drained = c.status.as_ref()?.condition("Drained")?;
            Some(drained.clone())
        },
    )
    .await;
    claim_gone(sb, &victim.name_any(), Duration::from_secs(300)).await;
    let final_pods = running(sb, &app, 4).await;
    let _ = stop.send(());
    let seen = seen.lock().unwrap().clone();

    assert!(seen.samples > 5, "{seen:?}");
    assert!(
        seen.min_serving >= 3,
        "the PDB (minAvailable 3) was violated: {} serving at the worst moment",
        seen.min_serving
    );
    assert_eq!(
        seen.on_node_after_terminate, 0,
        "pods still ran on {node} once its instance was terminating"
    );
    assert!(final_pods.iter().all(|p| node_of(p) != node));
    assert!(
        before
            .iter()
            .all(|b| final_pods.iter().all(|p| p.name_any() != *b)),
        "the evicted pods were replaced"
    );
    assert_eq!(instance_state(sb, &victim).await, "terminated");
    drop(run);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_do_not_disrupt_pod_and_a_blocking_pdb_hold_the_node_until_its_grace_period() {
    let sb = sandbox();
    let (mut run, pool) = start(
        sb,
        json!({"template": {"spec": {"terminationGracePeriod": "40s"}}}),
        &[],
    )
    .await;
    let keep = unique("keep");
    deploy(
        sb,
        &mut run,
        &keep,
        1,
        "250m",
        json!({"terminationGracePeriodSeconds": 5}),
    )
    .await;
    // The annotation goes on the pod template.
    let out = sandbox_cmd(&[
        "kubectl",
        "-n",
        "default",
        "patch",
        "deployment",
        &keep,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"karpenter.sh/do-not-disrupt":"true"}}}}}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kept = eventually(
        "the annotated pod Running",
        Duration::from_secs(180),
        || async {
            let p = pods(sb, &keep).await;
            let annotated: Vec<Pod> = p
                .into_iter()
                .filter(|p| {
                    serving(p) && p.annotations().contains_key("karpenter.sh/do-not-disrupt")
                })
                .collect();
            (annotated.len() == 1).then(|| annotated[0].clone())
        },
    )
    .await;
    let node = node_of(&kept);
    // A second workload on the same node whose budget never allows an eviction.
    let blocked = unique("blocked");
    deploy(
        sb,
        &mut run,
        &blocked,
        1,
        "250m",
        json!({"terminationGracePeriodSeconds": 5, "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": keep}}, "topologyKey": "kubernetes.io/hostname"}
        ]}}}),
    )
    .await;
    running(sb, &blocked, 1).await;
    pdb(
        sb,
        &mut run,
        &blocked,
        &blocked,
        json!({"maxUnavailable": 0}),
    )
    .await;
    budget_allows(sb, &blocked, 0).await;
    let victim = claims(sb, &pool)
        .await
        .into_iter()
        .find(|c| c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
        .unwrap();

    let deleted_at = Instant::now();
    delete_claim(&victim.name_any());
    let api: Api<NodeClaim> = Api::all(sb.kube().await);
    // The claim names both holders while it waits.
    let message = eventually(
        "the claim names what holds its node",
        Duration::from_secs(30),
        || async {
            let c = api.get_opt(&victim.name_any()).await.unwrap()?;
            let d = c.status.as_ref()?.condition("Drained")?.clone();
            (d.message.contains("do-not-disrupt")
                && d.message
                    .contains(&format!("PodDisruptionBudget default/{blocked} allows 0")))
            .then_some(d.message)
        },
    )
    .await;
    assert!(message.contains("pods left are deleted at"), "{message}");
    let c = api.get(&victim.name_any()).await.unwrap();
    assert!(
        c.annotations()
            .contains_key("karpenter.sh/nodeclaim-termination-timestamp"),
        "the deadline is written on the claim"
    );
    // Held: both pods still serve on the node well into the grace period.
    tokio::time::sleep(Duration::from_secs(15)).await;
    for app in [&keep, &blocked] {
        let p = pods(sb, app).await;
        assert!(
            p.iter().any(|p| serving(p) && node_of(p) == node),
            "{app}'s pod left {node} before the grace period"
        );
    }
    claim_gone(sb, &victim.name_any(), Duration::from_secs(120)).await;
    let held = deleted_at.elapsed();
    assert!(
        held >= Duration::from_secs(30),
        "the node went after {held:?}, before its 40 s grace period minus the pods' 5 s"
    );
    running(sb, &keep, 1).await;
    running(sb, &blocked, 1).await;
    drop(run);
}

#[tokio::test(flavor = "multi_thread")]
async fn expire_after_replaces_nodes_on_time_within_the_pdb() {
    let sb = sandbox();
    let (mut run, pool) = start(
        sb,
        json!({"template": {"spec": {"expireAfter": "2m"}}}),
        &[],
    )
    .await;
    let app = unique("expire");
    deploy(sb, &mut run, &app, 2, "500m", json!({})).await;
    running(sb, &app, 2).await;
    pdb(sb, &mut run, &app, &app, json!({"minAvailable": 1})).await;
    let first: Vec<NodeClaim> = claims(sb, &pool).await;
    assert!(!first.is_empty());
    let (seen, stop) = sample(sb, app.clone(), None);
    let api: Api<NodeClaim> = Api::all(sb.kube().await);
    for c in &first {
        let created = c.metadata.creation_timestamp.clone().unwrap().0;
        let deleting = eventually(
            &format!("{} deleted at expiry", c.name_any()),
            Duration::from_secs(200),
            || async {
                match api.get_opt(&c.name_any()).await.unwrap() {
                    None => Some(None),
                    Some(now) => now.metadata.deletion_timestamp.map(|t| Some(t.0)),
                }
            },
        )
        .await;
        if let Some(at) = deleting {
            let after = at.as_second() - created.as_second();
            assert!(
                (120..=130).contains(&after),
                "{} was deleted {after}s after creation, expireAfter is 2m",
                c.name_any()
            );
        }
    }
    for c in &first {
        claim_gone(sb, &c.name_any(), Duration::from_secs(180)).await;
    }
    running(sb, &app, 2).await;
    let _ = stop.send(());
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.min_serving >= 1,
        "the PDB (minAvailable 1) was violated: {seen:?}"
    );
    drop(run);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spot_interruption_drains_the_node_before_ec2_reclaims_it_and_avoids_the_offering() {
    let sb = sandbox();
    let (mut run, pool) = start(
        sb,
        json!({"template": {"spec": {"requirements": [
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
            {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]}
        ]}}}),
        &[],
    )
    .await;
    let app = unique("spot");
    deploy(
        sb,
        &mut run,
        &app,
        20,
        "50m",
        json!({"containers": [{
            "name": "pause", "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}
        }]}),
    )
    .await;
    running(sb, &app, 20).await;
    let (victim, node, on_victim) = busiest_claim(sb, &pool, &app).await;
    let labels = victim.labels().clone();
    assert_eq!(
        labels.get("karpenter.sh/capacity-type").map(String::as_str),
        Some("spot")
    );
    let instance = victim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(|p| p.rsplit('/').next())
        .unwrap()
        .to_owned();

    let (seen, stop) = sample(sb, app.clone(), Some((victim.clone(), node.clone())));
    let noticed = k8s_openapi::jiff::Timestamp::now();
    let out = sandbox_cmd(&[
        "interrupt",
        "--instance",
        &instance,
        "--kind",
        "spot",
        "-o",
        "json",
    ]);
    assert!(
        out.status.success(),
        "interrupt: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        sent["events"][0]["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["delivered"] == true)),
        "the notice reached the queue: {sent}"
    );
    // The claim is deleted with a deadline before EC2 reclaims the instance (2 minutes).
    let api: Api<NodeClaim> = Api::all(sb.kube().await);
    let deadline = eventually(
        "the interrupted claim is being deleted",
        Duration::from_secs(60),
        || async {
            let c = api.get_opt(&victim.name_any()).await.unwrap()?;
            c.metadata.deletion_timestamp.as_ref()?;
            c.annotations()
                .get("karpenter.sh/nodeclaim-termination-timestamp")
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        },
    )
    .await;
    let ahead = deadline.as_second() - noticed.as_second();
    assert!(
        (100..=120).contains(&ahead),
        "the deadline is {ahead}s after the notice; EC2 reclaims at 120s"
    );
    claim_gone(sb, &victim.name_any(), Duration::from_secs(110)).await;
    let moved = running(sb, &app, 20).await;
    let _ = stop.send(());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.on_node_after_terminate, 0,
        "{on_victim} pods were on {node}; some still ran when its instance went"
    );
    assert!(moved.iter().all(|p| node_of(p) != node));
    // The replacement avoided the interrupted offering (type, zone, spot).
    let offering = |c: &NodeClaim| {
        (
            c.labels().get("node.kubernetes.io/instance-type").cloned(),
            c.labels().get("topology.kubernetes.io/zone").cloned(),
        )
    };
    let interrupted = offering(&victim);
    let replacements: Vec<NodeClaim> = claims(sb, &pool)
        .await
        .into_iter()
        .filter(|c| {
            c.metadata
                .creation_timestamp
                .as_ref()
                .is_some_and(|t| t.0 >= noticed)
        })
        .collect();
    assert!(
        !replacements.is_empty(),
        "capacity was launched for the evicted pods"
    );
    for r in &replacements {
        assert_ne!(
            offering(r),
            interrupted,
            "{} reused the interrupted offering",
            r.name_any()
        );
    }
    let metrics = support::controller_metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "karpenter_interruption_received_messages_total{message_type=\"spot_interrupted\"}"
        )),
        "the message is counted"
    );
    drop(run);
}

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Every replica's PID from `controller status -o json`.
fn replica_pids() -> Vec<u64> {
    let out = sandbox_cmd(&["controller", "status", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    doc["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["running"] == true)
        .filter_map(|r| r["pid"].as_u64())
        .collect()
}

fn start_replicas(n: usize) {
    let binary = support::controller_binary();
    let out = sandbox_cmd(&[
        "controller",
        "start",
        "--replicas",
        &n.to_string(),
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

fn scale(app: &str, replicas: u64) {
    let out = sandbox_cmd(&[
        "kubectl",
        "-n",
        "default",
        "scale",
        "deployment",
        app,
        &format!("--replicas={replicas}"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Instances tagged for `pool` that are not terminated: id -> the claim tag.
async fn live_instances(sb: &Sandbox, pool: &str) -> BTreeMap<String, String> {
    let ec2 = aws_sdk_ec2::Client::new(&sb.aws().await);
    let out = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:karpenter.sh/nodepool")
                .values(pool)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated") | Some("shutting-down")
            )
        })
        .map(|i| {
            let claim = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("karpenter.sh/nodeclaim"))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_owned();
            (i.instance_id().unwrap_or_default().to_owned(), claim)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_killed_at_random_moments_leaves_no_orphan_and_no_stuck_finalizer() {
    let sb = sandbox();
    let (mut run, pool) = start(sb, json!({}), &[]).await;
    start_replicas(2);
    let app = unique("chaos");
    deploy(sb, &mut run, &app, 0, "500m", json!({})).await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("chaos seed {seed}");
    let mut rng = Lcg(seed);
    let selector = format!("karpenter.sh/nodepool={pool}");
    let mut want = 0;
    for cycle in 0..20 {
        // Up, or down by deleting every node of the pool (the drain path).
        if cycle % 2 == 0 {
            want = 1 + rng.below(5);
            scale(&app, want);
        } else {
            let out = sandbox_cmd(&[
                "kubectl",
                "delete",
                "nodeclaims",
                "-l",
                &selector,
                "--wait=false",
            ]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        tokio::time::sleep(Duration::from_millis(rng.below(4000))).await;
        let pids = replica_pids();
        if !pids.is_empty() {
            let victim = pids[rng.below(pids.len() as u64) as usize];
            let _ = std::process::Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status();
            // Gone before the restart looks, or it would count the dying replica as running.
            eventually(
                "the killed replica gone",
                Duration::from_secs(10),
                || async { (!replica_pids().contains(&victim)).then_some(()) },
            )
            .await;
        }
        start_replicas(2);
        assert_eq!(replica_pids().len(), 2, "both replicas run again");
        if rng.below(3) == 0 {
            running(sb, &app, want as usize).await;
        }
    }
    // Converged: the workload at its count, every instance with its claim and back.
    running(sb, &app, want as usize).await;
    let api: Api<NodeClaim> = Api::all(sb.kube().await);
    let node_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(sb.kube().await);
    eventually(
        "no orphan, no claim without an instance, no stuck finalizer",
        Duration::from_secs(240),
        || async {
            let claims: Vec<NodeClaim> = api
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items;
            if claims
                .iter()
                .any(|c| c.metadata.deletion_timestamp.is_some())
            {
                return None;
            }
            let nodes = node_api
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items;
            if nodes
                .iter()
                .any(|n| n.metadata.deletion_timestamp.is_some())
            {
                return None;
            }
            let instances = live_instances(sb, &pool).await;
            let claimed: BTreeMap<String, String> = claims
                .iter()
                .filter_map(|c| {
                    let id = c
                        .status
                        .as_ref()?
                        .provider_id
                        .as_deref()?
                        .rsplit('/')
                        .next()?
                        .to_owned();
                    Some((id, c.name_any()))
                })
                .collect();
            let every_claim_launched = claimed.len() == claims.len();
            (every_claim_launched && claimed == instances).then_some(())
        },
    )
    .await;
    drop(run);
}

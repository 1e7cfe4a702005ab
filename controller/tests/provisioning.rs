//! Provisioning decisions as plain data: pending pods and cluster state in, claims,
//! nominations and reasons out; and the batch window under a paused clock.

mod fixtures;

use std::collections::BTreeMap;
use std::time::Duration;

use fixtures::*;
use karpctl_api::labels;
use karpctl_api::v1::NodeClaim;
use karpctl_cloud::Resources;
use karpctl_controller::provisioning::{
    batch_window, node_class_problem, plan, resources_from_list, resources_to_list,
};
use karpctl_controller::state::ClusterState;
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn state_with(pods: &[k8s_openapi::api::core::v1::Pod]) -> ClusterState {
    let mut s = ClusterState::new();
    for p in pods {
        s.apply(p.clone());
    }
    s.apply(node_class("default", true));
    s
}

/// Give planned claims the names the API server would, as `create` returns them.
fn created(claims: &[(NodeClaim, Vec<String>)]) -> Vec<(NodeClaim, Vec<String>)> {
    claims
        .iter()
        .enumerate()
        .map(|(i, (c, pods))| {
            let mut c = c.clone();
            c.metadata.name = Some(format!("{}{i}", c.metadata.generate_name.clone().unwrap()));
            (c, pods.clone())
        })
        .collect()
}

fn cheapest_price(name: &str) -> f64 {
    instance_types()
        .iter()
        .find(|t| t.name == name)
        .and_then(|t| t.cheapest_offering(|o| o.capacity_type.as_str() == "on-demand"))
        .map(|o| o.price)
        .unwrap()
}

#[test]
fn claims_from_a_plan_carry_the_template_hashes_owner_and_finalizer() {
    let pods: Vec<_> = (0..5)
        .map(|i| pending_pod(&format!("web-{i}"), "500m", "1Gi"))
        .collect();
    let state = state_with(&pods);
    let pool = node_pool("default", json!({}));
    let decided = plan(&state, &[ready_pool(pool.clone())], Instant::now());
    assert_eq!(decided.pods, 5);
    assert!(
        decided.unschedulable.is_empty(),
        "{:?}",
        decided.unschedulable
    );
    assert!(!decided.node_claims.is_empty());
    let planned: usize = decided.node_claims.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(planned, 5, "every pod is on exactly one new claim");

    for (claim, _) in &decided.node_claims {
        assert_eq!(claim.metadata.generate_name.as_deref(), Some("default-"));
        let l = claim.labels();
        assert_eq!(
            l.get(labels::NODE_POOL).map(String::as_str),
            Some("default")
        );
        assert_eq!(l.get("team").map(String::as_str), Some("web"));
        let a = claim.annotations();
        assert_eq!(a.get("note").map(String::as_str), Some("x"));
        assert_eq!(
            a.get(labels::NODE_POOL_HASH),
            Some(&karpctl_controller::nodepool::hash(&pool))
        );
        assert_eq!(
            a.get(labels::NODE_POOL_HASH_VERSION).map(String::as_str),
            Some("v3")
        );
        assert!(a.contains_key(labels::EC2_NODE_CLASS_HASH));
        assert_eq!(
            a.get(labels::EC2_NODE_CLASS_HASH_VERSION)
                .map(String::as_str),
            Some("v4")
        );
        assert_eq!(
            claim.finalizers(),
            &[labels::TERMINATION_FINALIZER.to_string()]
        );
        let owner = &claim.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("NodePool", "default")
        );
        assert_eq!(owner.uid, "uid-default");
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(claim.spec.node_class_ref.name, "default");
        assert!(claim.spec.expire_after.is_some());

        let reqs: BTreeMap<&str, (&str, &Vec<String>)> = claim
            .spec
            .requirements
            .iter()
            .map(|r| (r.key.as_str(), (r.operator.as_str(), &r.values)))
            .collect();
        assert_eq!(
            reqs[labels::NODE_POOL],
            ("In", &vec!["default".to_string()])
        );
        assert_eq!(
            reqs[labels::CAPACITY_TYPE].0,
            "In",
            "template requirement kept"
        );
        let (op, types) = reqs[labels::INSTANCE_TYPE];
        assert_eq!(op, "In");
        assert!(!types.is_empty());
        let prices: Vec<f64> = types.iter().map(|t| cheapest_price(t)).collect();
        assert!(
            prices.windows(2).all(|w| w[0] <= w[1]),
            "cheapest first: {types:?} {prices:?}"
        );
        let requests = resources_from_list(&claim.spec.resources.requests).unwrap();
        assert!(
            requests.cpu >= 500 && requests.memory >= 1 << 30,
            "{requests}"
        );
    }
}

#[test]
fn pods_placed_on_a_claim_in_flight_are_not_planned_twice() {
    let now = Instant::now();
    let first = pending_pod("first", "1", "1Gi");
    let mut state = state_with(&[first]);
    let pools = [ready_pool(node_pool("default", json!({})))];
    let decided = plan(&state, &pools, now);
    assert_eq!(decided.node_claims.len(), 1);
    for (claim, pods) in created(&decided.node_claims) {
        for p in &pods {
            state.nominate(p, &claim.name_any(), now + Duration::from_secs(20));
        }
        state.apply(claim);
    }
    // The same pod, still pending, is not planned again while nominated.
    let again = plan(&state, &pools, now);
    assert_eq!(again.pods, 0);
    assert!(again.node_claims.is_empty());

    // A small newcomer fits on the claim that is on its way: nominated there, no new claim.
    state.apply(pending_pod("small", "100m", "128Mi"));
    let third = plan(&state, &pools, now);
    assert!(third.node_claims.is_empty(), "{:?}", third.node_claims);
    assert_eq!(
        third.nominations,
        vec![("default-0".to_string(), vec!["default/small".to_string()])]
    );

    // Once the nomination expires the first pod is planned onto the in-flight claim again,
    // not onto a second new one.
    let later = now + Duration::from_secs(21);
    let fourth = plan(&state, &pools, later);
    assert!(fourth.node_claims.is_empty(), "{:?}", fourth.node_claims);
}

#[test]
fn nodepool_limits_hold_across_batches() {
    let pool = node_pool("default", json!({"limits": {"cpu": "4"}}));
    let pods: Vec<_> = (0..3)
        .map(|i| pending_pod(&format!("p{i}"), "1", "1Gi"))
        .collect();
    let mut state = state_with(&pods);
    // Control: with nothing launched yet the pool may launch.
    let decided = plan(&state, &[ready_pool(pool.clone())], Instant::now());
    assert!(!decided.node_claims.is_empty());
    assert!(decided.unschedulable.is_empty());

    // A claim from an earlier batch already holds the pool's 4 CPUs.
    state.apply(claim(json!({
        "metadata": {"name": "default-held"},
        "spec": {"requirements": [{"key": labels::INSTANCE_TYPE, "operator": "In", "values": ["m5.xlarge"]}]},
        "status": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "58"}}
    })));
    // Its capacity is spoken for by pods bound elsewhere: it must not absorb the new ones.
    state.apply(pending_pod("filler", "3500m", "1Gi"));
    let blocked = plan(&state, &[ready_pool(pool)], Instant::now());
    assert!(blocked.node_claims.is_empty(), "{:?}", blocked.node_claims);
    assert!(!blocked.unschedulable.is_empty());
    for (_, reason) in &blocked.unschedulable {
        assert!(reason.contains("limit"), "{reason}");
    }
}

#[test]
fn pods_that_fit_nothing_say_why_and_others_still_get_capacity() {
    let state = state_with(&[
        pending_pod("huge", "1000", "1Gi"),
        pending_pod("fine", "1", "1Gi"),
    ]);
    let decided = plan(
        &state,
        &[ready_pool(node_pool("default", json!({})))],
        Instant::now(),
    );
    assert_eq!(decided.unschedulable.len(), 1);
    assert_eq!(decided.unschedulable[0].0, "default/huge");
    assert!(!decided.unschedulable[0].1.is_empty());
    assert_eq!(decided.node_claims.len(), 1);
}

#[test]
fn node_selectors_and_zone_narrowing_reach_the_claim() {
    let pod = pod_with(
        "zonal",
        "1",
        "1Gi",
        json!({"nodeSelector": {"topology.kubernetes.io/zone": "us-west-2b"}}),
    );
    let state = state_with(&[pod]);
    let decided = plan(
        &state,
        &[ready_pool(node_pool("default", json!({})))],
        Instant::now(),
    );
    let (claim, _) = &decided.node_claims[0];
    let zone = claim
        .spec
        .requirements
        .iter()
        .find(|r| r.key == labels::TOPOLOGY_ZONE)
        .expect("zone requirement");
    assert_eq!(zone.values, vec!["us-west-2b".to_string()]);
}

#[test]
fn a_missing_or_unready_node_class_is_named() {
    let pool = node_pool("default", json!({}));
    let mut state = ClusterState::new();
    assert_eq!(
        node_class_problem(&pool, &state).as_deref(),
        Some("EC2NodeClass default not found")
    );
    state.apply(node_class("default", false));
    let why = node_class_problem(&pool, &state).unwrap();
    assert!(why.contains("no subnet matched"), "{why}");
    state.apply(node_class("default", true));
    assert_eq!(node_class_problem(&pool, &state), None);
}

#[test]
fn resource_quantities_round_trip_exactly() {
    let mut r = Resources::new(1500, 3 << 30);
    r.pods = 29;
    r.extended.insert("nvidia.com/gpu".into(), 1);
    let list = resources_to_list(&r);
    assert_eq!(list["cpu"].as_str(), "1500m");
    assert_eq!(list["memory"].as_str(), "3072Mi");
    assert_eq!(resources_from_list(&list).unwrap(), r);
}

#[tokio::test(start_paused = true)]
async fn batch_window_closes_after_idle() {
    let (tx, mut rx) = mpsc::channel(16);
    let started = Instant::now();
    tx.send(()).await.unwrap();
    let closed = batch_window(&mut rx, Duration::from_secs(1), Duration::from_secs(10)).await;
    assert!(closed);
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn batch_window_stays_open_while_pods_arrive_but_not_past_max() {
    let (tx, mut rx) = mpsc::channel(16);
    let started = Instant::now();
    tx.send(()).await.unwrap();
    // A new pod every 500 ms for 3 s, then silence: closes 1 s after the last one.
    let sender = tokio::spawn({
        let tx = tx.clone();
        async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tx.send(()).await.unwrap();
            }
        }
    });
    assert!(batch_window(&mut rx, Duration::from_secs(1), Duration::from_secs(10)).await);
    assert_eq!(started.elapsed(), Duration::from_secs(4));
    sender.await.unwrap();

    // Pods arriving forever: the window closes at the max.
    let started = Instant::now();
    tx.send(()).await.unwrap();
    let flood = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    assert!(batch_window(&mut rx, Duration::from_secs(1), Duration::from_secs(10)).await);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    flood.abort();
}

#[tokio::test(start_paused = true)]
async fn batch_window_reports_a_closed_channel() {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    drop(tx);
    assert!(!batch_window(&mut rx, Duration::from_secs(1), Duration::from_secs(10)).await);
}

#[test]
fn nodepool_hash_is_stable_and_ignores_requirements_and_expiry() {
    use karpctl_controller::nodepool::hash;
    let a = node_pool("default", json!({}));
    assert_eq!(hash(&a), hash(&node_pool("default", json!({}))));
    let reqs = node_pool(
        "default",
        json!({"template": {"spec": {"requirements": [], "expireAfter": "24h"}}}),
    );
    assert_eq!(hash(&a), hash(&reqs));
    let labelled = node_pool(
        "default",
        json!({"template": {"metadata": {"labels": {"team": "db"}}}}),
    );
    assert_ne!(hash(&a), hash(&labelled));
    // The recipe is fixed (FNV-1a's published test vectors): a change needs a version bump.
    assert_eq!(
        karpctl_controller::nodepool::fnv1a64(b""),
        0xcbf2_9ce4_8422_2325
    );
    assert_eq!(
        karpctl_controller::nodepool::fnv1a64(b"a"),
        0xaf63_dc4c_8601_ec8c
    );
}

#[test]
fn node_class_readiness_uses_upstreams_reasons() {
    use karpctl_controller::provisioning::node_class_readiness;
    let pool = node_pool("default", json!({}));
    let mut state = ClusterState::new();
    let (reason, message) = node_class_readiness(&pool, &state).unwrap();
    assert_eq!(reason, "NodeClassNotFound");
    assert_eq!(message, "EC2NodeClass default not found");
    // A class not Ready passes its own reason on (the fixture's is "r").
    state.apply(node_class("default", false));
    let (reason, message) = node_class_readiness(&pool, &state).unwrap();
    assert_eq!(reason, "r");
    assert!(message.contains("no subnet matched"), "{message}");
    let mut deleting = node_class("default", true);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
    state.apply(deleting);
    assert_eq!(
        node_class_readiness(&pool, &state).unwrap().0,
        "NodeClassTerminating"
    );
}

#[test]
fn a_pod_pinned_to_a_pool_whose_node_class_is_broken_is_told_so() {
    let healthy = ready_pool(node_pool("healthy", json!({})));
    let broken = node_pool(
        "broken",
        json!({"template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "missing"}}}}),
    );
    let mut state = ClusterState::new();
    state.apply(healthy.pool.clone());
    state.apply(broken);
    let mut p = pending_pod("stuck", "500m", "1Gi");
    p.spec.as_mut().unwrap().node_selector = Some(
        [("karpenter.sh/nodepool".to_string(), "broken".to_string())]
            .into_iter()
            .collect(),
    );
    state.apply(p);
    let decided = plan(&state, &[healthy], Instant::now());
    assert!(decided.node_claims.is_empty());
    assert_eq!(decided.unschedulable.len(), 1);
    let (_, why) = &decided.unschedulable[0];
    assert_eq!(
        why,
        "nodepool broken is not ready: EC2NodeClass missing not found"
    );
}

#[test]
fn a_new_leader_plans_the_pods_it_finds_pending_once_its_state_has_synced() {
    use karpctl_controller::provisioning::BatchTrigger;
    let pending = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect();
    let mut trigger = BatchTrigger::default();
    // Before the sync a batch would be refused: no trigger, and the pods are not "seen".
    assert!(!trigger.observe(false, pending(&["default/a"]), false));
    assert!(!trigger.observe(false, pending(&["default/a"]), true));
    // The sync's own change notification opens the batch at once, not the retry timer.
    assert!(trigger.observe(true, pending(&["default/a"]), false));
    assert!(
        !trigger.observe(true, pending(&["default/a"]), false),
        "not new any more"
    );
    assert!(
        trigger.observe(true, pending(&["default/a"]), true),
        "the periodic retry"
    );
    assert!(trigger.observe(true, pending(&["default/a", "default/b"]), false));
    assert!(
        !trigger.observe(true, pending(&[]), true),
        "nothing pending"
    );
}

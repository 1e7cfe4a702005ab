//! NodeClaim lifecycle decisions as plain data: which step a claim needs (launch, register,
//! initialize, liveness deletion, finalize), what registration does to a Node's taints, and
//! which claims and instances garbage collection removes — with `FakeCloud` launching.

mod fixtures;

use std::time::{Duration, SystemTime};

use fixtures::*;
use k8s_openapi::jiff::Timestamp;
use karpctl_api::labels;
use karpctl_cloud::fake::FakeCloud;
use karpctl_cloud::{CapacityType, CloudProvider, Instance, InstanceState};
use karpctl_controller::nodeclaim::{
    Step, claims_without_instance, next_step, node_initialized, orphaned_instances,
    registered_taints,
};
use karpctl_controller::provisioning::ReconcilerSettings;
use karpctl_controller::state::ClusterState;
use serde_json::json;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn settings() -> ReconcilerSettings {
    ReconcilerSettings {
        launch_ttl: Duration::from_secs(300),
        registration_ttl: Duration::from_secs(900),
        ..ReconcilerSettings::default()
    }
}

fn condition(type_: &str, status: &str, when: &str) -> serde_json::Value {
    json!({"type": type_, "status": status, "lastTransitionTime": when, "reason": type_, "message": ""})
}

fn launched_at(when: &str) -> serde_json::Value {
    json!({"status": {"providerID": "aws:///us-west-2a/i-1", "conditions": [condition("Launched", "True", when)]}})
}

#[test]
fn next_step_follows_the_lifecycle_and_liveness() {
    let created = "2026-01-01T00:00:00Z";
    let node = node("n1", "aws:///us-west-2a/i-1", json!({}), "2", "8Gi");
    let mut tainted = node.clone();
    tainted.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
        key: "example.com/agent-not-ready".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }]);
    let registered = json!({"status": {"providerID": "aws:///us-west-2a/i-1", "conditions": [
        condition("Launched", "True", created), condition("Registered", "True", created)]},
        "spec": {"startupTaints": [{"key": "example.com/agent-not-ready", "effect": "NoSchedule"}]}});
    let initialized = json!({"status": {"providerID": "aws:///us-west-2a/i-1", "conditions": [
        condition("Launched", "True", created), condition("Registered", "True", created),
        condition("Initialized", "True", created)]}});
    let cases: Vec<(
        &str,
        serde_json::Value,
        Option<&k8s_openapi::api::core::v1::Node>,
        &str,
        Step,
    )> = vec![
        (
            "new claim launches",
            json!({}),
            None,
            "2026-01-01T00:01:00Z",
            Step::Launch,
        ),
        (
            "not launched within the launch TTL",
            json!({}),
            None,
            "2026-01-01T00:05:01Z",
            Step::Delete {
                reason: "launch_timeout",
                message: "not launched within 5m".into(),
            },
        ),
        (
            "launched, waiting for its node",
            launched_at(created),
            None,
            "2026-01-01T00:14:00Z",
            Step::Wait,
        ),
        (
            "no node within the registration TTL",
            launched_at(created),
            None,
            "2026-01-01T00:15:01Z",
            Step::Delete {
                reason: "registration_timeout",
                message: "launched but no node registered within 15m".into(),
            },
        ),
        (
            "its node appeared",
            launched_at(created),
            Some(&node),
            "2026-01-01T00:20:00Z",
            Step::Register { node: "n1".into() },
        ),
        (
            "startup taint still there",
            registered.clone(),
            Some(&tainted),
            "2026-01-01T00:02:00Z",
            Step::Wait,
        ),
        (
            "node ready, startup taint gone",
            registered,
            Some(&node),
            "2026-01-01T00:02:00Z",
            Step::Initialize { node: "n1".into() },
        ),
        (
            "initialized",
            initialized,
            Some(&node),
            "2026-01-02T00:00:00Z",
            Step::Wait,
        ),
        (
            "being deleted",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:01:00Z"}}),
            None,
            "2026-01-01T00:02:00Z",
            Step::Finalize,
        ),
    ];
    for (what, patch, node, now, want) in cases {
        let c = claim(patch);
        assert_eq!(next_step(&c, node, at(now), &settings()), want, "{what}");
    }
}

#[test]
fn registration_swaps_the_unregistered_taint_for_the_claims_taints() {
    let mut n = node("n1", "aws:///z/i-1", json!({}), "2", "8Gi");
    n.spec.as_mut().unwrap().taints = Some(vec![
        k8s_openapi::api::core::v1::Taint {
            key: labels::UNREGISTERED_TAINT.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        },
        k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        },
    ]);
    let c = claim(json!({"spec": {
        "taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}],
        "startupTaints": [{"key": "agent", "effect": "NoSchedule"}]
    }}));
    let keys: Vec<String> = registered_taints(&n, &c)
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(keys, vec!["dedicated".to_string(), "agent".to_string()]);
}

#[test]
fn initialization_waits_for_requested_extended_resources() {
    let c =
        claim(json!({"spec": {"resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "1"}}}}));
    let without = node("n1", "aws:///z/i-1", json!({}), "2", "8Gi");
    assert!(!node_initialized(&c, &without));
    let mut with = without.clone();
    with.status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert(
            "nvidia.com/gpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
        );
    assert!(node_initialized(&c, &with));
    let mut not_ready = with.clone();
    not_ready
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()[0]
        .status = "False".into();
    assert!(!node_initialized(&c, &not_ready));
}

fn instance(id: &str, claim: Option<&str>, age: Duration, state: InstanceState) -> Instance {
    let mut tags = std::collections::BTreeMap::new();
    if let Some(c) = claim {
        tags.insert(labels::NODECLAIM_TAG.to_string(), c.to_string());
    }
    Instance {
        provider_id: format!("aws:///us-west-2a/{id}"),
        id: id.into(),
        instance_type: "m5.large".into(),
        zone: "us-west-2a".into(),
        capacity_type: CapacityType::OnDemand,
        image_id: "ami-1".into(),
        subnet_id: None,
        security_group_ids: Vec::new(),
        state,
        launch_time: Some(SystemTime::now() - age),
        tags,
    }
}

#[tokio::test]
async fn garbage_collection_finds_orphaned_instances_and_claims_whose_instance_is_gone() {
    let cloud = FakeCloud::new(instance_types().to_vec());
    let class = node_class("default", true);
    // A claim launched through the fake: its instance is accounted for.
    let mut launched = claim(json!({"metadata": {"name": "default-live"},
        "spec": {"requirements": [{"key": labels::INSTANCE_TYPE, "operator": "In", "values": ["m5.large"]}]}}));
    let l = cloud.create(&launched, &class).await.unwrap();
    launched.status = Some(karpctl_api::v1::NodeClaimStatus {
        provider_id: Some(l.instance.provider_id.clone()),
        ..Default::default()
    });
    let mut state = ClusterState::new();
    state.apply(launched);
    // A claim whose instance was terminated behind our back.
    state.apply(claim(json!({"metadata": {"name": "default-lost"},
        "status": {"providerID": "aws:///us-west-2a/i-gone"}})));
    // A claim not launched yet, and one being deleted: neither is garbage.
    state.apply(claim(json!({"metadata": {"name": "default-new"}})));
    state.apply(claim(
        json!({"metadata": {"name": "default-going", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"providerID": "aws:///us-west-2a/i-going"}}),
    ));

    cloud.insert(instance(
        "i-orphan",
        Some("default-deleted-long-ago"),
        Duration::from_secs(120),
        InstanceState::Running,
    ));
    cloud.insert(instance(
        "i-young",
        None,
        Duration::from_secs(5),
        InstanceState::Running,
    ));
    cloud.insert(instance(
        "i-racing",
        Some("default-new"),
        Duration::from_secs(120),
        InstanceState::Running,
    ));
    cloud.insert(instance(
        "i-dead",
        None,
        Duration::from_secs(600),
        InstanceState::Terminated,
    ));
    let instances = cloud.list().await.unwrap();

    let orphans: Vec<&str> = orphaned_instances(
        &instances,
        &state,
        SystemTime::now(),
        Duration::from_secs(30),
    )
    .iter()
    .map(|i| i.id.as_str())
    .collect();
    assert_eq!(orphans, vec!["i-orphan"]);
    assert_eq!(
        claims_without_instance(&instances, &state),
        vec!["default-lost".to_string()]
    );
}

#[tokio::test]
async fn a_launch_whose_status_was_never_written_is_adopted_not_repeated() {
    let cloud = FakeCloud::new(instance_types().to_vec());
    let class = node_class("default", true);
    let unrecorded = claim(json!({"metadata": {"name": "default-crashed"},
        "spec": {"requirements": [{"key": labels::INSTANCE_TYPE, "operator": "In", "values": ["m5.large"]}]}}));
    let first = cloud.create(&unrecorded, &class).await.unwrap();
    // The process died here: the claim in the cluster still records nothing, so the next
    // pass (of a restarted controller) launches it again.
    let mut state = ClusterState::new();
    state.apply(unrecorded.clone());
    assert_eq!(
        next_step(&unrecorded, None, at("2026-01-01T00:01:00Z"), &settings()),
        Step::Launch
    );
    let again = cloud.create(&unrecorded, &class).await.unwrap();
    assert_eq!(again.instance.provider_id, first.instance.provider_id);
    assert_eq!(cloud.created(), vec!["default-crashed".to_string()]);
    // Meanwhile garbage collection leaves the instance to its claim, however old it is.
    let instances = cloud.list().await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert!(orphaned_instances(&instances, &state, later, Duration::from_secs(30)).is_empty());
}

#[test]
fn a_second_instance_tagged_for_a_claim_that_recorded_another_is_garbage() {
    let mut state = ClusterState::new();
    state.apply(claim(json!({"metadata": {"name": "default-twice"},
        "status": {"providerID": "aws:///us-west-2a/i-kept"}})));
    let instances = vec![
        instance(
            "i-kept",
            Some("default-twice"),
            Duration::from_secs(600),
            InstanceState::Running,
        ),
        instance(
            "i-duplicate",
            Some("default-twice"),
            Duration::from_secs(600),
            InstanceState::Running,
        ),
        instance(
            "i-duplicate-young",
            Some("default-twice"),
            Duration::from_secs(5),
            InstanceState::Running,
        ),
    ];
    let orphans: Vec<&str> = orphaned_instances(
        &instances,
        &state,
        SystemTime::now(),
        Duration::from_secs(30),
    )
    .iter()
    .map(|i| i.id.as_str())
    .collect();
    assert_eq!(orphans, vec!["i-duplicate"]);
}

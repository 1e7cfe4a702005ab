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
use k8s_openapi::api::core::v1::{Event, Pod};
use karpctl_api::v1::NodePool;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::controller::{
    claims, condition, deploy, events, node, pods, running, sandbox_cmd, start,
};
use support::{eventually, sandbox, text, unique};

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

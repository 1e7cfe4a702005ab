//! Bad input end to end: a NodePool pointing at a missing EC2NodeClass, selector terms that
//! match no subnet, an AMI alias that resolves to nothing and a role that cannot be passed.
//! Each broken object's status conditions and an Event say exactly what is wrong, the pods
//! pinned to a broken pool are told why they wait, nothing is launched for them — and the
//! controller keeps serving the healthy NodePool next to them.
//!
//! "A role that cannot be passed": moto does not enforce iam:PassRole, so the sandbox's fault
//! injection answers IAM `AddRoleToInstanceProfile` with `AccessDenied` (the error EKS
//! accounts give when the controller may not pass the node role), after the healthy class
//! has its instance profile; the broken class names an existing role, so the denial is the
//! only thing wrong with it.
//!
//! Also checks `karpenter_pods_state` on the controller's `/metrics`: the healthy pod's
//! series carries its node's NodePool and phase Running, a waiting pod's is Pending.
//!
//! Owns its objects (unique names) and removes them, the injected fault and the controller
//! in a guard, pass or fail.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use karpctl_api::v1::{Conditions, EC2NodeClass, NodeClaim, NodePool};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::controller::{NAMESPACE, forget_lease, kubectl, sandbox_cmd, start_controller};
use support::{Sandbox, controller_metrics, eventually, pod_state_series, sandbox, text, unique};

/// Removes every object the test made (workloads, pools, then node classes, which the
/// controller finalizes), waits for the healthy pool's claims to go, clears injected faults,
/// stops the controller and forgets its Lease.
#[derive(Default)]
struct Guard {
    deployments: Vec<String>,
    pools: Vec<String>,
    classes: Vec<String>,
    fault_injected: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for d in &self.deployments {
            let _ = kubectl(&[
                "-n",
                "default",
                "delete",
                "deployment",
                d,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        let mut failures = Vec::new();
        for p in &self.pools {
            let _ = kubectl(&[
                "delete",
                "nodepool",
                p,
                "--ignore-not-found",
                "--wait=false",
            ]);
            let selector = format!("karpenter.sh/nodepool={p}");
            let out = kubectl(&["delete", "nodeclaims", "-l", &selector, "--timeout=180s"]);
            if !out.status.success() {
                failures.push(format!("nodeclaims of {p}: {}", text(&out.stderr)));
            }
        }
        for c in &self.classes {
            let out = kubectl(&[
                "delete",
                "ec2nodeclass",
                c,
                "--ignore-not-found",
                "--timeout=90s",
            ]);
            if !out.status.success() {
                failures.push(format!("ec2nodeclass {c}: {}", text(&out.stderr)));
            }
        }
        if self.fault_injected {
            clear_faults();
        }
        let _ = sandbox_cmd(&["controller", "stop"]);
        forget_lease();
        if !std::thread::panicking() {
            assert!(failures.is_empty(), "cleaning up: {failures:?}");
        }
    }
}

/// `DELETE /_sandbox/faults`, from a drop (no runtime there to borrow).
fn clear_faults() {
    let cleared = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(sandbox().clear_faults())
    })
    .join();
    if cleared.is_err() {
        eprintln!("clearing the injected faults failed");
    }
}

async fn create_pool(sb: &Sandbox, guard: &mut Guard, name: &str, class: &str) {
    let np: NodePool = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"disruption": {"consolidateAfter": "Never"}, "template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": class},
            "requirements": [
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m"]}
            ]
        }}}
    }))
    .unwrap();
    guard.pools.push(name.to_string());
    Api::<NodePool>::all(sb.kube().await)
        .create(&PostParams::default(), &np)
        .await
        .unwrap();
}

/// A copy of the `default` EC2NodeClass with `change` merged into its spec.
async fn create_class(sb: &Sandbox, guard: &mut Guard, name: &str, change: Value) {
    let default = Api::<EC2NodeClass>::all(sb.kube().await)
        .get("default")
        .await
        .unwrap();
    let mut spec = serde_json::to_value(&default.spec).unwrap();
    for (k, v) in change.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let class: EC2NodeClass = serde_json::from_value(json!({
        "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    guard.classes.push(name.to_string());
    Api::<EC2NodeClass>::all(sb.kube().await)
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
}

/// One pause pod pinned to `pool`.
async fn deploy(sb: &Sandbox, guard: &mut Guard, pool: &str) -> String {
    let name = format!("{pool}-app");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "nodeSelector": {"karpenter.sh/nodepool": pool},
                "containers": [{
                    "name": "pause", "image": "public.ecr.aws/eks-distro/kubernetes/pause:3.7",
                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}
                }]
            }}
        }
    }))
    .unwrap();
    guard.deployments.push(name.clone());
    Api::<Deployment>::namespaced(sb.kube().await, "default")
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    name
}

async fn pod_of(sb: &Sandbox, app: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(sb.kube().await, "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
}

/// Events about one object, in any namespace.
async fn events_about(sb: &Sandbox, name: &str) -> Vec<Event> {
    Api::<Event>::all(sb.kube().await)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .unwrap()
        .items
}

fn from_karpenter(e: &Event) -> bool {
    e.reporting_component.as_deref() == Some("karpenter")
        || e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("karpenter")
}

/// (status, reason, message) of one condition.
fn condition_of<C: Conditions>(
    conditions: Option<&C>,
    type_: &str,
) -> Option<(String, String, String)> {
    let c = conditions?.condition(type_)?;
    Some((
        format!("{:?}", c.status),
        c.reason.clone(),
        c.message.clone(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_object_says_what_is_wrong_and_the_healthy_pool_still_launches() {
    let sb = sandbox();
    let client = sb.kube().await;
    if Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get_opt("karpenter")
        .await
        .unwrap()
        .is_none()
    {
        let out = sb.karpctl(&["init", "--cluster", sb.cluster(), "--yes"]);
        assert!(out.status.success(), "karpctl init: {}", text(&out.stderr));
    }
    let mut guard = Guard::default();
    start_controller();
    let classes: Api<EC2NodeClass> = Api::all(client.clone());
    // The healthy class has its instance profile before IAM starts refusing.
    eventually(
        "EC2NodeClass default Ready",
        Duration::from_secs(60),
        || async {
            let c = classes.get("default").await.ok()?;
            c.status.as_ref()?.is_true("Ready").then_some(())
        },
    )
    .await;

    let id = unique("bad");
    let healthy = format!("{id}-ok");
    let missing = format!("{id}-missing");
    let no_subnet = format!("{id}-subnets");
    let no_ami = format!("{id}-ami");
    let no_pass = format!("{id}-role");

    guard.fault_injected = true;
    let default_role = classes
        .get("default")
        .await
        .unwrap()
        .spec
        .role
        .clone()
        .expect("the default class names a role");
    sb.inject_fault_with_message(
        "iam",
        "AddRoleToInstanceProfile",
        "AccessDenied",
        403,
        1000,
        &format!(
            "User: arn:aws:sts::123456789012:assumed-role/KarpenterControllerRole/karpenter is not authorized to perform: iam:PassRole on resource: arn:aws:iam::123456789012:role/{default_role}"
        ),
    )
    .await;

    create_class(
        sb,
        &mut guard,
        &no_subnet,
        json!({"subnetSelectorTerms": [{"tags": {"e2e/no-such-subnet": id}}]}),
    )
    .await;
    create_class(
        sb,
        &mut guard,
        &no_ami,
        json!({"amiSelectorTerms": [{"alias": "al2023@v20000101"}]}),
    )
    .await;
    create_class(sb, &mut guard, &no_pass, json!({})).await;
    create_pool(sb, &mut guard, &healthy, "default").await;
    create_pool(sb, &mut guard, &missing, &format!("{id}-nowhere")).await;
    create_pool(sb, &mut guard, &no_subnet, &no_subnet).await;
    create_pool(sb, &mut guard, &no_ami, &no_ami).await;
    create_pool(sb, &mut guard, &no_pass, &no_pass).await;
    let healthy_app = deploy(sb, &mut guard, &healthy).await;
    let mut broken_apps = BTreeMap::new();
    for pool in [&missing, &no_subnet, &no_ami, &no_pass] {
        broken_apps.insert(pool.clone(), deploy(sb, &mut guard, pool).await);
    }

    // The healthy pool is served while the others are broken.
    let running = eventually(
        "the healthy pool's pod Running",
        Duration::from_secs(180),
        || async {
            let p = pod_of(sb, &healthy_app).await?;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
        },
    )
    .await;

    // Each broken class: Ready False with upstream's reason and a message naming the problem,
    // the failing part's own condition, and a Warning Event saying the same.
    let expected_classes = [
        (
            &no_subnet,
            "SubnetsReady",
            "SubnetsNotFound",
            "e2e/no-such-subnet",
        ),
        (&no_ami, "AMIsReady", "AMINotFound", "al2023@v20000101"),
        (
            &no_pass,
            "InstanceProfileReady",
            "InstanceProfileNotReady",
            "iam:PassRole",
        ),
    ];
    for (name, part, reason, names) in expected_classes {
        let class = eventually(
            &format!("EC2NodeClass {name} Ready=False ({reason})"),
            Duration::from_secs(90),
            || async {
                let c = classes.get(name).await.ok()?;
                let status = c.status.clone()?;
                let ready = status.condition("Ready")?;
                (format!("{:?}", ready.status) == "False" && ready.reason == reason).then_some(c)
            },
        )
        .await;
        let status = class.status.as_ref().unwrap();
        let ready = condition_of(Some(status), "Ready").unwrap();
        assert!(
            ready.2.contains(part) && ready.2.contains(names),
            "{name} Ready message names {part} and {names}: {}",
            ready.2
        );
        let own = condition_of(Some(status), part).unwrap();
        assert_eq!(
            (own.0.as_str(), own.1.as_str()),
            ("False", reason),
            "{name} {part}"
        );
        assert!(own.2.contains(names), "{name} {part}: {}", own.2);
        let told = eventually(
            &format!("a Warning Event on EC2NodeClass {name}"),
            Duration::from_secs(30),
            || async {
                events_about(sb, name).await.into_iter().find(|e| {
                    e.involved_object.kind.as_deref() == Some("EC2NodeClass")
                        && e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some(reason)
                        && from_karpenter(e)
                })
            },
        )
        .await;
        assert!(
            told.message.as_deref().unwrap_or_default().contains(names),
            "{:?}",
            told.message
        );
    }

    // Each broken pool: NodeClassReady and Ready False naming its class's problem, a Warning
    // Event, a pending pod told why by karpenter, and no claim.
    let pools: Api<NodePool> = Api::all(client.clone());
    let expected_pools = [
        (
            &missing,
            "NodeClassNotFound",
            format!("{id}-nowhere not found"),
        ),
        (
            &no_subnet,
            "SubnetsNotFound",
            "e2e/no-such-subnet".to_string(),
        ),
        (&no_ami, "AMINotFound", "al2023@v20000101".to_string()),
        (
            &no_pass,
            "InstanceProfileNotReady",
            "iam:PassRole".to_string(),
        ),
    ];
    for (name, reason, names) in &expected_pools {
        let pool = eventually(
            &format!("NodePool {name} NodeClassReady=False ({reason})"),
            Duration::from_secs(60),
            || async {
                let p = pools.get(name).await.ok()?;
                let c = p.status.as_ref()?.condition("NodeClassReady")?;
                (format!("{:?}", c.status) == "False" && c.reason == *reason).then_some(p)
            },
        )
        .await;
        let status = pool.status.as_ref().unwrap();
        let class_ready = condition_of(Some(status), "NodeClassReady").unwrap();
        assert!(
            class_ready.2.contains(names.as_str()),
            "{name}: {}",
            class_ready.2
        );
        let ready = condition_of(Some(status), "Ready").unwrap();
        assert_eq!(
            (ready.0.as_str(), ready.1.as_str()),
            ("False", *reason),
            "{name} Ready"
        );
        let pool_event = eventually(
            &format!("a Warning Event on NodePool {name}"),
            Duration::from_secs(30),
            // The class may pass through another not-ready reason first (not resolved
            // yet), and each transition is its own Event: wait for the one naming the cause.
            || async {
                events_about(sb, name).await.into_iter().find(|e| {
                    e.involved_object.kind.as_deref() == Some("NodePool")
                        && e.reason.as_deref() == Some("NodeClassNotReady")
                        && e.message
                            .as_deref()
                            .unwrap_or_default()
                            .contains(names.as_str())
                })
            },
        )
        .await;
        assert_eq!(
            pool_event.type_.as_deref(),
            Some("Warning"),
            "{:?}",
            pool_event.message
        );
        let app = &broken_apps[*name];
        let (pod, message) = eventually(
            &format!("the pod pinned to {name} told why it waits"),
            Duration::from_secs(90),
            || async {
                let p = pod_of(sb, app).await?;
                let e = events_about(sb, &p.name_any())
                    .await
                    .into_iter()
                    .find(|e| {
                        e.reason.as_deref() == Some("FailedScheduling") && from_karpenter(e)
                    })?;
                Some((p, e.message.unwrap_or_default()))
            },
        )
        .await;
        assert!(
            message.contains(&format!("nodepool {name} is not ready"))
                && message.contains(names.as_str()),
            "{}: {message}",
            pod.name_any()
        );
        assert!(
            pod.spec.as_ref().unwrap().node_name.is_none(),
            "{} is pending",
            pod.name_any()
        );
        let claims = Api::<NodeClaim>::all(client.clone())
            .list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={name}")))
            .await
            .unwrap();
        assert!(claims.items.is_empty(), "nothing launched for {name}");
    }

    // karpenter_pods_state: the running pod with its node's facts, a waiting one Pending.
    let node = running.spec.as_ref().unwrap().node_name.clone().unwrap();
    let series = eventually(
        "karpenter_pods_state for the healthy pod",
        Duration::from_secs(30),
        || async {
            let m = controller_metrics().await;
            pod_state_series(&m, "default", &running.name_any())
                .filter(|s| s.get("phase").map(String::as_str) == Some("Running"))
        },
    )
    .await;
    assert_eq!(series["node"], node);
    assert_eq!(series["nodepool"], healthy);
    assert!(series["owner"].starts_with("/apis/apps/v1/namespaces/default/replicasets/"));
    for key in ["zone", "arch", "capacity_type", "instance_type"] {
        assert!(!series[key].is_empty(), "{key} empty: {series:?}");
    }
    let waiting = pod_of(sb, &broken_apps[&no_subnet]).await.unwrap();
    let m = controller_metrics().await;
    let pending = pod_state_series(&m, "default", &waiting.name_any())
        .unwrap_or_else(|| panic!("no karpenter_pods_state for {}", waiting.name_any()));
    assert_eq!(pending["phase"], "Pending");
    assert_eq!(pending["node"], "");
    drop(guard);
}

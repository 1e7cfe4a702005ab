//! What karpctl leaves in the sandbox's account and cluster, shared by the init, uninstall
//! and fault tests: a clean slate made directly through the SDKs (`reset`), everything a
//! completed init leaves (`assert_converged`), nothing of karpctl's left
//! (`assert_nothing_left`), and what uninstall must give back untouched (`kube_snapshot`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, ResourceExt,
};
use serde_json::{Value, json};

use super::Sandbox;

pub const ACCOUNT: &str = "123456789012";
pub const NODE_ROLE: &str = "KarpenterNodeRole-sandbox";
pub const CONTROLLER_ROLE: &str = "KarpenterControllerRole-sandbox";
pub const QUEUE: &str = "Karpenter-sandbox";
pub const CRDS: &[&str] = &[
    "nodepools.karpenter.sh",
    "nodeclaims.karpenter.sh",
    "ec2nodeclasses.karpenter.k8s.aws",
];
/// The sandbox's Cluster Autoscaler (kube-system, 1 replica) and its key in karpctl-state.
pub const CA: &str = "cluster-autoscaler";
pub const STATE_CONFIG_MAP: &str = "karpctl-state";
pub const CA_STATE_KEY: &str = "cluster-autoscaler.kube-system.cluster-autoscaler";
pub const RULES: &[&str] = &[
    "ScheduledChange",
    "SpotInterruption",
    "Rebalance",
    "InstanceStateChange",
    "CapacityReservationInterruption",
];
pub const POLICIES: &[&str] = &[
    "NodeLifecycle",
    "IAMIntegration",
    "EKSIntegration",
    "Interruption",
    "ResourceDiscovery",
];

pub fn decode(doc: &str) -> Value {
    serde_json::from_str(doc).unwrap_or_else(|_| {
        // IAM returns documents URL-encoded.
        let mut out = Vec::new();
        let b = doc.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&doc[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        serde_json::from_slice(&out).unwrap()
    })
}

/// Removes whatever an earlier run left, so the first plan sees a fresh account.
pub async fn reset(sb: &Sandbox) {
    reset_kube(sb).await;
    let aws = sb.aws().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    let account = "123456789012";
    for role in [NODE_ROLE, CONTROLLER_ROLE] {
        if let Ok(out) = iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
        {
            for p in out.attached_policies() {
                iam.detach_role_policy()
                    .role_name(role)
                    .policy_arn(p.policy_arn().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            // Instance profiles a controller test's EC2NodeClass left around the node role.
            let profiles = iam
                .list_instance_profiles_for_role()
                .role_name(role)
                .send()
                .await
                .unwrap();
            for p in profiles.instance_profiles() {
                iam.remove_role_from_instance_profile()
                    .instance_profile_name(p.instance_profile_name())
                    .role_name(role)
                    .send()
                    .await
                    .unwrap();
                iam.delete_instance_profile()
                    .instance_profile_name(p.instance_profile_name())
                    .send()
                    .await
                    .unwrap();
            }
            iam.delete_role().role_name(role).send().await.unwrap();
        }
    }
    for part in POLICIES {
        let arn = format!("arn:aws:iam::{account}:policy/KarpenterController{part}Policy-sandbox");
        if let Ok(out) = iam.list_policy_versions().policy_arn(&arn).send().await {
            for v in out.versions().iter().filter(|v| !v.is_default_version()) {
                iam.delete_policy_version()
                    .policy_arn(&arn)
                    .version_id(v.version_id().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
            iam.delete_policy().policy_arn(&arn).send().await.unwrap();
        }
    }
    for provider in iam
        .list_open_id_connect_providers()
        .send()
        .await
        .unwrap()
        .open_id_connect_provider_list()
    {
        let arn = provider.arn().unwrap();
        if arn.contains(":oidc-provider/oidc.eks.") {
            iam.delete_open_id_connect_provider()
                .open_id_connect_provider_arn(arn)
                .send()
                .await
                .unwrap();
        }
    }
    let sqs = aws_sdk_sqs::Client::new(&aws);
    if let Ok(out) = sqs.get_queue_url().queue_name(QUEUE).send().await {
        sqs.delete_queue()
            .queue_url(out.queue_url().unwrap())
            .send()
            .await
            .unwrap();
    }
    let events = aws_sdk_eventbridge::Client::new(&aws);
    for suffix in RULES {
        let rule = format!("Karpenter-sandbox-{suffix}");
        if events.describe_rule().name(&rule).send().await.is_ok() {
            let targets = events
                .list_targets_by_rule()
                .rule(&rule)
                .send()
                .await
                .unwrap();
            let ids: Vec<String> = targets
                .targets()
                .iter()
                .map(|t| t.id().to_string())
                .collect();
            if !ids.is_empty() {
                events
                    .remove_targets()
                    .rule(&rule)
                    .set_ids(Some(ids))
                    .send()
                    .await
                    .unwrap();
            }
            events.delete_rule().name(&rule).send().await.unwrap();
        }
    }
    let eks = aws_sdk_eks::Client::new(&aws);
    let assocs = eks
        .list_pod_identity_associations()
        .cluster_name(sb.cluster())
        .send()
        .await
        .unwrap();
    for a in assocs.associations() {
        eks.delete_pod_identity_association()
            .cluster_name(sb.cluster())
            .association_id(a.association_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    let _ = eks
        .delete_access_entry()
        .cluster_name(sb.cluster())
        .principal_arn(format!("arn:aws:iam::{account}:role/{NODE_ROLE}"))
        .send()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    for t in karpctl_tagged(&ec2).await {
        ec2.delete_tags()
            .resources(t.resource_id().unwrap())
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("karpenter.sh/discovery")
                    .build(),
            )
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("karpctl.sh/discovery-tag")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
}

/// The Kubernetes side: the Cluster Autoscaler back at its recorded replicas, karpctl-state
/// and the CRDs gone (waited for: a CRD lingers while its finalizer runs).
pub async fn reset_kube(sb: &Sandbox) {
    let client = sb.kube().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    if let Some(cm) = cms.get_opt(STATE_CONFIG_MAP).await.unwrap() {
        if let Some(recorded) = cm.data.unwrap_or_default().get(CA_STATE_KEY) {
            let recorded: Value = serde_json::from_str(recorded).unwrap();
            deployments
                .patch(
                    CA,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": recorded["replicas"]}})),
                )
                .await
                .unwrap();
        }
        cms.delete(STATE_CONFIG_MAP, &DeleteParams::default())
            .await
            .unwrap();
    }
    // The controller's objects from earlier runs (the NodePools go with their CRDs).
    sb.run(&[
        "kubectl",
        "delete",
        "deployment,serviceaccount,service,poddisruptionbudget,role,rolebinding,clusterrole,clusterrolebinding",
        "--all-namespaces",
        "-l",
        "app.kubernetes.io/managed-by=karpctl",
        "--wait=true",
    ]);
    // Objects a controller left finalizers on (an earlier controller test's EC2NodeClass):
    // no controller runs now to release them, and the CRDs could not go while they stay.
    for (group, kind, plural) in [
        ("karpenter.sh", "NodeClaim", "nodeclaims"),
        ("karpenter.sh", "NodePool", "nodepools"),
        ("karpenter.k8s.aws", "EC2NodeClass", "ec2nodeclasses"),
    ] {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        if let Ok(list) = api.list(&Default::default()).await {
            for o in list {
                let _ = api
                    .patch(
                        &o.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                    )
                    .await;
            }
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in CRDS {
        let _ = crds.delete(name, &DeleteParams::default()).await;
        super::eventually(
            &format!("CRD {name} to be deleted"),
            Duration::from_secs(60),
            || {
                let crds = crds.clone();
                async move { crds.get_opt(name).await.unwrap().is_none().then_some(()) }
            },
        )
        .await;
    }
}

/// The cluster's node-group subnets and cluster security group.
pub async fn discovery_targets(sb: &Sandbox) -> Vec<String> {
    let eks = aws_sdk_eks::Client::new(&sb.aws().await);
    let cluster = eks
        .describe_cluster()
        .name(sb.cluster())
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    let ng = eks
        .describe_nodegroup()
        .cluster_name(sb.cluster())
        .nodegroup_name("system")
        .send()
        .await
        .unwrap()
        .nodegroup
        .unwrap();
    let mut ids = ng.subnets().to_vec();
    ids.push(
        cluster
            .resources_vpc_config()
            .unwrap()
            .cluster_security_group_id()
            .unwrap()
            .to_string(),
    );
    ids
}

/// Everything a completed init leaves, asserted through the SDK.
pub async fn assert_converged(sb: &Sandbox) {
    assert_kube_converged(sb).await;
    let aws = sb.aws().await;
    let account = "123456789012";
    let managed = |tags: BTreeMap<String, String>| {
        assert_eq!(
            tags.get("karpctl.sh/managed-by").map(String::as_str),
            Some("karpctl"),
            "{tags:?}"
        );
        assert_eq!(
            tags.get("karpctl.sh/cluster").map(String::as_str),
            Some("sandbox"),
            "{tags:?}"
        );
    };

    let iam = aws_sdk_iam::Client::new(&aws);
    let role = iam
        .get_role()
        .role_name(NODE_ROLE)
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    let trust = decode(role.assume_role_policy_document().unwrap());
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com"
    );
    let attached: BTreeSet<String> = attached_policies(&iam, NODE_ROLE).await;
    assert_eq!(
        attached,
        BTreeSet::from(
            [
                "AmazonEKSWorkerNodePolicy",
                "AmazonEKS_CNI_Policy",
                "AmazonEC2ContainerRegistryPullOnly",
                "AmazonSSMManagedInstanceCore"
            ]
            .map(String::from)
        )
    );
    managed(
        iam.list_role_tags()
            .role_name(NODE_ROLE)
            .send()
            .await
            .unwrap()
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect(),
    );

    // Controller policies: each under IAM's limit, all attached to the controller role.
    let controller_attached: BTreeSet<String> = attached_policies(&iam, CONTROLLER_ROLE).await;
    for part in POLICIES {
        let name = format!("KarpenterController{part}Policy-sandbox");
        let arn = format!("arn:aws:iam::{account}:policy/{name}");
        let policy = iam
            .get_policy()
            .policy_arn(&arn)
            .send()
            .await
            .unwrap()
            .policy
            .unwrap();
        let doc = iam
            .get_policy_version()
            .policy_arn(&arn)
            .version_id(policy.default_version_id().unwrap())
            .send()
            .await
            .unwrap()
            .policy_version
            .unwrap()
            .document
            .unwrap();
        let doc = decode(&doc).to_string();
        let size = doc.chars().filter(|c| !c.is_whitespace()).count();
        assert!(size < 6144, "{name} is {size} characters");
        assert!(controller_attached.contains(&name), "{name} not attached");
    }
    let controller = iam
        .get_role()
        .role_name(CONTROLLER_ROLE)
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    let trust = decode(controller.assume_role_policy_document().unwrap());
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "pods.eks.amazonaws.com"
    );
    assert_eq!(
        trust["Statement"][0]["Action"],
        serde_json::json!(["sts:AssumeRole", "sts:TagSession"])
    );

    // The interruption queue and its five rules.
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let url = sqs
        .get_queue_url()
        .queue_name(QUEUE)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let attr = |k: &str| {
        attrs
            .get(&aws_sdk_sqs::types::QueueAttributeName::from(k))
            .cloned()
    };
    assert_eq!(attr("MessageRetentionPeriod").as_deref(), Some("300"));
    assert_eq!(attr("SqsManagedSseEnabled").as_deref(), Some("true"));
    let policy: Value = serde_json::from_str(&attr("Policy").unwrap()).unwrap();
    assert_eq!(
        policy["Statement"][0]["Principal"]["Service"],
        serde_json::json!(["events.amazonaws.com", "sqs.amazonaws.com"])
    );
    assert_eq!(
        policy["Statement"][1]["Condition"]["Bool"]["aws:SecureTransport"],
        "false"
    );
    let queue_arn = attr("QueueArn").unwrap();
    let events = aws_sdk_eventbridge::Client::new(&aws);
    for suffix in RULES {
        let name = format!("Karpenter-sandbox-{suffix}");
        let rule = events.describe_rule().name(&name).send().await.unwrap();
        let pattern: Value = serde_json::from_str(rule.event_pattern().unwrap()).unwrap();
        assert!(pattern["detail-type"].is_array(), "{name}: {pattern}");
        let targets = events
            .list_targets_by_rule()
            .rule(&name)
            .send()
            .await
            .unwrap();
        assert!(
            targets.targets().iter().any(|t| t.arn() == queue_arn),
            "{name} does not target the queue"
        );
    }

    // Pod Identity and node access.
    let eks = aws_sdk_eks::Client::new(&aws);
    let assocs = eks
        .list_pod_identity_associations()
        .cluster_name(sb.cluster())
        .namespace("kube-system")
        .service_account("karpenter")
        .send()
        .await
        .unwrap();
    assert_eq!(assocs.associations().len(), 1);
    let assoc = eks
        .describe_pod_identity_association()
        .cluster_name(sb.cluster())
        .association_id(assocs.associations()[0].association_id().unwrap())
        .send()
        .await
        .unwrap()
        .association
        .unwrap();
    assert_eq!(assoc.role_arn(), Some(controller.arn()));
    eks.describe_addon()
        .cluster_name(sb.cluster())
        .addon_name("eks-pod-identity-agent")
        .send()
        .await
        .expect("the Pod Identity agent add-on");
    let entry = eks
        .describe_access_entry()
        .cluster_name(sb.cluster())
        .principal_arn(role.arn())
        .send()
        .await
        .unwrap()
        .access_entry
        .unwrap();
    assert_eq!(entry.r#type(), Some("EC2_LINUX"));

    // Discovery tags on the node group's subnets and the cluster security group.
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    for id in discovery_targets(sb).await {
        let tags = ec2
            .describe_tags()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("resource-id")
                    .values(&id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert!(
            tags.tags()
                .iter()
                .any(|t| t.key() == Some("karpenter.sh/discovery") && t.value() == Some("sandbox")),
            "{id} lacks the discovery tag"
        );
    }
}

/// The CRDs are installed, karpctl's and Established; the Cluster Autoscaler is at 0 and its
/// earlier replica count (1) is recorded.
pub async fn assert_kube_converged(sb: &Sandbox) {
    let client = sb.kube().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRDS {
        let crd = crds.get(name).await.unwrap();
        assert_eq!(
            crd.metadata.labels.unwrap_or_default()["app.kubernetes.io/managed-by"],
            "karpctl",
            "{name}"
        );
        assert!(
            crd.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("karpctl.sh/spec-hash"),
            "{name}"
        );
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} is not Established: {conditions:?}"
        );
    }
    let ca = Api::<Deployment>::namespaced(client.clone(), "kube-system")
        .get(CA)
        .await
        .unwrap();
    assert_eq!(ca.spec.replicas, Some(0));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get(STATE_CONFIG_MAP)
        .await
        .unwrap();
    assert_eq!(
        cm.metadata.labels.unwrap_or_default()["app.kubernetes.io/managed-by"],
        "karpctl"
    );
    let data = cm.data.unwrap_or_default();
    let recorded: Value = serde_json::from_str(&data[CA_STATE_KEY]).unwrap();
    assert_eq!(
        recorded,
        json!({"namespace": "kube-system", "name": CA, "replicas": 1})
    );
    let settings: Value = serde_json::from_str(&data["init"]).unwrap();
    assert_eq!(settings["namespace"], "kube-system");
    assert_eq!(settings["nodePools"][0]["name"], "default");

    // The controller: rolled out with the labels users select it by, running as its own
    // service account, with a PDB and a metrics Service.
    let karpenter = Api::<Deployment>::namespaced(client.clone(), "kube-system")
        .get("karpenter")
        .await
        .unwrap();
    let status = karpenter.status.unwrap_or_default();
    assert_eq!(status.available_replicas, Some(2), "{status:?}");
    let template = karpenter.spec.template;
    let labels = template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "karpenter");
    assert_eq!(labels["app.kubernetes.io/name"], "karpenter");
    assert_eq!(
        template.spec.unwrap().service_account_name.as_deref(),
        Some("karpenter")
    );
    let pods = sb.run(&[
        "kubectl",
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "app.kubernetes.io/instance=karpenter",
        "-o",
        "jsonpath={range .items[*]}{.status.phase} {.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let running: Vec<&str> = pods.lines().filter(|l| l.starts_with("Running ")).collect();
    assert_eq!(running.len(), 2, "{pods}");
    assert_ne!(running[0], running[1], "hostname anti-affinity: {pods}");
    for what in [
        "poddisruptionbudget/karpenter",
        "service/karpenter",
        "serviceaccount/karpenter",
        "role/karpenter",
    ] {
        sb.run(&["kubectl", "get", "-n", "kube-system", what]);
    }
    for what in ["clusterrole/karpenter-core", "clusterrole/karpenter"] {
        sb.run(&["kubectl", "get", what]);
    }
    // The default NodePool and EC2NodeClass, valid against the served CRDs.
    let pool = sb.run(&["kubectl", "get", "nodepool", "default", "-o", "json"]);
    let pool: Value = serde_json::from_str(&pool).unwrap();
    assert_eq!(
        pool["spec"]["template"]["spec"]["nodeClassRef"]["name"],
        "default"
    );
    assert_eq!(pool["spec"]["limits"]["cpu"], "1000");
    let class = sb.run(&["kubectl", "get", "ec2nodeclass", "default", "-o", "json"]);
    let class: Value = serde_json::from_str(&class).unwrap();
    assert_eq!(class["spec"]["role"], NODE_ROLE);
    assert_eq!(
        class["spec"]["amiSelectorTerms"][0]["alias"],
        "al2023@latest"
    );
}

/// What uninstall must give back untouched: aws-auth's data and the CA's replicas.
pub async fn kube_snapshot(sb: &Sandbox) -> (Option<String>, i32) {
    let client = sb.kube().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let aws_auth = cms
        .get_opt("aws-auth")
        .await
        .unwrap()
        .map(|cm| serde_json::to_string(&cm.data).unwrap());
    let deployments: Api<Deployment> = Api::namespaced(client, "kube-system");
    let replicas = deployments
        .get("cluster-autoscaler")
        .await
        .unwrap()
        .spec
        .replicas
        .unwrap_or(1);
    (aws_auth, replicas)
}

/// Nothing of karpctl's is left, checked through the SDKs and kube directly.
pub async fn assert_nothing_left(sb: &Sandbox) {
    let aws = sb.aws().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    for role in [NODE_ROLE, CONTROLLER_ROLE] {
        assert!(
            iam.get_role().role_name(role).send().await.is_err(),
            "role {role} still exists"
        );
    }
    for part in POLICIES {
        let arn = format!("arn:aws:iam::{ACCOUNT}:policy/KarpenterController{part}Policy-sandbox");
        assert!(
            iam.get_policy().policy_arn(&arn).send().await.is_err(),
            "policy {arn} still exists"
        );
    }
    let sqs = aws_sdk_sqs::Client::new(&aws);
    assert!(
        sqs.get_queue_url().queue_name(QUEUE).send().await.is_err(),
        "queue still exists"
    );
    let events = aws_sdk_eventbridge::Client::new(&aws);
    for suffix in RULES {
        let rule = format!("Karpenter-sandbox-{suffix}");
        assert!(
            events.describe_rule().name(&rule).send().await.is_err(),
            "rule {rule} still exists"
        );
    }
    let eks = aws_sdk_eks::Client::new(&aws);
    // In any namespace: a controller may have been installed outside kube-system.
    let assocs = eks
        .list_pod_identity_associations()
        .cluster_name(sb.cluster())
        .send()
        .await
        .unwrap();
    assert!(assocs.associations().is_empty(), "{assocs:?}");
    assert!(
        eks.describe_access_entry()
            .cluster_name(sb.cluster())
            .principal_arn(format!("arn:aws:iam::{ACCOUNT}:role/{NODE_ROLE}"))
            .send()
            .await
            .is_err(),
        "the node role's access entry still exists"
    );
    let marked = karpctl_tagged(&aws_sdk_ec2::Client::new(&aws)).await;
    assert!(marked.is_empty(), "{marked:?}");
    let client = sb.kube().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRDS {
        assert!(
            crds.get_opt(name).await.unwrap().is_none(),
            "CRD {name} still exists"
        );
    }
    let cms: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    assert!(cms.get_opt("karpctl-state").await.unwrap().is_none());
    // The controller's objects (everything labelled as karpctl's) are gone too.
    let left = sb.run(&[
        "kubectl",
        "get",
        "deployment,serviceaccount,service,poddisruptionbudget,role,rolebinding,clusterrole,clusterrolebinding",
        "--all-namespaces",
        "-l",
        "app.kubernetes.io/managed-by=karpctl",
        "-o",
        "name",
    ]);
    assert_eq!(left.trim(), "", "left behind: {left}");
}

/// The names of the managed policies attached to `role`.
pub async fn attached_policies(iam: &aws_sdk_iam::Client, role: &str) -> BTreeSet<String> {
    let out = iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .unwrap();
    out.attached_policies()
        .iter()
        .map(|p| p.policy_name().unwrap().to_string())
        .collect()
}

/// The resources carrying karpctl's marker of a discovery tag it added.
pub async fn karpctl_tagged(ec2: &aws_sdk_ec2::Client) -> Vec<aws_sdk_ec2::types::TagDescription> {
    ec2.describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("key")
                .values("karpctl.sh/discovery-tag")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default()
}

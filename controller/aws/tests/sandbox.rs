//! The AWS CloudProvider against the sandbox (moto behind the sandbox's gap fills, a real
//! kube-apiserver, and the registrar that turns launched instances into Nodes from their
//! user data). Every test names its node class and claims uniquely and terminates what it
//! launched, so tests share one sandbox.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use karpctl_api::labels;
use karpctl_api::v1::{EC2NodeClass, NodeClaim};
use karpctl_aws::{AwsCloud, AwsSettings};
use karpctl_cloud::{CapacityType, CloudError, CloudProvider, Launched};
use kube::Api;
use serde_json::json;
use support::{Sandbox, eventually, sandbox, unique};

async fn cloud(sb: &Sandbox) -> AwsCloud {
    let settings = AwsSettings {
        cluster_name: sb.cluster().to_owned(),
        ..AwsSettings::default()
    };
    AwsCloud::new(&sb.aws().await, settings)
        .await
        .expect("the provider reads the sandbox cluster")
}

/// The system node group's role: aws-auth already maps it to system:nodes.
fn system_role(sb: &Sandbox) -> String {
    format!("eksctl-{}-nodegroup-system-NodeInstanceRole", sb.cluster())
}

fn node_class(sb: &Sandbox, name: &str, alias: &str) -> EC2NodeClass {
    serde_json::from_value(json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": name},
        "spec": {
            "subnetSelectorTerms": [{"tags": {"kubernetes.io/role/internal-elb": "1"}}],
            "securityGroupSelectorTerms": [{"tags": {"aws:eks:cluster-name": sb.cluster()}}],
            "amiSelectorTerms": [{"alias": alias}],
            "role": system_role(sb),
            "tags": {"team": "karpctl-tests"},
        }
    }))
    .unwrap()
}

fn claim(name: &str, pool: &str, node_class: &str, types: &[&str], zones: &[&str]) -> NodeClaim {
    let mut requirements = vec![
        json!({"key": labels::ARCH, "operator": "In", "values": ["amd64"]}),
        json!({"key": labels::INSTANCE_TYPE, "operator": "In", "values": types}),
        json!({"key": labels::CAPACITY_TYPE, "operator": "In", "values": ["on-demand"]}),
    ];
    if !zones.is_empty() {
        requirements.push(json!({"key": labels::TOPOLOGY_ZONE, "operator": "In", "values": zones}));
    }
    serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": name, "labels": {labels::NODE_POOL: pool, "team": "storage"}},
        "spec": {
            "requirements": requirements,
            "taints": [{"key": "dedicated", "value": "storage", "effect": "NoSchedule"}],
            "startupTaints": [{"key": "example.com/agent-not-ready", "effect": "NoSchedule"}],
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class},
        }
    }))
    .unwrap()
}

async fn resolved(cloud: &AwsCloud, mut nc: EC2NodeClass) -> EC2NodeClass {
    let status = cloud
        .reconcile_node_class(&nc)
        .await
        .expect("the node class resolves");
    nc.status = Some(status);
    nc
}

async fn node_for(sb: &Sandbox, launched: &Launched) -> Node {
    let nodes: Api<Node> = Api::all(sb.kube().await);
    let provider_id = launched.instance.provider_id.clone();
    eventually(
        "the registrar to register the launched instance as a Node",
        Duration::from_secs(60),
        || {
            let nodes = nodes.clone();
            let provider_id = provider_id.clone();
            async move {
                nodes
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|n| {
                        n.spec.as_ref().and_then(|s| s.provider_id.as_deref())
                            == Some(provider_id.as_str())
                    })
            }
        },
    )
    .await
}

fn taints_of(node: &Node) -> BTreeSet<(String, Option<String>, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value, t.effect))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_becomes_a_node_with_its_labels_taints_and_allocatable_then_terminates() {
    let sb = sandbox();
    let cloud = cloud(sb).await;
    let nc_name = unique("nc");
    let nc = resolved(&cloud, node_class(sb, &nc_name, "al2023@latest")).await;
    let status = nc.status.clone().unwrap();
    let zones: BTreeSet<&str> = status.subnets.iter().map(|s| s.zone.as_str()).collect();
    assert_eq!(
        zones,
        BTreeSet::from(["us-west-2a", "us-west-2b", "us-west-2c"])
    );
    assert_eq!(status.security_groups.len(), 1, "{status:?}");
    let archs: BTreeSet<&str> = status
        .amis
        .iter()
        .flat_map(|a| {
            a.requirements
                .iter()
                .flat_map(|r| r.values.iter().map(String::as_str))
        })
        .collect();
    assert_eq!(archs, BTreeSet::from(["amd64", "arm64"]));
    assert!(
        status
            .amis
            .iter()
            .all(|a| a.name.as_deref().is_some_and(|n| n.contains("al2023"))),
        "{:?}",
        status.amis
    );
    let profile = status.instance_profile.clone().unwrap();
    assert!(profile.starts_with("sandbox_"), "{profile}");

    let pool = unique("pool");
    let claim_name = unique("claim");
    let claim = claim(&claim_name, &pool, &nc_name, &["m5.large", "c5.large"], &[]);
    let launched = cloud.create(&claim, &nc).await.expect("the claim launches");
    // c5.large is the cheaper of the two in every zone.
    assert_eq!(launched.instance.instance_type, "c5.large");
    assert_eq!(launched.instance.capacity_type, CapacityType::OnDemand);
    assert_eq!(launched.instance.node_claim(), Some(claim_name.as_str()));
    assert_eq!(launched.labels[labels::INSTANCE_TYPE], "c5.large");
    assert_eq!(launched.labels[labels::CAPACITY_TYPE], "on-demand");
    assert_eq!(launched.labels[labels::INSTANCE_FAMILY], "c5");
    assert_eq!(launched.allocatable.cpu, 1930);
    assert_eq!(launched.allocatable.pods, 29);
    let tags = &launched.instance.tags;
    assert_eq!(tags[&labels::cluster_owned_tag(sb.cluster())], "owned");
    assert_eq!(tags[labels::EKS_CLUSTER_NAME_TAG], sb.cluster());
    assert_eq!(tags[labels::NODE_POOL], pool);
    assert_eq!(tags[labels::EC2_NODE_CLASS], nc_name);
    assert_eq!(tags["Name"], format!("{pool}/{claim_name}"));
    assert_eq!(tags["team"], "karpctl-tests");

    let image = status
        .amis
        .iter()
        .find(|a| a.id == launched.instance.image_id)
        .unwrap();
    assert!(
        image.name.as_deref().unwrap().contains("x86_64-standard"),
        "{image:?}"
    );

    // A retried create finds the instance instead of launching another.
    let again = cloud.create(&claim, &nc).await.unwrap();
    assert_eq!(again.instance.id, launched.instance.id);
    let listed = cloud.list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .filter(|i| i.node_claim() == Some(claim_name.as_str()))
            .count(),
        1
    );
    // Only what this controller launched: the managed node group's instances carry the
    // cluster tag but no NodePool.
    assert!(
        listed
            .iter()
            .all(|i| i.tags.contains_key(labels::NODE_POOL)),
        "{listed:?}"
    );
    assert_eq!(
        cloud.get(&launched.instance.provider_id).await.unwrap().id,
        launched.instance.id
    );

    // The registrar made the Node from the user data alone.
    let node = node_for(sb, &launched).await;
    let node_labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(node_labels[labels::NODE_POOL], pool);
    assert_eq!(node_labels["team"], "storage");
    assert_eq!(node_labels[labels::CAPACITY_TYPE], "on-demand");
    assert_eq!(node_labels[labels::ARCH], "amd64");
    assert_eq!(node_labels[labels::INSTANCE_TYPE], "c5.large");
    // Kubernetes' own condition taints (`node.kubernetes.io/not-ready` until kwok reports the
    // node Ready) come and go with the node lifecycle controller: not the user data's.
    let mut taints = taints_of(&node);
    taints.retain(|(key, _, _)| !key.starts_with("node.kubernetes.io/"));
    let want: BTreeSet<(String, Option<String>, String)> = [
        ("dedicated", Some("storage"), "NoSchedule"),
        ("example.com/agent-not-ready", None, "NoSchedule"),
        (labels::UNREGISTERED_TAINT, None, "NoExecute"),
    ]
    .into_iter()
    .map(|(k, v, e)| (k.to_owned(), v.map(str::to_owned), e.to_owned()))
    .collect();
    assert_eq!(taints, want);
    let allocatable = node.status.and_then(|s| s.allocatable).unwrap_or_default();
    assert_eq!(allocatable["pods"].0, "29");
    assert_eq!(allocatable["cpu"].0, "1930m");

    // Not drifted while the node class selects the same things.
    assert!(
        cloud
            .is_drifted(&with_provider_id(&claim, &launched), &nc)
            .await
            .unwrap()
            .is_none()
    );
    // Drifted once the node class selects another AMI or other security groups.
    let mut moved = nc.clone();
    moved.status.as_mut().unwrap().amis.retain(|a| {
        a.requirements
            .iter()
            .all(|r| !r.values.contains(&"amd64".to_owned()))
    });
    let drift = cloud
        .is_drifted(&with_provider_id(&claim, &launched), &moved)
        .await
        .unwrap()
        .expect("drifted once its AMI is no longer selected");
    assert!(drift.0.starts_with("AMIDrift"), "{drift:?}");
    let mut moved = nc.clone();
    moved.status.as_mut().unwrap().security_groups[0].id = "sg-0000000000".to_owned();
    let drift = cloud
        .is_drifted(&with_provider_id(&claim, &launched), &moved)
        .await
        .unwrap()
        .expect("drifted once its security groups are no longer selected");
    assert!(drift.0.starts_with("SecurityGroupDrift"), "{drift:?}");

    cloud.delete(&launched.instance.provider_id).await.unwrap();
    assert!(matches!(
        cloud.get(&launched.instance.provider_id).await,
        Err(CloudError::NodeClaimNotFound(_))
    ));
    assert!(matches!(
        cloud.delete(&launched.instance.provider_id).await,
        Err(CloudError::NodeClaimNotFound(_))
    ));

    cloud.finalize_node_class(&nc).await.unwrap();
    let iam = aws_sdk_iam::Client::new(&sb.aws().await);
    let gone = iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await;
    assert!(gone.is_err(), "instance profile {profile} still exists");
    let ec2 = aws_sdk_ec2::Client::new(&sb.aws().await);
    let templates = ec2
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", labels::EC2_NODE_CLASS))
                .values(&nc_name)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(templates.launch_templates().is_empty(), "{templates:?}");
}

fn with_provider_id(claim: &NodeClaim, launched: &Launched) -> NodeClaim {
    let mut claim = claim.clone();
    claim.status = Some(karpctl_api::v1::NodeClaimStatus {
        provider_id: Some(launched.instance.provider_id.clone()),
        ..Default::default()
    });
    claim
}

#[tokio::test(flavor = "multi_thread")]
async fn insufficient_capacity_marks_the_offering_and_launches_the_next() {
    let sb = sandbox();
    let cloud = cloud(sb).await;
    let nc_name = unique("nc-ice");
    let nc = resolved(&cloud, node_class(sb, &nc_name, "al2023@latest")).await;
    let zone = "us-west-2a";
    // m5a.large is the cheaper; EC2 has none of it in the zone.
    sb.inject_fault(
        json!({"service": "ec2", "operation": "CreateFleet", "code": "InsufficientInstanceCapacity",
        "offerings": [{"instance_type": "m5a.large", "zone": zone}], "count": 1}),
    )
    .await;
    let pool = unique("pool");
    let first = claim(
        &unique("claim"),
        &pool,
        &nc_name,
        &["m5a.large", "m6i.large"],
        &[zone],
    );
    let launched = cloud
        .create(&first, &nc)
        .await
        .expect("the next offering launches");
    assert_eq!(launched.instance.instance_type, "m6i.large");
    assert_eq!(launched.instance.zone, zone);

    let pool_obj = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": pool},
        "spec": {"template": {"spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": nc_name}}}}
    }))
    .unwrap();
    let types = cloud.instance_types(&pool_obj, &nc).await.unwrap();
    let m5a = types.iter().find(|t| t.name == "m5a.large").unwrap();
    for o in &m5a.offerings {
        let refused = o.zone == zone && o.capacity_type == CapacityType::OnDemand;
        assert_eq!(o.available, !refused, "{o:?}");
    }

    // Each capacity fault above is used up by exactly one CreateFleet, so none outlives this
    // test. Nothing left: the claim fails with insufficient capacity naming the offering.
    sb.inject_fault(
        json!({"service": "ec2", "operation": "CreateFleet", "code": "InsufficientInstanceCapacity",
        "offerings": [{"instance_type": "m6i.large", "zone": zone}], "count": 1}),
    )
    .await;
    let second = claim(
        &unique("claim"),
        &pool,
        &nc_name,
        &["m5a.large", "m6i.large"],
        &[zone],
    );
    match cloud.create(&second, &nc).await {
        Err(CloudError::InsufficientCapacity { offerings, .. }) => {
            assert!(
                offerings
                    .iter()
                    .any(|o| o.instance_type == "m6i.large" && o.zone == zone),
                "{offerings:?}"
            );
        }
        other => panic!("expected insufficient capacity, got {other:?}"),
    }
    cloud.delete(&launched.instance.provider_id).await.unwrap();
    cloud.finalize_node_class(&nc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn instance_types_are_offered_in_the_subnets_zones_at_pricing_api_prices() {
    let sb = sandbox();
    let cloud = cloud(sb).await;
    let nc = resolved(&cloud, node_class(sb, &unique("nc-types"), "al2023@latest")).await;
    let pool = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p"},
        "spec": {"template": {"spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "x"}}}}
    }))
    .unwrap();
    let types = cloud.instance_types(&pool, &nc).await.unwrap();
    assert!(types.len() > 500, "{}", types.len());
    let zones: BTreeSet<&str> = types
        .iter()
        .flat_map(|t| t.offerings.iter().map(|o| o.zone.as_str()))
        .collect();
    assert_eq!(
        zones,
        BTreeSet::from(["us-west-2a", "us-west-2b", "us-west-2c"])
    );
    let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
    assert_eq!(m5.label(labels::ARCH), Some("amd64"));
    assert_eq!(m5.label(labels::INSTANCE_CPU), Some("2"));
    assert_eq!(m5.label(labels::INSTANCE_MEMORY), Some("8192"));
    assert_eq!(m5.label(labels::INSTANCE_CATEGORY), Some("m"));
    assert_eq!(m5.allocatable.pods, 29);
    let od = m5
        .offerings
        .iter()
        .find(|o| o.capacity_type == CapacityType::OnDemand)
        .unwrap();
    assert!((od.price - 0.096).abs() < 1e-9, "{od:?}");
    let calls = sb.aws_calls().await;
    assert!(
        calls.iter().any(|c| c["service"] == "pricing"
            && c["operation"] == "GetProducts"
            && c["status"] == 200),
        "the Pricing API was not read"
    );
    cloud.finalize_node_class(&nc).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_term_that_matches_nothing_is_named() {
    let sb = sandbox();
    let cloud = cloud(sb).await;
    let mut nc = node_class(sb, &unique("nc-bad"), "al2023@latest");
    nc.spec.subnet_selector_terms[0].tags = [(
        "karpenter.sh/discovery".to_owned(),
        "no-such-cluster".to_owned(),
    )]
    .into();
    // Every part is resolved on its own: the one that matched nothing is False and named,
    // the others are True with their values, and nothing is carried over.
    let status = cloud
        .reconcile_node_class(&nc)
        .await
        .expect("a status, with the failing part named");
    let subnets = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SubnetsReady")
        .expect("a SubnetsReady condition");
    assert_eq!(subnets.status, karpctl_api::v1::ConditionStatus::False);
    assert_eq!(subnets.reason, "SubnetsNotFound");
    assert!(
        subnets.message.contains("subnetSelectorTerms[0]")
            && subnets.message.contains("no-such-cluster"),
        "{}",
        subnets.message
    );
    assert!(status.subnets.is_empty(), "no stale subnets");
    for part in ["SecurityGroupsReady", "AMIsReady", "InstanceProfileReady"] {
        let c = status.conditions.iter().find(|c| c.type_ == part).unwrap();
        assert_eq!(
            c.status,
            karpctl_api::v1::ConditionStatus::True,
            "{part}: {}",
            c.message
        );
    }
    assert!(!status.security_groups.is_empty() && !status.amis.is_empty());
    cloud.finalize_node_class(&nc).await.unwrap();
}

/// A node class whose role is wrong is not Ready, and the working role stays in its instance
/// profile (nodes already running keep their permissions); once the role is right again the
/// class is Ready with nothing carried over from the failure.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_role_keeps_the_working_one_and_a_corrected_class_is_ready_again() {
    let sb = sandbox();
    let cloud = cloud(sb).await;
    let name = unique("nc-role");
    let good = node_class(sb, &name, "al2023@latest");
    let first = cloud.reconcile_node_class(&good).await.unwrap();
    let profile = first.instance_profile.clone().expect("an instance profile");
    let good_role = good.spec.role.clone().unwrap();
    let mut wrong = good.clone();
    wrong.spec.role = Some("KarpenterNodeRole-does-not-exist".into());
    let broken = cloud.reconcile_node_class(&wrong).await.unwrap();
    let part = broken
        .conditions
        .iter()
        .find(|c| c.type_ == "InstanceProfileReady")
        .unwrap();
    assert_eq!(
        part.status,
        karpctl_api::v1::ConditionStatus::False,
        "{part:?}"
    );
    assert!(
        part.message.contains("KarpenterNodeRole-does-not-exist"),
        "{}",
        part.message
    );
    assert_eq!(broken.instance_profile, None);
    let iam = aws_sdk_iam::Client::new(&sb.aws().await);
    let roles: Vec<String> = iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await
        .unwrap()
        .instance_profile()
        .map(|p| p.roles().iter().map(|r| r.role_name().to_owned()).collect())
        .unwrap_or_default();
    assert_eq!(
        roles,
        vec![good_role.rsplit('/').next().unwrap().to_owned()],
        "the working role stays"
    );
    let healed = cloud.reconcile_node_class(&good).await.unwrap();
    assert!(
        healed
            .conditions
            .iter()
            .all(|c| c.status == karpctl_api::v1::ConditionStatus::True),
        "{:?}",
        healed.conditions
    );
    assert_eq!(healed.instance_profile.as_deref(), Some(profile.as_str()));
    cloud.finalize_node_class(&good).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_ami_family_boots_a_spot_node_with_its_labels_taints_and_max_pods() {
    let sb = sandbox();
    let cloud = cloud(sb).await;
    for alias in ["al2@latest", "bottlerocket@latest", "al2023@latest"] {
        let nc_name = unique("nc-family");
        let mut nc = node_class(sb, &nc_name, alias);
        nc.spec.kubelet = Some(karpctl_api::v1::KubeletConfiguration {
            max_pods: Some(20),
            ..Default::default()
        });
        let nc = resolved(&cloud, nc).await;
        let pool = unique("pool");
        let mut claim = claim(
            &unique("claim"),
            &pool,
            &nc_name,
            &["t3.large"],
            &["us-west-2b"],
        );
        claim
            .spec
            .requirements
            .retain(|r| r.key != labels::CAPACITY_TYPE);
        let launched = cloud.create(&claim, &nc).await.expect("the claim launches");
        assert_eq!(
            launched.instance.capacity_type,
            CapacityType::Spot,
            "{alias}"
        );
        assert_eq!(launched.allocatable.pods, 20, "{alias}");
        let node = node_for(sb, &launched).await;
        let node_labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(node_labels[labels::NODE_POOL], pool, "{alias}");
        assert_eq!(node_labels["team"], "storage", "{alias}");
        assert_eq!(node_labels[labels::CAPACITY_TYPE], "spot", "{alias}");
        let pods = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .map(|a| a["pods"].0.clone());
        assert_eq!(pods.as_deref(), Some("20"), "{alias}");
        let taints = taints_of(&node);
        assert!(
            taints.contains(&(
                labels::UNREGISTERED_TAINT.to_owned(),
                None,
                "NoExecute".to_owned()
            )),
            "{alias}: {taints:?}"
        );
        assert!(
            taints.contains(&(
                "dedicated".to_owned(),
                Some("storage".to_owned()),
                "NoSchedule".to_owned()
            )),
            "{alias}: {taints:?}"
        );
        let image = node
            .status
            .and_then(|s| s.node_info)
            .map(|i| i.os_image)
            .unwrap_or_default();
        let want = match alias {
            "al2@latest" => "Amazon Linux 2",
            "bottlerocket@latest" => "Bottlerocket OS 1.52.0 (aws-k8s-1.37)",
            _ => "Amazon Linux 2023.9.20261110",
        };
        assert_eq!(image, want, "{alias}");
        cloud.delete(&launched.instance.provider_id).await.unwrap();
        cloud.finalize_node_class(&nc).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gpu_instance_types_boot_the_nvidia_variant_of_the_alias() {
    let sb = sandbox();
    let cloud = cloud(sb).await;
    let nc_name = unique("nc-gpu");
    let nc = resolved(&cloud, node_class(sb, &nc_name, "al2023@latest")).await;
    let pool = unique("pool");
    let claim = claim(&unique("claim"), &pool, &nc_name, &["g4dn.xlarge"], &[]);
    let launched = cloud.create(&claim, &nc).await.expect("the claim launches");
    assert_eq!(launched.allocatable.get("nvidia.com/gpu"), 1);
    let status = nc.status.as_ref().unwrap();
    let image = status
        .amis
        .iter()
        .find(|a| a.id == launched.instance.image_id)
        .unwrap();
    assert!(
        image.name.as_deref().unwrap().contains("x86_64-nvidia"),
        "{image:?}"
    );
    cloud.delete(&launched.instance.provider_id).await.unwrap();
    cloud.finalize_node_class(&nc).await.unwrap();
}

/// The five controller policies `karpctl init` creates, rendered from `templates/iam`
/// unchanged for the sandbox account.
fn controller_policies(sb: &Sandbox, node_role_arn: &str) -> Vec<(&'static str, String)> {
    let render = |text: &str| {
        text.replace("{{partition}}", "aws")
            .replace("{{region}}", sb.var("AWS_REGION"))
            .replace("{{account}}", "123456789012")
            .replace("{{cluster}}", sb.cluster())
            .replace("{{node_role_arn}}", node_role_arn)
            .replace("{{ec2_principal}}", "ec2.amazonaws.com")
            .replace(
                "{{queue_arn}}",
                &format!(
                    "arn:aws:sqs:{}:123456789012:Karpenter-{}",
                    sb.var("AWS_REGION"),
                    sb.cluster()
                ),
            )
    };
    vec![
        (
            "node-lifecycle",
            render(include_str!(
                "../../../templates/iam/node-lifecycle.json.hbs"
            )),
        ),
        (
            "iam-integration",
            render(include_str!(
                "../../../templates/iam/iam-integration.json.hbs"
            )),
        ),
        (
            "eks-integration",
            render(include_str!(
                "../../../templates/iam/eks-integration.json.hbs"
            )),
        ),
        (
            "interruption",
            render(include_str!("../../../templates/iam/interruption.json.hbs")),
        ),
        (
            "resource-discovery",
            render(include_str!(
                "../../../templates/iam/resource-discovery.json.hbs"
            )),
        ),
    ]
}

/// An SDK config signed as a fresh IAM user holding exactly the controller policies: the
/// sandbox's authorizer evaluates every call it makes.
async fn as_controller_principal(sb: &Sandbox) -> aws_config::SdkConfig {
    let admin = sb.aws().await;
    let iam = aws_sdk_iam::Client::new(&admin);
    let user = unique("karpenter-controller");
    iam.create_user().user_name(&user).send().await.unwrap();
    let node_role = iam
        .get_role()
        .role_name(system_role(sb))
        .send()
        .await
        .unwrap()
        .role
        .unwrap()
        .arn;
    for (name, document) in controller_policies(sb, &node_role) {
        let arn = iam
            .create_policy()
            .policy_name(format!("{user}-{name}"))
            .policy_document(document)
            .send()
            .await
            .unwrap()
            .policy
            .and_then(|p| p.arn)
            .unwrap();
        iam.attach_user_policy()
            .user_name(&user)
            .policy_arn(arn)
            .send()
            .await
            .unwrap();
    }
    let key = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    admin
        .into_builder()
        .credentials_provider(aws_sdk_ec2::config::SharedCredentialsProvider::new(
            aws_sdk_ec2::config::Credentials::new(
                key.access_key_id,
                key.secret_access_key,
                None,
                None,
                "controller-policy",
            ),
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_policies_unchanged_let_the_provider_launch_and_clean_up_on_demand_and_spot()
{
    let sb = sandbox();
    let config = as_controller_principal(sb).await;
    let settings = AwsSettings {
        cluster_name: sb.cluster().to_owned(),
        ..AwsSettings::default()
    };
    let cloud = AwsCloud::new(&config, settings)
        .await
        .expect("the provider reads the cluster as the controller");
    let nc_name = unique("nc-iam");
    let nc = resolved(&cloud, node_class(sb, &nc_name, "al2023@latest")).await;
    let pool = unique("pool");
    for capacity in ["on-demand", "spot"] {
        let mut claim = claim(&unique("claim"), &pool, &nc_name, &["m5.large"], &[]);
        for r in &mut claim.spec.requirements {
            if r.key == labels::CAPACITY_TYPE {
                r.values = vec![capacity.to_owned()];
            }
        }
        let launched = cloud
            .create(&claim, &nc)
            .await
            .unwrap_or_else(|e| panic!("a {capacity} claim launches under the policy: {e}"));
        assert_eq!(launched.instance.capacity_type.as_str(), capacity);
        cloud
            .delete(&launched.instance.provider_id)
            .await
            .expect("the instance terminates under the policy");
    }
    // The templates carry the pool (DeleteLaunchTemplate's condition needs it), one per
    // capacity type.
    let ec2 = aws_sdk_ec2::Client::new(&sb.aws().await);
    let templates = ec2
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", labels::NODE_POOL))
                .values(&pool)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_templates
        .unwrap_or_default();
    assert_eq!(templates.len(), 2, "{templates:?}");
    cloud
        .finalize_node_class(&nc)
        .await
        .expect("the node class's templates and instance profile go under the policy");
    let left = ec2
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", labels::NODE_POOL))
                .values(&pool)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_templates
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

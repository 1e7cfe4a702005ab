//! Proof that the sandbox is made of real parts: the unmodified AWS SDK reaches the AWS
//! endpoint (moto and the filled-in EKS and Pricing operations), and Kubernetes behaves as a
//! real control plane does — RBAC denies, the scheduler reports Unschedulable, an instance
//! becomes a Node only as its user data and IAM role allow, kwok runs its pods, and the
//! Eviction API honours PodDisruptionBudgets. Every other integration test stands on this.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, LaunchTemplateSpecification,
    RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams, PostParams};
use support::{eventually, sandbox, unique};

const ACCOUNT: &str = "123456789012";

#[tokio::test]
async fn aws_endpoint_describes_an_eks_shaped_account() {
    let sb = sandbox();
    let aws = sb.aws().await;
    let identity = aws_sdk_sts::Client::new(&aws)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(identity.account(), Some(ACCOUNT));

    let eks = aws_sdk_eks::Client::new(&aws);
    let cluster = eks
        .describe_cluster()
        .name(sb.cluster())
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    let kubeconfig = std::fs::read_to_string(sb.kubeconfig_path()).unwrap();
    let endpoint = cluster.endpoint().unwrap();
    assert!(
        kubeconfig.contains(endpoint),
        "DescribeCluster's endpoint {endpoint} is not the sandbox apiserver"
    );
    assert_eq!(cluster.version(), Some("1.37"));
    let issuer = cluster
        .identity()
        .unwrap()
        .oidc()
        .unwrap()
        .issuer()
        .unwrap();
    assert!(issuer.starts_with("https://oidc.eks."), "{issuer}");
    let access = cluster.access_config().expect("accessConfig is filled in");
    assert_eq!(
        access.authentication_mode().unwrap().as_str(),
        "API_AND_CONFIG_MAP"
    );
    let vpc = cluster.resources_vpc_config().unwrap();
    let cluster_sg = vpc
        .cluster_security_group_id()
        .expect("the cluster security group");
    let ca = base64::engine::general_purpose::STANDARD
        .decode(cluster.certificate_authority().unwrap().data().unwrap())
        .unwrap();
    assert!(String::from_utf8(ca).unwrap().contains("BEGIN CERTIFICATE"));

    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let subnets = ec2
        .describe_subnets()
        .set_subnet_ids(Some(vpc.subnet_ids().to_vec()))
        .send()
        .await
        .unwrap();
    let zones: std::collections::BTreeSet<_> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone())
        .collect();
    assert_eq!(
        zones.len(),
        3,
        "three private subnets in three zones: {zones:?}"
    );
    let sgs = ec2
        .describe_security_groups()
        .group_ids(cluster_sg)
        .send()
        .await
        .unwrap();
    let sg_tags = tags(sgs.security_groups()[0].tags());
    assert_eq!(
        sg_tags.get("aws:eks:cluster-name").map(String::as_str),
        Some(sb.cluster())
    );

    let groups = eks
        .list_nodegroups()
        .cluster_name(sb.cluster())
        .send()
        .await
        .unwrap();
    assert_eq!(groups.nodegroups(), ["system"]);
    let ng = eks
        .describe_nodegroup()
        .cluster_name(sb.cluster())
        .nodegroup_name("system")
        .send()
        .await
        .unwrap()
        .nodegroup
        .unwrap();
    let asg_name = ng.resources().unwrap().auto_scaling_groups()[0]
        .name()
        .unwrap()
        .to_string();
    let running = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:aws:autoscaling:groupName")
                .values(&asg_name)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let count: usize = running
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    assert_eq!(count, 2, "the system node group runs two instances");

    // EKS-optimized AMIs, published under the public SSM names and owned by Amazon.
    let ssm = aws_sdk_ssm::Client::new(&aws);
    for (path, arch) in [
        (
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/x86_64/standard/recommended/image_id",
            "x86_64",
        ),
        (
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/arm64/standard/recommended/image_id",
            "arm64",
        ),
        (
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2/recommended/image_id",
            "x86_64",
        ),
        (
            "/aws/service/bottlerocket/aws-k8s-1.37/arm64/latest/image_id",
            "arm64",
        ),
    ] {
        let id = ssm
            .get_parameter()
            .name(path)
            .send()
            .await
            .unwrap()
            .parameter
            .unwrap()
            .value
            .unwrap();
        let image = ec2.describe_images().image_ids(&id).send().await.unwrap();
        let image = &image.images()[0];
        assert_eq!(image.architecture().unwrap().as_str(), arch, "{path}");
        assert_eq!(image.image_owner_alias(), Some("amazon"), "{path}");
        assert_ne!(
            image.owner_id(),
            Some(ACCOUNT),
            "{path} must not be owned by the caller"
        );
    }
    let denied = ssm
        .put_parameter()
        .name("/aws/service/karpctl-test")
        .value("x")
        .r#type("String".into())
        .overwrite(true)
        .send()
        .await;
    assert!(
        denied.is_err(),
        "writes under /aws/service are refused, as on AWS"
    );
}

#[tokio::test]
async fn filled_in_eks_operations_behave_like_the_service() {
    use aws_sdk_eks::operation::create_access_entry::CreateAccessEntryError;
    use aws_sdk_eks::types::{AccessScope, AccessScopeType};

    let sb = sandbox();
    let eks = aws_sdk_eks::Client::new(&sb.aws().await);
    let cluster = sb.cluster();
    let role = format!("arn:aws:iam::{ACCOUNT}:role/{}", unique("entry"));

    let entry = eks
        .create_access_entry()
        .cluster_name(cluster)
        .principal_arn(&role)
        .r#type("EC2_LINUX")
        .send()
        .await
        .unwrap();
    let entry = entry.access_entry.unwrap();
    assert_eq!(entry.username(), Some("system:node:{{EC2PrivateDNSName}}"));
    let again = eks
        .create_access_entry()
        .cluster_name(cluster)
        .principal_arn(&role)
        .r#type("EC2_LINUX")
        .send()
        .await;
    let err = again
        .expect_err("a second CreateAccessEntry conflicts")
        .into_service_error();
    assert!(
        matches!(err, CreateAccessEntryError::ResourceInUseException(_)),
        "{err:?}"
    );
    let described = eks
        .describe_access_entry()
        .cluster_name(cluster)
        .principal_arn(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(described.access_entry.unwrap().r#type(), Some("EC2_LINUX"));
    let listed = eks
        .list_access_entries()
        .cluster_name(cluster)
        .send()
        .await
        .unwrap();
    assert!(listed.access_entries().contains(&role));

    let admin = format!("arn:aws:iam::{ACCOUNT}:role/{}", unique("admin"));
    eks.create_access_entry()
        .cluster_name(cluster)
        .principal_arn(&admin)
        .send()
        .await
        .unwrap();
    let policy = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy";
    let scope = AccessScope::builder()
        .r#type(AccessScopeType::Cluster)
        .build();
    eks.associate_access_policy()
        .cluster_name(cluster)
        .principal_arn(&admin)
        .policy_arn(policy)
        .access_scope(scope)
        .send()
        .await
        .unwrap();
    let associated = eks
        .list_associated_access_policies()
        .cluster_name(cluster)
        .principal_arn(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        associated.associated_access_policies()[0].policy_arn(),
        Some(policy)
    );
    for principal in [&role, &admin] {
        eks.delete_access_entry()
            .cluster_name(cluster)
            .principal_arn(principal)
            .send()
            .await
            .unwrap();
    }
    let gone = eks
        .describe_access_entry()
        .cluster_name(cluster)
        .principal_arn(&role)
        .send()
        .await;
    assert!(
        gone.expect_err("deleted")
            .into_service_error()
            .is_resource_not_found_exception()
    );

    // Pod Identity: the agent add-on, then an association for a service account.
    let addon = eks
        .create_addon()
        .cluster_name(cluster)
        .addon_name("eks-pod-identity-agent")
        .send()
        .await;
    if let Err(e) = &addon {
        let e = e.as_service_error().expect("a service error");
        assert!(e.is_resource_in_use_exception(), "{e:?}");
    }
    let addons = eks
        .list_addons()
        .cluster_name(cluster)
        .send()
        .await
        .unwrap();
    assert!(
        addons
            .addons()
            .iter()
            .any(|a| a == "eks-pod-identity-agent")
    );
    let sa = unique("sa");
    let assoc = eks
        .create_pod_identity_association()
        .cluster_name(cluster)
        .namespace("karpenter")
        .service_account(&sa)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/karpenter-controller"))
        .send()
        .await
        .unwrap()
        .association
        .unwrap();
    let found = eks
        .list_pod_identity_associations()
        .cluster_name(cluster)
        .service_account(&sa)
        .send()
        .await
        .unwrap();
    assert_eq!(found.associations().len(), 1);
    assert_eq!(
        found.associations()[0].association_id(),
        assoc.association_id()
    );
    eks.delete_pod_identity_association()
        .cluster_name(cluster)
        .association_id(assoc.association_id().unwrap())
        .send()
        .await
        .unwrap();
    let unknown = eks.describe_cluster().name("no-such-cluster").send().await;
    assert!(
        unknown
            .expect_err("unknown cluster")
            .into_service_error()
            .is_resource_not_found_exception()
    );
}

#[tokio::test]
async fn pricing_api_answers_get_products_with_pages() {
    let sb = sandbox();
    // The Price List API lives in us-east-1 whatever region the cluster is in.
    let pricing = aws_sdk_pricing::Client::new(&sb.aws_in("us-east-1").await);
    let filter = |field: &str, value: &str| {
        aws_sdk_pricing::types::Filter::builder()
            .r#type(aws_sdk_pricing::types::FilterType::TermMatch)
            .field(field)
            .value(value)
            .build()
            .unwrap()
    };
    let one = pricing
        .get_products()
        .service_code("AmazonEC2")
        .filters(filter("regionCode", "us-west-2"))
        .filters(filter("instanceType", "m5.large"))
        .filters(filter("operatingSystem", "Linux"))
        .send()
        .await
        .unwrap();
    assert_eq!(one.price_list().len(), 1);
    let product: serde_json::Value = serde_json::from_str(&one.price_list()[0]).unwrap();
    let terms = product["terms"]["OnDemand"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    let dimension = terms["priceDimensions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    let usd: f64 = dimension["pricePerUnit"]["USD"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (usd - 0.096).abs() < 1e-9,
        "m5.large in us-west-2 costs {usd}"
    );

    let mut pages = pricing
        .get_products()
        .service_code("AmazonEC2")
        .filters(filter("regionCode", "us-west-2"))
        .max_results(100)
        .into_paginator()
        .send();
    let (mut count, mut page_count) = (0, 0);
    while let Some(page) = pages.next().await {
        count += page.unwrap().price_list().len();
        page_count += 1;
    }
    assert!(
        page_count > 10 && count > 1000,
        "{count} products over {page_count} pages"
    );
}

#[tokio::test]
async fn injected_faults_reach_the_sdk_in_the_wire_format() {
    let sb = sandbox();
    let ec2 = aws_sdk_ec2::Client::new(&sb.aws().await);
    // Throttling is retried by the SDK: one injected RequestLimitExceeded, then success.
    sb.inject_fault("ec2", "DescribeKeyPairs", "RequestLimitExceeded", 503, 1)
        .await;
    ec2.describe_key_pairs()
        .send()
        .await
        .expect("the SDK retries a throttled call");
    let calls = sb.aws_calls().await;
    let statuses: Vec<_> = calls
        .iter()
        .filter(|c| c["operation"] == "DescribeKeyPairs")
        .map(|c| c["status"].as_u64().unwrap())
        .collect();
    assert!(
        statuses.windows(2).any(|w| w == [503, 200]),
        "throttled then answered: {statuses:?}"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c["operation"] == "DescribeKeyPairs")
            .all(|c| c["mutating"] == false)
    );
    // A permission error is not retried and arrives with its code.
    sb.inject_fault(
        "ec2",
        "DescribePlacementGroups",
        "UnauthorizedOperation",
        403,
        1,
    )
    .await;
    let err = ec2
        .describe_placement_groups()
        .send()
        .await
        .expect_err("denied");
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&err),
        Some("UnauthorizedOperation")
    );
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_service_account() {
    let sb = sandbox();
    let admin = sb.kube().await;
    let name = unique("nobody");
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let sa = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let spec = TokenRequestSpec {
        expiration_seconds: Some(600),
        ..Default::default()
    };
    let request = TokenRequest {
        spec: Some(spec),
        ..Default::default()
    };
    let token = sas
        .create_token_request(&name, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;

    let kubeconfig = std::fs::read_to_string(sb.kubeconfig_path()).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&kubeconfig).unwrap();
    doc["users"][0]["user"] = serde_json::json!({"token": token});
    let custom = kube::config::Kubeconfig::from_yaml(&doc.to_string()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(custom, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing kube-system pods as {name} must be forbidden, got {other:?}"),
    }
    let nodes: Api<Node> = Api::all(client);
    match nodes.delete("anything", &DeleteParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("deleting nodes must be forbidden, got {other:?}"),
    }
    sas.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn the_real_scheduler_reports_an_impossible_pod_unschedulable() {
    let sb = sandbox();
    let pods: Api<Pod> = Api::namespaced(sb.kube().await, "default");
    let name = unique("too-big");
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                 "resources": {"requests": {"cpu": "64", "memory": "1Gi"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let message = eventually(
        "PodScheduled=False/Unschedulable",
        Duration::from_secs(30),
        || async {
            let pod = pods.get(&name).await.ok()?;
            let condition = pod
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled")?;
            (condition.status == "False" && condition.reason.as_deref() == Some("Unschedulable"))
                .then(|| condition.message.unwrap_or_default())
        },
    )
    .await;
    assert!(message.contains("Insufficient cpu"), "{message}");
    pods.delete(&name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
}

/// AL2023 user data as a launch template would carry it, with labels and a taint.
fn al2023_user_data(labels: &str, taint_key: &str, taint_value: &str) -> String {
    format!(
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n--BOUNDARY\nContent-Type: application/node.eks.aws\n\n\
---\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: sandbox\n  kubelet:\n    config:\n      \
registerWithTaints:\n      - key: {taint_key}\n        value: {taint_value}\n        effect: NoSchedule\n    flags:\n    - --node-labels={labels}\n\n--BOUNDARY--\n"
    )
}

#[tokio::test]
async fn an_instance_joins_as_its_user_data_and_iam_role_say_and_leaves_when_terminated() {
    let sb = sandbox();
    let aws = sb.aws().await;
    let (ec2, iam, eks) = (
        aws_sdk_ec2::Client::new(&aws),
        aws_sdk_iam::Client::new(&aws),
        aws_sdk_eks::Client::new(&aws),
    );
    let ssm = aws_sdk_ssm::Client::new(&aws);
    let id = unique("join");
    let team = id.replace('-', "");

    // A node role of our own, not yet allowed to join the cluster.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let role_arn = iam
        .create_role()
        .role_name(&id)
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap()
        .role
        .unwrap()
        .arn;
    iam.create_instance_profile()
        .instance_profile_name(&id)
        .send()
        .await
        .unwrap();
    iam.add_role_to_instance_profile()
        .instance_profile_name(&id)
        .role_name(&id)
        .send()
        .await
        .unwrap();

    let ami = ssm
        .get_parameter()
        .name("/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/x86_64/standard/recommended/image_id")
        .send()
        .await
        .unwrap()
        .parameter
        .unwrap()
        .value
        .unwrap();
    let cluster = eks
        .describe_cluster()
        .name(sb.cluster())
        .send()
        .await
        .unwrap()
        .cluster
        .unwrap();
    let subnet = cluster.resources_vpc_config().unwrap().subnet_ids()[1].clone();
    let user_data = al2023_user_data(&format!("team={team},tier=backend"), "dedicated", &team);
    let template = ec2
        .create_launch_template()
        .launch_template_name(&id)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&ami)
                .instance_type("m5.large".into())
                .user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_template
        .unwrap();
    let profile = IamInstanceProfileSpecification::builder().name(&id).build();
    let template_id = template.launch_template_id().unwrap();
    let (instance_id, zone) = launch(&ec2, sb.cluster(), template_id, profile, &subnet, &[]).await;
    let provider_id = format!("aws:///{zone}/{instance_id}");

    let nodes: Api<Node> = Api::all(sb.kube().await);
    // Unauthorised: past the boot delay (2 s) the kubelet still cannot register.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        node_with_provider_id(&nodes, &provider_id).await.is_none(),
        "a node whose role is not mapped must not join"
    );

    // An EC2_LINUX access entry lets it in, as on EKS.
    eks.create_access_entry()
        .cluster_name(sb.cluster())
        .principal_arn(&role_arn)
        .r#type("EC2_LINUX")
        .send()
        .await
        .unwrap();
    let node = eventually("the Node to register", Duration::from_secs(30), || {
        node_with_provider_id(&nodes, &provider_id)
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("team"), Some(&team));
    assert_eq!(labels.get("tier").map(String::as_str), Some("backend"));
    assert_eq!(
        labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("m5.large")
    );
    assert_eq!(labels.get("topology.kubernetes.io/zone"), Some(&zone));
    assert_eq!(
        labels.get("kubernetes.io/arch").map(String::as_str),
        Some("amd64")
    );
    assert!(
        !labels
            .keys()
            .any(|k| k.starts_with("karpenter.") || k.starts_with("eks.amazonaws.com/")),
        "{labels:?}"
    );
    // The node lifecycle controller may add its own node.kubernetes.io/* condition taints.
    let taints: Vec<_> = node
        .spec
        .as_ref()
        .unwrap()
        .taints
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .map(|t| (t.key, t.value.unwrap_or_default(), t.effect))
        .collect();
    assert_eq!(
        taints,
        vec![(
            "dedicated".to_string(),
            team.clone(),
            "NoSchedule".to_string()
        )]
    );
    // m5.large through the EKS AMI formulas: 2 vCPU less 60m+10m kube-reserved; 29 ENI pods.
    let status = node.status.clone().unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["cpu"].0, "2");
    assert_eq!(status.allocatable.as_ref().unwrap()["cpu"].0, "1930m");
    assert_eq!(status.allocatable.as_ref().unwrap()["pods"].0, "29");
    let node_name = node.metadata.name.clone().unwrap();

    // The real scheduler binds a pod that selects and tolerates it; kwok runs it.
    let pods: Api<Pod> = Api::namespaced(sb.kube().await, "default");
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": id},
        "spec": {
            "nodeSelector": {"team": team},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": team, "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = eventually(
        "the pod to run on the new node",
        Duration::from_secs(30),
        || async {
            let pod = pods.get(&id).await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
        },
    )
    .await;
    assert_eq!(
        running.spec.unwrap().node_name.as_deref(),
        Some(node_name.as_str())
    );

    // Terminating the instance removes the Node.
    ec2.terminate_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
    eventually(
        "the Node to be removed",
        Duration::from_secs(30),
        || async {
            node_with_provider_id(&nodes, &provider_id)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    let _ = pods
        .delete(&id, &DeleteParams::default().grace_period(0))
        .await;
    eks.delete_access_entry()
        .cluster_name(sb.cluster())
        .principal_arn(&role_arn)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_registrar_can_be_told_to_never_let_an_instance_join() {
    let sb = sandbox();
    let aws = sb.aws().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let marker = unique("never");
    sb.run(&[
        "never-join",
        "--tag",
        &format!("karpctl-test/never-join={marker}"),
    ]);
    // The system node group's launch template: a role aws-auth already maps.
    let asg = system_launch_template(&ec2, sb.cluster()).await;
    let profile = IamInstanceProfileSpecification::builder()
        .arn(&asg.1)
        .build();
    let subnet = system_subnet(&ec2).await;
    let marker_tag = [("karpctl-test/never-join", marker.as_str())];
    let (instance_id, zone) =
        launch(&ec2, sb.cluster(), &asg.0, profile, &subnet, &marker_tag).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let nodes: Api<Node> = Api::all(sb.kube().await);
    let provider_id = format!("aws:///{zone}/{instance_id}");
    let joined = node_with_provider_id(&nodes, &provider_id).await;
    assert!(
        joined.is_none(),
        "an instance marked never-join registered anyway"
    );
    ec2.terminate_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
}

/// Runs one instance of the cluster from a launch template; returns its ID and zone.
async fn launch(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
    template_id: &str,
    profile: IamInstanceProfileSpecification,
    subnet: &str,
    extra_tags: &[(&str, &str)],
) -> (String, String) {
    let mut tags = TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(
            Tag::builder()
                .key(format!("kubernetes.io/cluster/{cluster}"))
                .value("owned")
                .build(),
        );
    for (key, value) in extra_tags {
        tags = tags.tags(Tag::builder().key(*key).value(*value).build());
    }
    let template = LaunchTemplateSpecification::builder()
        .launch_template_id(template_id)
        .build();
    let launched = ec2
        .run_instances()
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .launch_template(template)
        .iam_instance_profile(profile)
        .tag_specifications(tags.build())
        .send()
        .await
        .unwrap();
    let instance = &launched.instances()[0];
    let zone = instance.placement().unwrap().availability_zone().unwrap();
    (
        instance.instance_id().unwrap().to_string(),
        zone.to_string(),
    )
}

/// The Node whose providerID is `provider_id`, if one is registered.
async fn node_with_provider_id(nodes: &Api<Node>, provider_id: &str) -> Option<Node> {
    let list = nodes.list(&ListParams::default()).await.ok()?;
    list.items
        .into_iter()
        .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id))
}

/// The first of the cluster's subnets (a private subnet in the first zone).
async fn system_subnet(ec2: &aws_sdk_ec2::Client) -> String {
    let subnets = ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("tag:kubernetes.io/role/internal-elb")
                .values("1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    subnets.subnets()[0].subnet_id().unwrap().to_string()
}

/// The system node group's launch template and instance profile (mapped in aws-auth).
async fn system_launch_template(ec2: &aws_sdk_ec2::Client, cluster: &str) -> (String, String) {
    let instances = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:eks:nodegroup-name")
                .values("system")
                .build(),
        )
        .filters(
            Filter::builder()
                .name("tag:eks:cluster-name")
                .values(cluster)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance = &instances.reservations()[0].instances()[0];
    let tags = tags(instance.tags());
    (
        tags["aws:ec2launchtemplate:id"].clone(),
        instance
            .iam_instance_profile()
            .unwrap()
            .arn()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn a_pod_disruption_budget_makes_eviction_answer_429() {
    let sb = sandbox();
    // kube retries 429 with backoff by default; an evictor must see the 429 itself.
    let mut config = sb.kube_config().await;
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let name = unique("guarded");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, "default");
    let pdb = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": name}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "10m"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually(
        "the PDB to count the running pod as healthy",
        Duration::from_secs(45),
        || async {
            let status = pdbs.get(&name).await.ok()?.status?;
            (status.current_healthy == Some(1) && status.disruptions_allowed == Some(0))
                .then_some(())
        },
    )
    .await;
    match pods.evict(&name, &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 429, "{status:?}"),
        other => {
            panic!("evicting the only pod under minAvailable=1 must be refused, got {other:?}")
        }
    }
    pods.delete(&name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    pdbs.delete(&name, &DeleteParams::default()).await.unwrap();
}

fn tags(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect()
}

//! `karpctl uninstall` against the sandbox: after an `init`, a plan that lists the destroys
//! and changes nothing, an apply that leaves nothing of karpctl's (the Cluster Autoscaler's
//! replicas and aws-auth exactly as before), a second apply that makes zero mutating calls,
//! and convergence after an init that failed midway.
//!
//! One ordered test (there is one EKS cluster in the sandbox); it starts by uninstalling
//! whatever an earlier run left, so it runs before, after or without tests/init.rs.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use support::{Sandbox, sandbox, text};

const ACCOUNT: &str = "123456789012";
const NODE_ROLE: &str = "KarpenterNodeRole-sandbox";
const CONTROLLER_ROLE: &str = "KarpenterControllerRole-sandbox";
const QUEUE: &str = "Karpenter-sandbox";
const CRDS: &[&str] = &[
    "nodepools.karpenter.sh",
    "nodeclaims.karpenter.sh",
    "ec2nodeclasses.karpenter.k8s.aws",
];
const RULES: &[&str] = &[
    "ScheduledChange",
    "SpotInterruption",
    "Rebalance",
    "InstanceStateChange",
    "CapacityReservationInterruption",
];
const POLICIES: &[&str] = &[
    "NodeLifecycle",
    "IAMIntegration",
    "EKSIntegration",
    "Interruption",
    "ResourceDiscovery",
];
/// Every mutating operation uninstall may call (other actors on the shared endpoint, such
/// as the node registrar, are not counted).
const UNINSTALL_WRITES: &[&str] = &[
    "DeleteAccessEntry",
    "DeleteTags",
    "DeletePodIdentityAssociation",
    "DeleteOpenIDConnectProvider",
    "DetachRolePolicy",
    "RemoveRoleFromInstanceProfile",
    "DeleteRole",
    "DeletePolicyVersion",
    "DeletePolicy",
    "RemoveTargets",
    "DeleteRule",
    "DeleteQueue",
];

/// Runs karpctl and asserts success; returns stdout.
fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.karpctl(args);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "karpctl {args:?} failed\n{stdout}\n{}",
        text(&out.stderr)
    );
    stdout
}

/// What uninstall must give back untouched: aws-auth's data and the CA's replicas.
async fn kube_snapshot(sb: &Sandbox) -> (Option<String>, i32) {
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
async fn assert_nothing_left(sb: &Sandbox) {
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
    let assocs = eks
        .list_pod_identity_associations()
        .cluster_name(sb.cluster())
        .namespace("kube-system")
        .service_account("karpenter")
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
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let marked = ec2
        .describe_tags()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("key")
                .values("karpctl.sh/discovery-tag")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(marked.tags().is_empty(), "{:?}", marked.tags());
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

#[tokio::test]
async fn uninstall_plans_removes_only_ours_converges_and_recovers_from_a_failed_init() {
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    let uninstall = ["uninstall", "--cluster", &cluster, "--yes"];

    // 0. A clean start, whatever earlier runs left; then what must come back unchanged.
    ok(sb, &uninstall);
    assert_nothing_left(sb).await;
    let before = kube_snapshot(sb).await;

    // 1. init creates everything (and scales the Cluster Autoscaler to 0).
    ok(sb, &["init", "--cluster", &cluster, "--yes"]);
    assert_eq!(kube_snapshot(sb).await.1, 0);

    // 2. The plan lists the destroys (and the CA restore) and changes nothing.
    let start = sb.aws_calls().await.len();
    let out = sb.karpctl(&[
        "uninstall",
        "--cluster",
        &cluster,
        "--plan",
        "--detailed-exitcode",
    ]);
    let plan = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{plan}\n{}", text(&out.stderr));
    for line in [
        "- nodepool default",
        "- nodeclaims (all)",
        "- ec2nodeclass default",
        "- deployment kube-system/karpenter",
        "- clusterrole karpenter-core",
        "~ deployment kube-system/cluster-autoscaler",
        "- crd nodepools.karpenter.sh",
        "- eks-access-entry arn:aws:iam::123456789012:role/KarpenterNodeRole-sandbox",
        "- eks-pod-identity-association ",
        "- iam-role KarpenterControllerRole-sandbox",
        "- iam-policy arn:aws:iam::123456789012:policy/KarpenterControllerNodeLifecyclePolicy-sandbox",
        "- eventbridge-rule Karpenter-sandbox-SpotInterruption",
        "- sqs-queue Karpenter-sandbox",
        "- iam-role KarpenterNodeRole-sandbox",
    ] {
        assert!(plan.contains(line), "missing {line:?} in:\n{plan}");
    }
    // NodePools (and the wait for their nodes) while the controller still runs, then the
    // controller, then the CRDs.
    assert!(
        plan.find("- nodepool default").unwrap() < plan.find("- nodeclaims (all)").unwrap()
            && plan.find("- nodeclaims (all)").unwrap()
                < plan.find("- deployment kube-system/karpenter").unwrap()
            && plan.find("- deployment kube-system/karpenter").unwrap()
                < plan.find("- crd").unwrap(),
        "{plan}"
    );
    assert!(
        plan.find("~ deployment").unwrap() < plan.find("- crd").unwrap()
            && plan.find("- iam-role KarpenterControllerRole").unwrap()
                < plan.find("- iam-role KarpenterNodeRole").unwrap(),
        "{plan}"
    );
    assert!(!plan.contains("AWSServiceRoleForEC2Spot"), "{plan}");
    let all_mutating: Vec<_> = sb
        .aws_calls()
        .await
        .into_iter()
        .skip(start)
        .filter(|c| c["mutating"].as_bool() == Some(true))
        .filter(|c| UNINSTALL_WRITES.contains(&c["operation"].as_str().unwrap_or_default()))
        .collect();
    assert!(all_mutating.is_empty(), "{all_mutating:?}");

    // 3. The apply removes everything of ours and gives back what it changed.
    let stdout = ok(sb, &uninstall);
    assert!(stdout.contains("Apply complete!"), "{stdout}");
    assert_nothing_left(sb).await;
    assert_eq!(
        kube_snapshot(sb).await,
        before,
        "aws-auth data or CA replicas differ"
    );

    // 4. Idempotent: nothing to do, no writes.
    let start = sb.aws_calls().await.len();
    let stdout = ok(sb, &uninstall);
    assert!(stdout.starts_with("No changes."), "{stdout}");
    assert_eq!(
        sb.writes_since(start, UNINSTALL_WRITES).await,
        Vec::<String>::new()
    );

    // 5. After an init that failed midway (the queue denied), uninstall still converges.
    sb.inject_fault("sqs", "CreateQueue", "AccessDenied", 403, 1)
        .await;
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    aws_sdk_iam::Client::new(&sb.aws().await)
        .get_role()
        .role_name(NODE_ROLE)
        .send()
        .await
        .expect("the node role was created before the failing step");
    let stdout = ok(sb, &uninstall);
    assert!(
        stdout.contains("- iam-role KarpenterNodeRole-sandbox") && !stdout.contains("sqs-queue"),
        "{stdout}"
    );
    assert_nothing_left(sb).await;
    assert_eq!(kube_snapshot(sb).await, before);
    let stdout = ok(sb, &uninstall);
    assert!(stdout.starts_with("No changes."), "{stdout}");
}

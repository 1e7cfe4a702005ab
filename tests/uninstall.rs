//! `karpctl uninstall` against the sandbox: after an `init`, a plan that lists the destroys
//! and changes nothing, an apply that leaves nothing of karpctl's (the Cluster Autoscaler's
//! replicas and aws-auth exactly as before), a second apply that makes zero mutating calls,
//! and convergence after an init that failed midway.
//!
//! One ordered test (there is one EKS cluster in the sandbox); it starts by uninstalling
//! whatever an earlier run left, so it runs before, after or without tests/init.rs.

mod support;

use support::footprint::{NODE_ROLE, assert_nothing_left, kube_snapshot};
use support::{sandbox, text};

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

#[tokio::test]
async fn uninstall_plans_removes_only_ours_converges_and_recovers_from_a_failed_init() {
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    let uninstall = ["uninstall", "--cluster", &cluster, "--yes"];

    // 0. A clean start, whatever earlier runs left; then what must come back unchanged.
    sb.karpctl_ok(&uninstall);
    assert_nothing_left(sb).await;
    let before = kube_snapshot(sb).await;

    // 1. init creates everything (and scales the Cluster Autoscaler to 0).
    sb.karpctl_ok(&["init", "--cluster", &cluster, "--yes"]);
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
    let stdout = sb.karpctl_ok(&uninstall);
    assert!(stdout.contains("Apply complete!"), "{stdout}");
    assert_nothing_left(sb).await;
    assert_eq!(
        kube_snapshot(sb).await,
        before,
        "aws-auth data or CA replicas differ"
    );

    // 4. Idempotent: nothing to do, no writes.
    let start = sb.aws_calls().await.len();
    let stdout = sb.karpctl_ok(&uninstall);
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
    let stdout = sb.karpctl_ok(&uninstall);
    assert!(
        stdout.contains("- iam-role KarpenterNodeRole-sandbox") && !stdout.contains("sqs-queue"),
        "{stdout}"
    );
    assert_nothing_left(sb).await;
    assert_eq!(kube_snapshot(sb).await, before);
    let stdout = sb.karpctl_ok(&uninstall);
    assert!(stdout.starts_with("No changes."), "{stdout}");

    // 6. A controller installed into another namespace with another service account is
    //    found from what init recorded in the cluster: no flags needed to uninstall it.
    sb.karpctl_ok(&[
        "init",
        "--cluster",
        &cluster,
        "--namespace",
        "karpenter",
        "--service-account",
        "autoscaler",
        "--yes",
    ]);
    let plan = sb.karpctl_ok(&["uninstall", "--cluster", &cluster, "--plan"]);
    for line in [
        // Looked up for karpenter/autoscaler: found only through the record.
        "- eks-pod-identity-association a-",
        "- deployment karpenter/karpenter",
        "- serviceaccount karpenter/autoscaler",
    ] {
        assert!(plan.contains(line), "missing {line:?} in:\n{plan}");
    }
    sb.karpctl_ok(&uninstall);
    assert_nothing_left(sb).await;
    assert_eq!(kube_snapshot(sb).await, before);
    let namespace = sb.run(&[
        "kubectl",
        "get",
        "namespace",
        "karpenter",
        "--ignore-not-found",
        "-o",
        "name",
    ]);
    assert_eq!(namespace.trim(), "", "the controller's namespace is left");
}

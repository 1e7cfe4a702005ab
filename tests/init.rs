//! `karpctl init` (the AWS side) against the sandbox: a plan that changes nothing, an apply
//! that creates everything, a second apply that makes zero mutating calls, a failure
//! injected mid-apply that names its step and converges on re-run, and bad input.
//!
//! There is one EKS cluster in the sandbox, so the steps run in order in one test, starting
//! from a clean slate that the test makes itself (leftovers of earlier runs are removed).

mod support;

use serde_json::Value;
use support::footprint::{CONTROLLER_ROLE, NODE_ROLE, assert_converged, decode, reset};
use support::{sandbox, text};

/// Every mutating operation init may call; other actors on the shared endpoint (the
/// registrar, other tests) are not counted.
const INIT_WRITES: &[&str] = &[
    "CreateRole",
    "UpdateAssumeRolePolicy",
    "TagRole",
    "AttachRolePolicy",
    "CreateQueue",
    "SetQueueAttributes",
    "TagQueue",
    "PutRule",
    "PutTargets",
    "TagResource",
    "CreatePolicy",
    "CreatePolicyVersion",
    "DeletePolicyVersion",
    "TagPolicy",
    "CreateAddon",
    "CreatePodIdentityAssociation",
    "UpdatePodIdentityAssociation",
    "CreateOpenIDConnectProvider",
    "CreateServiceLinkedRole",
    "CreateAccessEntry",
    "DeleteAccessEntry",
    "CreateTags",
];

#[tokio::test]
async fn init_plans_applies_converges_and_reports_bad_input() {
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    reset(sb).await;

    // 1. --plan on a fresh account lists the creates and changes nothing.
    let before = sb.aws_calls().await.len();
    let out = sb.karpctl(&[
        "init",
        "--cluster",
        &cluster,
        "--plan",
        "--detailed-exitcode",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for line in [
        "  + iam-role KarpenterNodeRole-sandbox  (create: not found)",
        "  + sqs-queue Karpenter-sandbox  (create: not found)",
        "  + iam-policy KarpenterControllerNodeLifecyclePolicy-sandbox  (create: not found)",
        "  + eks-pod-identity-association kube-system/karpenter  (create: not found)",
        "  + eks-access-entry arn:aws:iam::123456789012:role/KarpenterNodeRole-sandbox",
        "        + tag karpenter.sh/discovery = \"sandbox\"",
        "  + crd nodepools.karpenter.sh  (create: not found)",
        "  ~ deployment kube-system/cluster-autoscaler  (update in-place: Cluster Autoscaler would fight Karpenter; scaled to 0, replicas recorded for uninstall)",
        "        ~ replicas: 1 -> 0",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    assert!(stdout.contains("\nPlan: "), "{stdout}");
    assert_eq!(
        sb.writes_since(before, INIT_WRITES).await,
        Vec::<String>::new()
    );

    // The same plan as JSON.
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--plan", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["plan"]["changes"], true);
    assert_eq!(doc["identity"], "pod-identity");
    assert!(
        doc["plan"]["summary"]["add"].as_u64().unwrap() >= 20,
        "{doc}"
    );

    // 2. Without a terminal and without --yes there is no one to confirm: an error naming the flag.
    let before = sb.aws_calls().await.len();
    let out = sb.karpctl(&["init", "--cluster", &cluster]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        sb.writes_since(before, INIT_WRITES).await,
        Vec::<String>::new()
    );

    // A server error that outlasts the SDK's retries (three attempts) fails the first step
    // and names it; nothing after it runs.
    let before = sb.aws_calls().await.len();
    sb.inject_fault("iam", "CreateRole", "ServiceFailure", 500, 3)
        .await;
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("step 1/")
            && stderr.contains(
                "creating iam-role KarpenterNodeRole-sandbox: iam:CreateRole failed: ServiceFailure"
            ),
        "{stderr}"
    );
    let writes = sb.writes_since(before, INIT_WRITES).await;
    assert!(writes.iter().all(|op| op == "CreateRole"), "{writes:?}");

    // 3. A failure mid-apply (a denied permission, not retried) names its step; the steps
    //    before it stay applied.
    sb.inject_fault("sqs", "CreateQueue", "AccessDenied", 403, 1)
        .await;
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("creating sqs-queue Karpenter-sandbox: access denied for sqs:CreateQueue"),
        "{stderr}"
    );
    let aws = sb.aws().await;
    aws_sdk_iam::Client::new(&aws)
        .get_role()
        .role_name(NODE_ROLE)
        .send()
        .await
        .expect("the node role was created before the failing step");

    // 4. The re-run converges: it creates what is missing and nothing twice.
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        !stdout.contains("+ iam-role KarpenterNodeRole-sandbox"),
        "{stdout}"
    );
    assert!(stdout.contains("Apply complete!"), "{stdout}");
    assert_converged(sb).await;

    // 5. A second apply makes zero mutating calls and says so.
    let before = sb.aws_calls().await.len();
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with("No changes."), "{stdout}");
    assert_eq!(
        sb.writes_since(before, INIT_WRITES).await,
        Vec::<String>::new()
    );
    let out = sb.karpctl(&[
        "init",
        "--cluster",
        &cluster,
        "--plan",
        "--detailed-exitcode",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_converged(sb).await;

    // 6. IRSA: planned (nothing applied), then applied: the cluster's OIDC provider first, and
    //    a trust policy for exactly the service account and audience.
    let before = sb.aws_calls().await.len();
    let out = sb.karpctl(&[
        "init",
        "--cluster",
        &cluster,
        "--identity",
        "irsa",
        "--plan",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let provider = stdout.find("+ iam-oidc-provider oidc.eks.").expect(&stdout);
    let role = stdout
        .find("~ iam-role KarpenterControllerRole-sandbox  (update in-place: trust policy differs)")
        .expect(&stdout);
    assert!(provider < role, "{stdout}");
    assert_eq!(
        sb.writes_since(before, INIT_WRITES).await,
        Vec::<String>::new()
    );
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--identity", "irsa", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let aws = sb.aws().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    let trust = decode(
        iam.get_role()
            .role_name(CONTROLLER_ROLE)
            .send()
            .await
            .unwrap()
            .role
            .unwrap()
            .assume_role_policy_document()
            .unwrap(),
    );
    let statement = &trust["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
    let federated = statement["Principal"]["Federated"].as_str().unwrap();
    let host = federated.split_once(":oidc-provider/").unwrap().1;
    assert_eq!(
        statement["Condition"]["StringEquals"],
        serde_json::json!({
            format!("{host}:sub"): "system:serviceaccount:kube-system:karpenter",
            format!("{host}:aud"): "sts.amazonaws.com",
        })
    );
    let provider = iam
        .get_open_id_connect_provider()
        .open_id_connect_provider_arn(federated)
        .send()
        .await
        .expect("the OIDC provider the trust names");
    assert_eq!(provider.client_id_list(), ["sts.amazonaws.com"]);
    let sa = sb.run(&[
        "kubectl",
        "get",
        "sa",
        "-n",
        "kube-system",
        "karpenter",
        "-o",
        "json",
    ]);
    let sa: Value = serde_json::from_str(&sa).unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        format!(
            "arn:aws:iam::{}:role/{CONTROLLER_ROLE}",
            federated.split(':').nth(4).unwrap()
        )
    );
    // Back to the automatic choice (Pod Identity): the trust policy, the service account's
    // annotation (removed) and the recorded settings change; nothing else.
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("Plan: 0 to add, 3 to change, 0 to destroy."),
        "{stdout}"
    );
    let sa = sb.run(&[
        "kubectl",
        "get",
        "sa",
        "-n",
        "kube-system",
        "karpenter",
        "-o",
        "json",
    ]);
    let sa: Value = serde_json::from_str(&sa).unwrap();
    assert!(
        sa["metadata"]["annotations"]
            .get("eks.amazonaws.com/role-arn")
            .is_none(),
        "{sa}"
    );
    assert_converged(sb).await;

    // 7. Bad input: an unknown cluster names the region and the command that lists clusters.
    let out = sb.karpctl(&["init", "--cluster", "no-such-cluster", "--plan"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "cluster no-such-cluster not found in region us-west-2; `aws eks list-clusters --region us-west-2`"
        ),
        "{stderr}"
    );

    // No credentials anywhere: say how to provide them; nothing is called.
    let out = sb.karpctl_without(
        &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        &["init", "--cluster", &cluster, "--plan"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS credentials found"), "{stderr}");
    assert!(stderr.contains("--profile"), "{stderr}");

    // No region: name the flag.
    let out = sb.karpctl_without(
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
        &["init", "--cluster", &cluster, "--plan"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS region: pass --region"), "{stderr}");

    // Expired credentials, as STS reports them.
    sb.inject_fault("sts", "GetCallerIdentity", "ExpiredToken", 403, 1)
        .await;
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--plan"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the AWS credentials have expired or are no longer valid"),
        "{stderr}"
    );

    // A denied read names the action to grant.
    sb.inject_fault("eks", "DescribeCluster", "AccessDeniedException", 403, 1)
        .await;
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--plan"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("access denied for eks:DescribeCluster"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the caller needs `eks:DescribeCluster`"),
        "{stderr}"
    );
}

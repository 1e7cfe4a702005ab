//! `karpctl uninstall` against the sandbox: after an `init`, a plan that lists the destroys
//! and changes nothing, an apply that leaves nothing of karpctl's (the Cluster Autoscaler's
//! replicas and aws-auth exactly as before), a second apply that makes zero mutating calls,
//! and convergence after an init that failed midway.
//!
//! A second scenario: karpctl's policy attached by someone to a role and a user that are not
//! karpctl's, an extra policy version and an inline policy on karpctl's role — uninstall plans
//! every detachment by name, applies it, and the other principals survive; the JSON of
//! `init -o json` and `uninstall -o json` is parsed and its shape checked.
//!
//! There is one EKS cluster in the sandbox, so the tests take turns (`ONE_AT_A_TIME`); each
//! starts by uninstalling whatever an earlier run left, so they run before, after or without
//! tests/init.rs.

mod support;

use serde_json::Value;
use support::footprint::{ACCOUNT, NODE_ROLE, assert_nothing_left, kube_snapshot};
use support::{Sandbox, sandbox, text};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every mutating operation uninstall may call (other actors on the shared endpoint, such
/// as the node registrar, are not counted).
const UNINSTALL_WRITES: &[&str] = &[
    "DeleteAccessEntry",
    "DeleteTags",
    "DeletePodIdentityAssociation",
    "DeleteOpenIDConnectProvider",
    "DetachRolePolicy",
    "DetachUserPolicy",
    "DetachGroupPolicy",
    "DeleteRolePolicy",
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
    let _turn = ONE_AT_A_TIME.lock().await;
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

/// A role and a user that are not karpctl's, as a team might keep them next to it.
const FOREIGN_ROLE: &str = "ci-admin-not-karpctl";
const FOREIGN_USER: &str = "ci-bot-not-karpctl";

/// Removes the foreign role and user (and their attachments), as a failed earlier run may
/// have left them.
async fn remove_foreign(iam: &aws_sdk_iam::Client) {
    if let Ok(out) = iam
        .list_attached_role_policies()
        .role_name(FOREIGN_ROLE)
        .send()
        .await
    {
        for p in out.attached_policies() {
            iam.detach_role_policy()
                .role_name(FOREIGN_ROLE)
                .policy_arn(p.policy_arn().unwrap())
                .send()
                .await
                .unwrap();
        }
        iam.delete_role()
            .role_name(FOREIGN_ROLE)
            .send()
            .await
            .unwrap();
    }
    if let Ok(out) = iam
        .list_attached_user_policies()
        .user_name(FOREIGN_USER)
        .send()
        .await
    {
        for p in out.attached_policies() {
            iam.detach_user_policy()
                .user_name(FOREIGN_USER)
                .policy_arn(p.policy_arn().unwrap())
                .send()
                .await
                .unwrap();
        }
        iam.delete_user()
            .user_name(FOREIGN_USER)
            .send()
            .await
            .unwrap();
    }
}

/// Runs karpctl with `-o json`, asserts success, and parses stdout as exactly one JSON
/// document (progress goes to stderr and must never mix in).
fn karpctl_json(sb: &Sandbox, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let out = sb.karpctl(&args);
    assert!(
        out.status.success(),
        "karpctl {args:?} failed\n{}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: not one JSON document:\n{}", text(&out.stdout)))
}

/// The plan document's shape: every resource with kind, id, action and reason (changes only
/// when there are some), a summary that counts them, and `changes` saying whether any does.
fn assert_plan_document(plan: &Value) -> Vec<Value> {
    let resources = plan["resources"]
        .as_array()
        .expect("plan.resources")
        .clone();
    let mut counted = (0, 0, 0);
    for r in &resources {
        for key in ["kind", "id", "reason"] {
            assert!(r[key].is_string(), "{key} in {r}");
        }
        match r["action"].as_str().expect("action") {
            "create" => counted.0 += 1,
            "update" => counted.1 += 1,
            "delete" => counted.2 += 1,
            "no-op" => {}
            other => panic!("unknown action {other} in {r}"),
        }
        if let Some(changes) = r.get("changes") {
            let changes = changes.as_array().expect("changes is a list");
            assert!(
                !changes.is_empty() && changes.iter().all(Value::is_string),
                "{r}"
            );
        }
    }
    let summary = &plan["summary"];
    assert_eq!(
        (
            summary["add"].as_u64().unwrap(),
            summary["change"].as_u64().unwrap(),
            summary["destroy"].as_u64().unwrap()
        ),
        counted,
        "{plan}"
    );
    assert_eq!(plan["changes"], counted != (0, 0, 0), "{plan}");
    resources
}

/// What was applied: exactly the plan's changing resources, in order, with its summary.
fn assert_applied_document(doc: &Value) {
    let planned: Vec<&Value> = doc["plan"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] != "no-op")
        .collect();
    let applied: Vec<&Value> = doc["applied"]["applied"]
        .as_array()
        .expect("applied.applied")
        .iter()
        .collect();
    assert_eq!(applied, planned, "{doc}");
    assert_eq!(doc["applied"]["summary"], doc["plan"]["summary"], "{doc}");
}

#[tokio::test]
async fn uninstall_detaches_our_policy_from_principals_that_are_not_ours_and_keeps_them() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    let aws = sb.aws().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    let uninstall = ["uninstall", "--cluster", cluster.as_str(), "--yes"];

    // 0. A clean start.
    sb.karpctl_ok(&uninstall);
    remove_foreign(&iam).await;
    assert_nothing_left(sb).await;
    let before = kube_snapshot(sb).await;

    // 1. init -o json: one document with the cluster, the identity, the plan and exactly
    //    the plan's changes applied.
    let doc = karpctl_json(sb, &["init", "--cluster", &cluster, "--yes"]);
    assert_eq!(doc["cluster"]["name"], cluster, "{doc}");
    assert_eq!(doc["cluster"]["account"], ACCOUNT, "{doc}");
    assert_eq!(doc["identity"], "pod-identity", "{doc}");
    let resources = assert_plan_document(&doc["plan"]);
    assert_eq!(doc["plan"]["changes"], true);
    assert!(
        resources
            .iter()
            .any(|r| r["kind"] == "iam-role" && r["id"] == NODE_ROLE && r["action"] == "create"),
        "{doc}"
    );
    assert_applied_document(&doc);
    // A second init -o json: no changes, nothing applied.
    let doc = karpctl_json(sb, &["init", "--cluster", &cluster, "--yes"]);
    assert_plan_document(&doc["plan"]);
    assert_eq!(doc["plan"]["changes"], false, "{doc}");
    assert!(doc.get("applied").is_none(), "{doc}");

    // 2. Someone attaches karpctl's policy to their own role and user, a second (not
    //    default) version appears on it, and an inline policy on karpctl's node role.
    let policy =
        format!("arn:aws:iam::{ACCOUNT}:policy/KarpenterControllerNodeLifecyclePolicy-sandbox");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name(FOREIGN_ROLE)
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name(FOREIGN_ROLE)
        .policy_arn(&policy)
        .send()
        .await
        .unwrap();
    iam.create_user()
        .user_name(FOREIGN_USER)
        .send()
        .await
        .unwrap();
    iam.attach_user_policy()
        .user_name(FOREIGN_USER)
        .policy_arn(&policy)
        .send()
        .await
        .unwrap();
    let document = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeInstances","Resource":"*"}]}"#;
    iam.create_policy_version()
        .policy_arn(&policy)
        .policy_document(document)
        .set_as_default(false)
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name(NODE_ROLE)
        .policy_name("team-extra")
        .policy_document(document)
        .send()
        .await
        .unwrap();

    // 3. The plan names each principal that is not karpctl's and the inline policy.
    let start = sb.aws_calls().await.len();
    let plan = sb.karpctl_ok(&["uninstall", "--cluster", &cluster, "--plan"]);
    for line in [
        format!(
            "  - iam-policy {policy}  (destroy: created by karpctl; detaches it from role {FOREIGN_ROLE}, user {FOREIGN_USER}, which are not karpctl's)"
        ),
        format!(
            "        - attachment to role {FOREIGN_ROLE} (not karpctl's; that principal is kept)"
        ),
        format!(
            "        - attachment to user {FOREIGN_USER} (not karpctl's; that principal is kept)"
        ),
        format!("  - iam-role {NODE_ROLE}  (destroy: created by karpctl)"),
        "        - inline policy team-extra (not karpctl's; deleted with the role)".to_string(),
    ] {
        assert!(plan.contains(&line), "missing {line:?} in:\n{plan}");
    }
    // The same as JSON, and neither wrote anything.
    let doc = karpctl_json(sb, &["uninstall", "--cluster", &cluster, "--plan"]);
    assert_eq!(doc["cluster"], cluster, "{doc}");
    let resources = assert_plan_document(&doc["plan"]);
    assert!(doc.get("applied").is_none(), "{doc}");
    let ours = resources
        .iter()
        .find(|r| r["kind"] == "iam-policy" && r["id"] == policy.as_str())
        .expect("the policy in the JSON plan");
    assert_eq!(ours["action"], "delete");
    assert_eq!(
        ours["changes"],
        serde_json::json!([
            format!("- attachment to role {FOREIGN_ROLE} (not karpctl's; that principal is kept)"),
            format!("- attachment to user {FOREIGN_USER} (not karpctl's; that principal is kept)"),
        ])
    );
    assert_eq!(
        sb.writes_since(start, UNINSTALL_WRITES).await,
        Vec::<String>::new()
    );

    // 4. Something attached between plan and apply (IAM's DeleteConflict, injected: the
    //    sandbox's IAM does not check attachments): the error says to run uninstall again.
    sb.inject_fault_with_message(
        "iam",
        "DeletePolicy",
        "DeleteConflict",
        409,
        1,
        "Cannot delete a policy attached to entities.",
    )
    .await;
    let out = sb.karpctl(&uninstall);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("destroying iam-policy arn:aws:iam::")
            && stderr.contains("iam:DeletePolicy failed: DeleteConflict: Cannot delete a policy attached to entities.; something was attached to it after the plan was read: run `karpctl uninstall` again"),
        "{stderr}"
    );

    // 5. The re-run as JSON: everything left is removed, exactly as planned; the other
    //    principals are kept, without karpctl's policy.
    let doc = karpctl_json(sb, &uninstall);
    assert_eq!(doc["cluster"], cluster, "{doc}");
    assert_plan_document(&doc["plan"]);
    assert_eq!(doc["plan"]["changes"], true, "{doc}");
    assert_applied_document(&doc);
    if let Some(warnings) = doc.get("warnings") {
        assert!(
            warnings.as_array().unwrap().iter().all(Value::is_string),
            "{doc}"
        );
    }
    assert_nothing_left(sb).await;
    assert_eq!(kube_snapshot(sb).await, before);
    let role = iam
        .list_attached_role_policies()
        .role_name(FOREIGN_ROLE)
        .send()
        .await
        .expect("the role that is not karpctl's is kept");
    assert!(role.attached_policies().is_empty(), "{role:?}");
    let user = iam
        .list_attached_user_policies()
        .user_name(FOREIGN_USER)
        .send()
        .await
        .expect("the user that is not karpctl's is kept");
    assert!(user.attached_policies().is_empty(), "{user:?}");

    // 6. Nothing left: the JSON says so and nothing is applied.
    let doc = karpctl_json(sb, &uninstall);
    assert_plan_document(&doc["plan"]);
    assert_eq!(doc["plan"]["changes"], false, "{doc}");
    assert!(doc.get("applied").is_none(), "{doc}");
    remove_foreign(&iam).await;
}

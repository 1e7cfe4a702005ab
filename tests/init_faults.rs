//! `karpctl init` failing at each of its steps, against the sandbox: for every step a fault
//! is injected — an AWS error in the protocol's own wire format from the sandbox's endpoint,
//! or a real admission denial from a ValidatingAdmissionPolicy for the Kubernetes steps —
//! and then:
//! - init exits 1 naming the step and the resource, having made the fault's call;
//! - `uninstall` from that partial state leaves nothing of karpctl's, and aws-auth and the
//!   Cluster Autoscaler exactly as they were;
//! - the same failure again, then a re-run without the fault converges to the same end state
//!   as an undisturbed init (`assert_converged`), after which a plan shows no changes.
//!
//! Also the `CONFIG_MAP` authentication mode end to end: a malformed aws-auth stops init
//! before anything changes; nodes join through an aws-auth
//! `mapRoles` row merged into a ConfigMap whose other rows and comments stay byte-for-byte,
//! a denied aws-auth update that converges on re-run, and uninstall giving aws-auth back
//! exactly as it was.
//!
//! One ordered test per concern (the sandbox has one EKS cluster); each starts from a clean
//! slate it makes itself and ends clean.

mod support;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::footprint::{
    ACCOUNT, NODE_ROLE, assert_converged, assert_nothing_left, kube_snapshot, reset,
};
use support::{Sandbox, eventually, sandbox, text};

/// The name of the admission policy (and its binding) a Kubernetes fault installs.
const DENY: &str = "karpctl-test-deny";
/// A ConfigMap name the policy also denies, so the test can tell when it is in force.
const PROBE: &str = "karpctl-test-deny-probe";

/// The two tests share the one cluster: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the cluster for one test and clears what an earlier (maybe failed) run left:
/// unconsumed faults, the admission policy, everything of karpctl's.
async fn clean_slate() -> tokio::sync::MutexGuard<'static, ()> {
    let one = ONE_AT_A_TIME.lock().await;
    let sb = sandbox();
    sb.clear_faults().await;
    lift(sb).await;
    reset(sb).await;
    one
}

/// How one fault is made.
enum Fault {
    /// The next `count` calls of `service:operation` answer `code` with HTTP `status`.
    Aws {
        service: &'static str,
        operation: &'static str,
        code: &'static str,
        status: u16,
        count: u32,
    },
    /// Creates and updates of `group`/`resources` objects named `name` are denied at admission.
    Kube {
        group: &'static str,
        resources: &'static [&'static str],
        name: &'static str,
    },
}

/// One step of init and the fault that breaks it.
struct Case {
    step: &'static str,
    fault: Fault,
    /// What init's error must say (the step's resource and the cause).
    expect: &'static [&'static str],
}

const fn denied(service: &'static str, operation: &'static str) -> Fault {
    Fault::Aws {
        service,
        operation,
        code: "AccessDenied",
        status: 403,
        count: 1,
    }
}

/// A fault per step of init, in the order init runs them (issue #4's numbering).
fn cases() -> Vec<Case> {
    vec![
        Case {
            step: "1. node role",
            fault: denied("iam", "CreateRole"),
            expect: &[
                "creating iam-role KarpenterNodeRole-sandbox",
                "access denied for iam:CreateRole",
            ],
        },
        Case {
            step: "1. node role's managed policies (a server error outlasting the retries)",
            fault: Fault::Aws {
                service: "iam",
                operation: "AttachRolePolicy",
                code: "ServiceFailure",
                status: 500,
                count: 3,
            },
            expect: &[
                "iam-role-policy-attachment KarpenterNodeRole-sandbox/",
                "iam:AttachRolePolicy failed: ServiceFailure",
            ],
        },
        Case {
            step: "2. interruption queue",
            fault: denied("sqs", "CreateQueue"),
            expect: &[
                "creating sqs-queue Karpenter-sandbox",
                "access denied for sqs:CreateQueue",
            ],
        },
        Case {
            step: "2. interruption rules",
            fault: denied("events", "PutRule"),
            expect: &[
                "eventbridge-rule Karpenter-sandbox-",
                "access denied for events:PutRule",
            ],
        },
        Case {
            step: "2. interruption rule targets (throttled past the retries)",
            fault: Fault::Aws {
                service: "events",
                operation: "PutTargets",
                code: "ThrottlingException",
                status: 400,
                count: 3,
            },
            expect: &["eventbridge-rule Karpenter-sandbox-", "PutTargets"],
        },
        Case {
            step: "3. controller policies",
            fault: denied("iam", "CreatePolicy"),
            expect: &[
                "creating iam-policy KarpenterController",
                "access denied for iam:CreatePolicy",
            ],
        },
        Case {
            step: "4. controller identity: the Pod Identity agent add-on",
            fault: Fault::Aws {
                service: "eks",
                operation: "CreateAddon",
                code: "AccessDeniedException",
                status: 403,
                count: 1,
            },
            expect: &[
                "eks-addon eks-pod-identity-agent",
                "access denied for eks:CreateAddon",
            ],
        },
        Case {
            step: "4. controller identity: the Pod Identity association",
            fault: Fault::Aws {
                service: "eks",
                operation: "CreatePodIdentityAssociation",
                code: "AccessDeniedException",
                status: 403,
                count: 1,
            },
            expect: &[
                "eks-pod-identity-association kube-system/karpenter",
                "access denied for eks:CreatePodIdentityAssociation",
            ],
        },
        Case {
            step: "5. Spot service-linked role",
            fault: denied("iam", "CreateServiceLinkedRole"),
            expect: &[
                "iam-service-linked-role AWSServiceRoleForEC2Spot",
                "access denied for iam:CreateServiceLinkedRole",
            ],
        },
        Case {
            step: "6. access entry",
            fault: Fault::Aws {
                service: "eks",
                operation: "CreateAccessEntry",
                code: "AccessDeniedException",
                status: 403,
                count: 1,
            },
            expect: &[
                "eks-access-entry arn:aws:iam::123456789012:role/KarpenterNodeRole-sandbox",
                "access denied for eks:CreateAccessEntry",
            ],
        },
        Case {
            step: "7. discovery tags",
            fault: Fault::Aws {
                service: "ec2",
                operation: "CreateTags",
                code: "UnauthorizedOperation",
                status: 403,
                count: 1,
            },
            expect: &["ec2-tags ", "CreateTags"],
        },
        Case {
            step: "8. CRDs",
            fault: Fault::Kube {
                group: "apiextensions.k8s.io",
                resources: &["customresourcedefinitions"],
                name: "nodepools.karpenter.sh",
            },
            expect: &["crd nodepools.karpenter.sh", DENY],
        },
        Case {
            step: "9. Cluster Autoscaler scaled to 0",
            fault: Fault::Kube {
                group: "apps",
                resources: &["deployments", "deployments/scale"],
                name: "cluster-autoscaler",
            },
            expect: &["deployment kube-system/cluster-autoscaler", DENY],
        },
        Case {
            step: "10. controller RBAC",
            fault: Fault::Kube {
                group: "rbac.authorization.k8s.io",
                resources: &["clusterroles"],
                name: "karpenter-core",
            },
            expect: &["clusterrole karpenter-core", DENY],
        },
        Case {
            step: "10. controller Deployment",
            fault: Fault::Kube {
                group: "apps",
                resources: &["deployments"],
                name: "karpenter",
            },
            expect: &["deployment kube-system/karpenter", DENY],
        },
        Case {
            step: "11. default NodePool",
            fault: Fault::Kube {
                group: "karpenter.sh",
                resources: &["nodepools"],
                name: "default",
            },
            expect: &["nodepool default", DENY],
        },
    ]
}

/// Installs the fault; returns what lifts it (Kubernetes faults stay until lifted, AWS
/// faults are one-shot).
async fn inject(sb: &Sandbox, fault: &Fault) {
    match fault {
        Fault::Aws {
            service,
            operation,
            code,
            status,
            count,
        } => {
            sb.inject_fault(service, operation, code, *status, *count)
                .await
        }
        Fault::Kube {
            group,
            resources,
            name,
        } => deny(sb, group, resources, name).await,
    }
}

/// A ValidatingAdmissionPolicy denying creates and updates of `name`, as a policy engine in
/// a user's cluster would; returns once the API server enforces it.
async fn deny(sb: &Sandbox, group: &str, resources: &[&str], name: &str) {
    let client = sb.kube().await;
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": DENY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [
                {"apiGroups": [group], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": resources},
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]},
            ]},
            "validations": [{
                "expression": format!("object.metadata.name != '{name}' && object.metadata.name != '{PROBE}'"),
                "message": format!("{DENY}: writes to {name} are denied"),
            }],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": DENY},
        "spec": {"policyName": DENY, "validationActions": ["Deny"]},
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    wait_enforced(sb, true).await;
}

/// Removes the admission policy, if any, and waits until the API server admits again.
async fn lift(sb: &Sandbox) {
    let client = sb.kube().await;
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(DENY, &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(client)
        .delete(DENY, &DeleteParams::default())
        .await;
    wait_enforced(sb, false).await;
}

/// Waits until a server-side dry-run create of the probe ConfigMap is denied (`enforced`) or
/// admitted (not).
async fn wait_enforced(sb: &Sandbox, enforced: bool) {
    let cms: Api<ConfigMap> = Api::namespaced(sb.kube().await, "default");
    let probe: ConfigMap = serde_json::from_value(json!({"metadata": {"name": PROBE}})).unwrap();
    eventually(
        &format!(
            "the admission policy to be {}",
            if enforced { "in force" } else { "gone" }
        ),
        Duration::from_secs(30),
        || {
            let cms = cms.clone();
            let probe = probe.clone();
            async move {
                let denied = cms
                    .create(
                        &PostParams {
                            dry_run: true,
                            ..Default::default()
                        },
                        &probe,
                    )
                    .await
                    .is_err();
                (denied == enforced).then_some(())
            }
        },
    )
    .await;
}

/// init with the fault in place: exit 1, the error naming the step's resource and cause, and
/// the fault actually reached (an AWS fault is consumed).
async fn init_fails(sb: &Sandbox, case: &Case) {
    inject(sb, &case.fault).await;
    let out = sb.karpctl(&["init", "--cluster", sb.cluster(), "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: init did not fail\n{}\n{stderr}",
        case.step,
        text(&out.stdout)
    );
    assert!(stderr.contains("step "), "{}: {stderr}", case.step);
    for want in case.expect {
        assert!(
            stderr.contains(want),
            "{}: missing {want:?} in\n{stderr}",
            case.step
        );
    }
    assert_eq!(
        sb.pending_faults().await,
        Vec::<serde_json::Value>::new(),
        "{}: the fault was never reached",
        case.step
    );
    lift(sb).await;
}

/// Uninstall from whatever state: success, nothing left, aws-auth and CA as before.
async fn uninstall_leaves_nothing(sb: &Sandbox, before: &(Option<String>, i32), what: &str) {
    sb.karpctl_ok(&["uninstall", "--cluster", sb.cluster(), "--yes"]);
    assert_nothing_left(sb).await;
    assert_eq!(
        &kube_snapshot(sb).await,
        before,
        "{what}: aws-auth data or the Cluster Autoscaler's replicas differ after uninstall"
    );
}

/// The Spot service-linked role and the Pod Identity agent add-on outlive uninstall (other
/// tools and workloads need them); the steps that create them are only reached without them.
async fn prepare(sb: &Sandbox, case: &Case) {
    let aws = sb.aws().await;
    if case.step.starts_with("5.") {
        // Looked up by path, as init does (moto names the role its own way).
        let iam = aws_sdk_iam::Client::new(&aws);
        let roles = iam
            .list_roles()
            .path_prefix("/aws-service-role/spot.amazonaws.com/")
            .send()
            .await
            .unwrap();
        for role in roles.roles() {
            iam.delete_service_linked_role()
                .role_name(role.role_name())
                .send()
                .await
                .unwrap();
        }
    }
    if case.step.contains("add-on") {
        let _ = aws_sdk_eks::Client::new(&aws)
            .delete_addon()
            .cluster_name(sb.cluster())
            .addon_name("eks-pod-identity-agent")
            .send()
            .await;
    }
}

#[tokio::test]
async fn a_failure_at_each_init_step_is_named_uninstalls_cleanly_and_converges_on_rerun() {
    let _one = clean_slate().await;
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    let before = kube_snapshot(sb).await;

    for case in cases() {
        eprintln!("== {}", case.step);
        prepare(sb, &case).await;
        init_fails(sb, &case).await;
        uninstall_leaves_nothing(sb, &before, case.step).await;

        prepare(sb, &case).await;
        init_fails(sb, &case).await;
        let stdout = sb.karpctl_ok(&["init", "--cluster", &cluster, "--yes"]);
        assert!(
            stdout.contains("Apply complete!"),
            "{}: {stdout}",
            case.step
        );
        assert_converged(sb).await;
        let out = sb.karpctl(&[
            "init",
            "--cluster",
            &cluster,
            "--plan",
            "--detailed-exitcode",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: changes left after the re-run\n{}",
            case.step,
            text(&out.stdout)
        );
        uninstall_leaves_nothing(sb, &before, case.step).await;
    }
}

/// The aws-auth ConfigMap as EKS and eksctl leave it, with a comment and a row of the user's
/// that must survive byte-for-byte.
fn aws_auth_with_comments() -> String {
    "# managed by hand: ask #platform before editing\n\
     - rolearn: arn:aws:iam::123456789012:role/system-node-role\n  \
     username: system:node:{{EC2PrivateDNSName}}\n  \
     groups:\n    - system:bootstrappers\n    - system:nodes\n\
     # the CI runners' role\n\
     - rolearn: arn:aws:iam::123456789012:role/ci-runner\n  \
     username: ci\n  \
     groups: [\"ci:deployers\"]\n"
        .to_string()
}

#[tokio::test]
async fn config_map_mode_merges_one_aws_auth_row_and_gives_aws_auth_back() {
    let _one = clean_slate().await;
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    let cms: Api<ConfigMap> = Api::namespaced(sb.kube().await, "kube-system");
    let original = cms.get("aws-auth").await.unwrap().data;
    sb.set_auth_mode("CONFIG_MAP").await;
    // Whatever happens below, the cluster goes back to the sandbox's mode and aws-auth.
    struct Restore(Option<std::collections::BTreeMap<String, String>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let data = self.0.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    let sb = sandbox();
                    sb.set_auth_mode("API_AND_CONFIG_MAP").await;
                    let cms: Api<ConfigMap> = Api::namespaced(sb.kube().await, "kube-system");
                    let _ = cms
                        .patch(
                            "aws-auth",
                            &PatchParams::default(),
                            &Patch::Merge(json!({"data": data})),
                        )
                        .await;
                });
            })
            .join()
            .unwrap();
        }
    }
    let _restore = Restore(original.clone());

    // A malformed aws-auth stops init before anything is changed, naming the fix.
    cms.patch(
        "aws-auth",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"mapRoles": "- rolearn: [unclosed\n"}})),
    )
    .await
    .unwrap();
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the aws-auth ConfigMap's mapRoles is not valid YAML")
            && stderr.contains("kubectl edit configmap aws-auth -n kube-system"),
        "{stderr}"
    );
    assert!(
        aws_sdk_iam::Client::new(&sb.aws().await)
            .get_role()
            .role_name(NODE_ROLE)
            .send()
            .await
            .is_err(),
        "init changed the account before finding aws-auth malformed"
    );
    assert_eq!(
        cms.get("aws-auth").await.unwrap().data.unwrap()["mapRoles"],
        "- rolearn: [unclosed\n"
    );

    let map_roles = aws_auth_with_comments();
    cms.patch(
        "aws-auth",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"mapRoles": map_roles}})),
    )
    .await
    .unwrap();
    let before = kube_snapshot(sb).await;

    // The plan says aws-auth, not an access entry.
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--plan"]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{plan}\n{}", text(&out.stderr));
    assert!(plan.contains("authentication mode CONFIG_MAP"), "{plan}");
    assert!(plan.contains("aws-auth"), "{plan}");
    assert!(!plan.contains("+ eks-access-entry"), "{plan}");

    // A denied aws-auth update fails the step, names it, and changes nothing in aws-auth.
    let case = Case {
        step: "6. aws-auth row (CONFIG_MAP mode)",
        fault: Fault::Kube {
            group: "",
            resources: &["configmaps"],
            name: "aws-auth",
        },
        expect: &["aws-auth", DENY],
    };
    init_fails(sb, &case).await;
    assert_eq!(
        cms.get("aws-auth").await.unwrap().data.unwrap()["mapRoles"],
        map_roles
    );
    uninstall_leaves_nothing(sb, &before, case.step).await;

    // Fail again, then converge: exactly one row added at the end; everything else,
    // comments included, byte-for-byte.
    init_fails(sb, &case).await;
    sb.karpctl_ok(&["init", "--cluster", &cluster, "--yes"]);
    let merged = cms.get("aws-auth").await.unwrap().data.unwrap()["mapRoles"].clone();
    assert!(merged.starts_with(&map_roles), "{merged}");
    let added = &merged[map_roles.len()..];
    let node_role = format!("arn:aws:iam::{ACCOUNT}:role/{NODE_ROLE}");
    assert_eq!(added.matches("rolearn:").count(), 1, "{added}");
    assert!(added.contains(&node_role), "{added}");
    assert!(
        added.contains("system:node:{{EC2PrivateDNSName}}"),
        "{added}"
    );
    assert!(added.contains("system:nodes"), "{added}");
    assert!(added.contains("system:bootstrappers"), "{added}");
    let eks = aws_sdk_eks::Client::new(&sb.aws().await);
    assert!(
        eks.describe_access_entry()
            .cluster_name(&cluster)
            .principal_arn(&node_role)
            .send()
            .await
            .is_err(),
        "an access entry was created in CONFIG_MAP mode"
    );

    // A re-run changes nothing: no duplicate row.
    let stdout = sb.karpctl_ok(&["init", "--cluster", &cluster, "--yes"]);
    assert!(stdout.starts_with("No changes."), "{stdout}");
    assert_eq!(
        cms.get("aws-auth").await.unwrap().data.unwrap()["mapRoles"],
        merged
    );

    // Uninstall removes only our row: aws-auth exactly as before.
    uninstall_leaves_nothing(sb, &before, "CONFIG_MAP uninstall").await;
    assert_eq!(
        cms.get("aws-auth").await.unwrap().data.unwrap()["mapRoles"],
        map_roles
    );
}

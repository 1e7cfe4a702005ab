//! `karpctl doctor` as pure data: the checks of an installed cluster, decided from what was
//! read ([`Facts`]: init's own view of the AWS side, [`Current`], plus the cluster's
//! Karpenter objects and the controller) against what `init` wants ([`Desired`]). Each check
//! passes or fails with what it found and, on failure, the fix. Reading happens in
//! `commands/doctor.rs`; nothing here does I/O, so every verdict is tested as plain data.
//!
//! The checks, in the order a broken installation is usually repaired: IAM for nodes, the
//! controller's identity, node access, discovery tags, CRDs, the controller, NodePools,
//! EC2NodeClasses, the interruption queue, its rules.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::plan::init::{Current, DISCOVERY_TAG, Desired, IdentityMode};

/// One line of doctor's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable name, for scripts (`interruption-queue`).
    pub name: &'static str,
    pub ok: bool,
    /// What was found (on success, briefly what was checked).
    pub detail: String,
    /// How to repair it; only on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A condition as doctor reads it off an object's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
pub struct NodePoolFacts {
    pub name: String,
    pub node_class: String,
    pub ready: Option<Condition>,
}

#[derive(Debug, Clone, Default)]
pub struct NodeClassFacts {
    pub name: String,
    /// `spec.role` (empty when the class names an instance profile instead).
    pub role: String,
    /// Whether `spec.role` exists in IAM (true when there is no role to look up).
    pub role_exists: bool,
    /// `status.instanceProfile`, and the roles IAM says it holds (None: profile not found).
    pub instance_profile: Option<(String, Option<Vec<String>>)>,
    pub ready: Option<Condition>,
}

/// A served CRD: its versions and the spec hash karpctl annotated it with.
#[derive(Debug, Clone, Default)]
pub struct CrdFacts {
    pub served: Vec<String>,
    pub storage: Option<String>,
    pub hash: String,
}

/// Everything doctor read, beyond init's [`Current`].
#[derive(Debug, Clone)]
pub struct Facts {
    pub current: Current,
    /// Each of karpctl's CRDs that exists, by name.
    pub crds: BTreeMap<String, CrdFacts>,
    /// The controller Deployment's (desired replicas, ready replicas), when it exists.
    pub deployment: Option<(i32, i32)>,
    /// The Lease holder, or why none leads.
    pub leader: Result<String, String>,
    /// IRSA: the service account's `eks.amazonaws.com/role-arn` annotation.
    pub service_account_role: Option<String>,
    pub node_pools: Vec<NodePoolFacts>,
    pub node_classes: Vec<NodeClassFacts>,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// `init` repairs everything it created; most fixes are a re-run.
fn rerun_init(d: &Desired) -> String {
    format!(
        "run `karpctl init --cluster {} --yes` (it re-creates only what is missing or changed)",
        d.cluster.name
    )
}

pub fn checks(d: &Desired, f: &Facts) -> Vec<Check> {
    vec![
        node_role(d, f),
        controller_identity(d, f),
        node_access(d, f),
        discovery_tags(d, f),
        crds(d, f),
        controller(d, f),
        node_pools(f),
        node_classes(d, f),
        interruption_queue(d, f),
        interruption_rules(d, f),
    ]
}

fn node_role(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "node-role";
    let Some(role) = &f.current.node_role else {
        return fail(
            NAME,
            format!("IAM role {} does not exist", d.node_role.name),
            rerun_init(d),
        );
    };
    let missing: Vec<&String> = d
        .node_role
        .policies
        .iter()
        .filter(|p| !role.attached.contains(*p))
        .collect();
    if !missing.is_empty() {
        return fail(
            NAME,
            format!(
                "IAM role {} lacks {}",
                d.node_role.name,
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            rerun_init(d),
        );
    }
    if !role.trust.to_string().contains("ec2.amazonaws.com") {
        return fail(
            NAME,
            format!(
                "IAM role {} cannot be assumed by EC2 instances",
                d.node_role.name
            ),
            rerun_init(d),
        );
    }
    for class in &f.node_classes {
        if !class.role.is_empty() && !class.role_exists {
            return fail(
                NAME,
                format!(
                    "EC2NodeClass {} names IAM role {}, which does not exist in account {}",
                    class.name, class.role, d.cluster.account
                ),
                format!(
                    "set spec.role of EC2NodeClass {} to {}, the node role karpctl init created",
                    class.name, d.node_role.name
                ),
            );
        }
        if let Some((profile, roles)) = &class.instance_profile {
            match roles {
                None => {
                    return fail(
                        NAME,
                        format!(
                            "instance profile {profile} of EC2NodeClass {} does not exist",
                            class.name
                        ),
                        "the controller re-creates it: check its log for IAM errors".to_string(),
                    );
                }
                Some(roles) if !class.role.is_empty() && !roles.contains(&class.role) => {
                    return fail(
                        NAME,
                        format!(
                            "instance profile {profile} of EC2NodeClass {} holds {:?}, not {}",
                            class.name, roles, class.role
                        ),
                        format!(
                            "aws iam add-role-to-instance-profile --instance-profile-name {profile} --role-name {}",
                            class.role
                        ),
                    );
                }
                Some(_) => {}
            }
        }
    }
    pass(
        NAME,
        format!(
            "{} exists for EC2 with its {} policies; {} EC2NodeClass instance profile(s) hold their role",
            d.node_role.name,
            d.node_role.policies.len(),
            f.node_classes
                .iter()
                .filter(|c| c.instance_profile.is_some())
                .count()
        ),
    )
}

fn controller_identity(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "controller-identity";
    let sa = format!("{}/{}", d.namespace, d.service_account);
    let Some(role) = &f.current.controller_role else {
        return fail(
            NAME,
            format!("IAM role {} does not exist", d.controller_role.name),
            rerun_init(d),
        );
    };
    if role.trust != d.controller_role.trust {
        return fail(
            NAME,
            format!(
                "the trust policy of {} does not let service account {sa} assume it ({})",
                d.controller_role.name, d.identity
            ),
            rerun_init(d),
        );
    }
    let missing = d
        .controller_role
        .policies
        .iter()
        .filter(|p| !role.attached.contains(*p))
        .count();
    if missing > 0 {
        return fail(
            NAME,
            format!(
                "{missing} of the controller policies are not attached to {}",
                d.controller_role.name
            ),
            rerun_init(d),
        );
    }
    match d.identity {
        IdentityMode::PodIdentity => match &f.current.pod_identity_association {
            None => fail(
                NAME,
                format!(
                    "no EKS Pod Identity association for service account {sa}: the controller gets no AWS credentials"
                ),
                rerun_init(d),
            ),
            Some(a) if a.role_arn != d.controller_role.arn => fail(
                NAME,
                format!(
                    "the Pod Identity association for {sa} names {}, not {}",
                    a.role_arn, d.controller_role.arn
                ),
                rerun_init(d),
            ),
            Some(a) => pass(
                NAME,
                format!(
                    "Pod Identity association {} gives {sa} role {}",
                    a.id, d.controller_role.name
                ),
            ),
        },
        IdentityMode::Irsa => {
            if !f.current.oidc_provider {
                return fail(
                    NAME,
                    "the cluster's OIDC issuer is not an IAM OIDC provider".to_string(),
                    rerun_init(d),
                );
            }
            if f.service_account_role.as_deref() != Some(d.controller_role.arn.as_str()) {
                return fail(
                    NAME,
                    format!(
                        "service account {sa} is annotated eks.amazonaws.com/role-arn={}, not {}",
                        f.service_account_role.as_deref().unwrap_or("(none)"),
                        d.controller_role.arn
                    ),
                    rerun_init(d),
                );
            }
            pass(
                NAME,
                format!("IRSA: {sa} assumes {}", d.controller_role.name),
            )
        }
    }
}

fn node_access(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "node-access";
    if d.cluster.api_access() {
        return match f.current.access_entry.as_deref() {
            Some("EC2_LINUX") => pass(
                NAME,
                format!("EC2_LINUX access entry for {}", d.node_role.arn),
            ),
            Some(other) => fail(
                NAME,
                format!(
                    "the access entry for {} has type {other}, not EC2_LINUX",
                    d.node_role.arn
                ),
                rerun_init(d),
            ),
            None => fail(
                NAME,
                format!(
                    "no access entry for {}: nodes Karpenter launches cannot join",
                    d.node_role.arn
                ),
                rerun_init(d),
            ),
        };
    }
    let rows = f.current.aws_auth.as_deref().unwrap_or_default();
    let mapped = crate::kube::aws_auth::has_node_role(rows, &d.node_role.arn);
    if mapped {
        pass(
            NAME,
            format!("aws-auth maps {} to system:nodes", d.node_role.arn),
        )
    } else {
        fail(
            NAME,
            format!(
                "aws-auth has no system:nodes row for {}: nodes Karpenter launches cannot join",
                d.node_role.arn
            ),
            rerun_init(d),
        )
    }
}

fn discovery_tags(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "discovery-tags";
    let untagged: Vec<&str> = d
        .discovery_targets
        .iter()
        .filter(|id| {
            f.current
                .resource_tags
                .get(*id)
                .and_then(|t| t.get(DISCOVERY_TAG))
                != Some(&d.cluster.name)
        })
        .map(String::as_str)
        .collect();
    if !untagged.is_empty() {
        return fail(
            NAME,
            format!(
                "{} lack{} the tag {DISCOVERY_TAG}={}; EC2NodeClasses selecting by it will not use them",
                untagged.join(", "),
                if untagged.len() == 1 { "s" } else { "" },
                d.cluster.name
            ),
            format!(
                "aws ec2 create-tags --resources {} --tags Key={DISCOVERY_TAG},Value={} (or re-run init)",
                untagged.join(" "),
                d.cluster.name
            ),
        );
    }
    pass(
        NAME,
        format!(
            "{} subnets and security groups carry {DISCOVERY_TAG}={}",
            d.discovery_targets.len(),
            d.cluster.name
        ),
    )
}

fn crds(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "crds";
    for (name, hash) in &d.crds {
        let Some(crd) = f.crds.get(name) else {
            return fail(NAME, format!("CRD {name} is not installed"), rerun_init(d));
        };
        if !crd.served.iter().any(|v| v == "v1") || crd.storage.as_deref() != Some("v1") {
            return fail(
                NAME,
                format!(
                    "CRD {name} serves {:?} and stores {}; this controller needs v1 served and stored",
                    crd.served,
                    crd.storage.as_deref().unwrap_or("nothing")
                ),
                rerun_init(d),
            );
        }
        if &crd.hash != hash {
            return fail(
                NAME,
                format!(
                    "CRD {name} is not the version this karpctl ({}) ships",
                    env!("CARGO_PKG_VERSION")
                ),
                rerun_init(d),
            );
        }
    }
    pass(
        NAME,
        format!(
            "{} CRDs at karpctl {}'s version, v1 served and stored",
            d.crds.len(),
            env!("CARGO_PKG_VERSION")
        ),
    )
}

fn controller(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "controller";
    let deployment = format!("deployment {}/karpenter", d.namespace);
    match f.deployment {
        None => return fail(NAME, format!("{deployment} does not exist"), rerun_init(d)),
        Some((want, ready)) if ready < want.max(1) => {
            return fail(
                NAME,
                format!("{deployment}: {ready} of {want} replicas Ready"),
                format!("kubectl -n {} describe deployment karpenter", d.namespace),
            );
        }
        Some(_) => {}
    }
    match &f.leader {
        Ok(holder) => pass(NAME, format!("{deployment} Ready; {holder} leads")),
        Err(why) => fail(
            NAME,
            why.clone(),
            format!(
                "kubectl -n {} logs deployment/karpenter (is a replica running and able to reach the API server?)",
                d.namespace
            ),
        ),
    }
}

fn not_ready(kind: &str, name: &str, c: Option<&Condition>) -> Option<String> {
    match c {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!(
            "{kind} {name} is not Ready: {}{}",
            c.reason,
            if c.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.message)
            }
        )),
        None => Some(format!("{kind} {name} has no Ready condition yet")),
    }
}

fn node_pools(f: &Facts) -> Check {
    const NAME: &str = "node-pools";
    let classes: Vec<&str> = f.node_classes.iter().map(|c| c.name.as_str()).collect();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for pool in &f.node_pools {
        if !classes.contains(&pool.node_class.as_str()) {
            problems.push(format!(
                "NodePool {} refers to EC2NodeClass {}, which does not exist",
                pool.name, pool.node_class
            ));
            fixes.push(format!(
                "create EC2NodeClass {} or point spec.template.spec.nodeClassRef of NodePool {} at one of: {}",
                pool.node_class,
                pool.name,
                classes.join(", ")
            ));
        } else if let Some(p) = not_ready("NodePool", &pool.name, pool.ready.as_ref()) {
            problems.push(p);
            fixes.push(format!("kubectl describe nodepool {}", pool.name));
        }
    }
    if problems.is_empty() {
        pass(NAME, format!("{} NodePools Ready", f.node_pools.len()))
    } else {
        fail(NAME, problems.join("; "), fixes.join("; "))
    }
}

fn node_classes(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "node-classes";
    let mut problems = Vec::new();
    for class in &f.node_classes {
        if let Some(p) = not_ready("EC2NodeClass", &class.name, class.ready.as_ref()) {
            problems.push(p);
        }
    }
    if f.node_classes.is_empty() {
        return fail(
            NAME,
            "no EC2NodeClass exists: NodePools have nothing to launch from".to_string(),
            rerun_init(d),
        );
    }
    if problems.is_empty() {
        pass(
            NAME,
            format!("{} EC2NodeClasses Ready", f.node_classes.len()),
        )
    } else {
        fail(
            NAME,
            problems.join("; "),
            "kubectl describe ec2nodeclass NAME: its conditions name the selector or role at fault"
                .to_string(),
        )
    }
}

/// Whether a queue policy lets EventBridge send: an Allow for `events.amazonaws.com` with
/// `sqs:SendMessage` (or `sqs:*`).
fn eventbridge_may_send(policy: &Value) -> bool {
    let statements = match &policy["Statement"] {
        Value::Array(s) => s.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => Vec::new(),
    };
    statements.iter().any(|s| {
        let service = &s["Principal"]["Service"];
        let names_events = service == "events.amazonaws.com"
            || service
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "events.amazonaws.com"));
        let action = &s["Action"];
        let sends = |v: &Value| v == "sqs:SendMessage" || v == "sqs:*";
        s["Effect"] == "Allow"
            && names_events
            && (sends(action) || action.as_array().is_some_and(|a| a.iter().any(sends)))
    })
}

fn interruption_queue(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "interruption-queue";
    let Some(queue) = &f.current.queue else {
        return fail(
            NAME,
            format!(
                "SQS queue {} does not exist: spot interruptions and instance stops go unnoticed",
                d.queue_name
            ),
            rerun_init(d),
        );
    };
    let policy: Value = queue
        .attributes
        .get("Policy")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    if !eventbridge_may_send(&policy) {
        return fail(
            NAME,
            format!(
                "the policy of queue {} does not let events.amazonaws.com send messages",
                d.queue_name
            ),
            rerun_init(d),
        );
    }
    if let Some(key) = queue
        .attributes
        .get("KmsMasterKeyId")
        .filter(|k| !k.is_empty())
    {
        return fail(
            NAME,
            format!(
                "queue {} is encrypted with KMS key {key}; EventBridge can only write to it if the key policy lets events.amazonaws.com use it",
                d.queue_name
            ),
            "use SQS-managed encryption (SqsManagedSseEnabled=true) or grant events.amazonaws.com kms:GenerateDataKey and kms:Decrypt on the key".to_string(),
        );
    }
    pass(
        NAME,
        format!("{} exists and EventBridge may send to it", d.queue_name),
    )
}

fn interruption_rules(d: &Desired, f: &Facts) -> Check {
    const NAME: &str = "interruption-rules";
    let mut problems = Vec::new();
    for spec in &d.rules {
        match f.current.rules.get(&spec.name) {
            None => problems.push(format!("rule {} does not exist", spec.name)),
            Some(rule) if !rule.enabled => problems.push(format!("rule {} is disabled", spec.name)),
            Some(rule) if rule.pattern != spec.pattern => problems.push(format!(
                "rule {} matches {}, not {}",
                spec.name, rule.pattern, spec.pattern
            )),
            Some(rule) if !rule.targets.iter().any(|(_, arn)| *arn == d.queue_arn) => problems
                .push(format!(
                    "rule {} does not target queue {}",
                    spec.name, d.queue_name
                )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        pass(
            NAME,
            format!(
                "all {} interruption rules are enabled and target {}",
                d.rules.len(),
                d.queue_name
            ),
        )
    } else {
        fail(NAME, problems.join("; "), rerun_init(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::init::Options;
    use crate::plan::init::tests::{cluster, converged};

    fn desired() -> Desired {
        Desired::new(cluster(), &Options::default()).unwrap()
    }

    fn ready() -> Option<Condition> {
        Some(Condition {
            status: "True".into(),
            ..Condition::default()
        })
    }

    /// The facts of a healthy installation: what a completed init leaves, a running
    /// controller, and the default NodePool and EC2NodeClass Ready.
    fn healthy(d: &Desired) -> Facts {
        Facts {
            current: converged(d),
            crds: d
                .crds
                .iter()
                .map(|(name, hash)| {
                    (
                        name.clone(),
                        CrdFacts {
                            served: vec!["v1".into()],
                            storage: Some("v1".into()),
                            hash: hash.clone(),
                        },
                    )
                })
                .collect(),
            deployment: Some((2, 2)),
            leader: Ok("karpenter-abc".into()),
            service_account_role: None,
            node_pools: vec![NodePoolFacts {
                name: "default".into(),
                node_class: "default".into(),
                ready: ready(),
            }],
            node_classes: vec![NodeClassFacts {
                name: "default".into(),
                role: d.node_role.name.clone(),
                role_exists: true,
                instance_profile: Some(("profile-1".into(), Some(vec![d.node_role.name.clone()]))),
                ready: ready(),
            }],
        }
    }

    fn failing(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
    }

    #[test]
    fn a_healthy_installation_passes_every_check() {
        let d = desired();
        let checks = checks(&d, &healthy(&d));
        assert_eq!(failing(&checks), Vec::<&str>::new(), "{checks:#?}");
        assert_eq!(checks.len(), 10);
    }

    /// Each fault fails exactly its own check, and says how to fix it.
    #[test]
    fn each_fault_fails_exactly_its_check() {
        let d = desired();
        type Plant = fn(&Desired, &mut Facts);
        let faults: &[(&str, Plant)] = &[
            ("node-role", |d, f| {
                f.current.node_role = None;
                let _ = d;
            }),
            ("node-role", |_, f| {
                f.node_classes[0].role = "KarpenterNodeRole-demo-tutorial".into();
                f.node_classes[0].role_exists = false;
                f.node_classes[0].instance_profile = None;
            }),
            ("controller-identity", |_, f| {
                f.current.pod_identity_association = None
            }),
            ("controller-identity", |_, f| {
                f.current.controller_role.as_mut().unwrap().trust = serde_json::json!({})
            }),
            ("node-access", |_, f| f.current.access_entry = None),
            ("discovery-tags", |d, f| {
                let first = &d.discovery_targets[0];
                f.current
                    .resource_tags
                    .get_mut(first)
                    .unwrap()
                    .remove(DISCOVERY_TAG);
            }),
            ("crds", |d, f| {
                let name = d.crds.keys().next().unwrap().clone();
                f.crds.get_mut(&name).unwrap().hash = "old".into();
            }),
            ("controller", |_, f| {
                f.leader = Err("Lease kube-system/karpenter-leader-election has no holder".into())
            }),
            ("controller", |_, f| f.deployment = Some((2, 0))),
            ("node-pools", |_, f| {
                f.node_pools.push(NodePoolFacts {
                    name: "broken".into(),
                    node_class: "missing".into(),
                    ready: None,
                })
            }),
            ("node-classes", |_, f| {
                f.node_classes[0].ready = Some(Condition {
                    status: "False".into(),
                    reason: "SubnetsNotFound".into(),
                    message: String::new(),
                })
            }),
            ("interruption-queue", |_, f| f.current.queue = None),
            ("interruption-queue", |_, f| {
                f.current
                    .queue
                    .as_mut()
                    .unwrap()
                    .attributes
                    .insert("Policy".into(), "{}".into());
            }),
            ("interruption-queue", |_, f| {
                f.current
                    .queue
                    .as_mut()
                    .unwrap()
                    .attributes
                    .insert("KmsMasterKeyId".into(), "alias/mine".into());
            }),
            ("interruption-rules", |d, f| {
                f.current.rules.remove(&d.rules[2].name);
            }),
            ("interruption-rules", |d, f| {
                f.current
                    .rules
                    .get_mut(&d.rules[0].name)
                    .unwrap()
                    .targets
                    .clear();
            }),
        ];
        for (i, (want, plant)) in faults.iter().enumerate() {
            let mut facts = healthy(&d);
            plant(&d, &mut facts);
            let checks = checks(&d, &facts);
            assert_eq!(failing(&checks), [*want], "fault {i}: {checks:#?}");
            let failed = checks.iter().find(|c| !c.ok).unwrap();
            assert!(
                failed.fix.as_deref().is_some_and(|f| !f.is_empty()),
                "fault {i}"
            );
        }
    }

    #[test]
    fn on_a_config_map_cluster_node_access_is_the_aws_auth_row() {
        let mut c = cluster();
        c.authentication_mode = "CONFIG_MAP".into();
        let d = Desired::new(c, &Options::default()).unwrap();
        let mut f = healthy(&d);
        f.current.access_entry = None;
        f.current.aws_auth = Some(format!(
            "- rolearn: {}\n  username: system:node:{{{{EC2PrivateDNSName}}}}\n  groups:\n    - system:bootstrappers\n    - system:nodes\n",
            d.node_role.arn
        ));
        assert!(node_access(&d, &f).ok, "{:?}", node_access(&d, &f));
        f.current.aws_auth =
            Some("- rolearn: arn:aws:iam::1:role/other\n  groups: [system:nodes]\n".into());
        let check = node_access(&d, &f);
        assert!(
            !check.ok && check.detail.contains(&d.node_role.arn),
            "{check:?}"
        );
    }

    #[test]
    fn an_old_tutorials_role_is_named_with_the_role_init_created() {
        let d = desired();
        let mut f = healthy(&d);
        f.node_classes[0].role = "KarpenterNodeRole-demo".into();
        f.node_classes[0].role_exists = false;
        let check = node_role(&d, &f);
        assert!(!check.ok);
        assert!(check.detail.contains("KarpenterNodeRole-demo"), "{check:?}");
        assert!(
            check.fix.unwrap().contains(&d.node_role.name),
            "the fix names the role init created"
        );
    }
}

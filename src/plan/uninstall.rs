//! `karpctl uninstall` as pure data: what of karpctl's is still there ([`Found`]) and
//! [`plan`], which yields the operations ([`UninstallOp`]) that remove it — only what karpctl
//! owns (its tags, labels and markers), in an order that leaves nothing behind: the Cluster
//! Autoscaler restored first, then the CRDs, node access, discovery tags, the controller's
//! identity, role and policies, the interruption rules and queue, and the node role last.
//! Nothing found yields no items, so a second run plans "No changes.". What IAM requires
//! before a delete is planned with it, and named when it touches something not karpctl's:
//! a policy of ours is detached from every role, user and group (someone else's included),
//! a role of ours loses inline policies someone added.
//! The Spot service-linked role and the Pod Identity agent add-on are shared account and
//! cluster infrastructure and are never planned. Nothing here talks to AWS or Kubernetes.

use std::collections::BTreeMap;

use super::init::{Autoscaler, DISCOVERY_OWNER_TAG, DISCOVERY_TAG, Tags};
use super::{Action, Item, Plan, Resource};
use crate::kube::aws_auth::{self, AwsAuthError, Merge};

pub use super::init::owned;

/// An IAM role as found: its tags, attached policies, inline policies (someone else's
/// additions: karpctl adds none) and instance profiles it is in.
#[derive(Debug, Clone, Default)]
pub struct FoundRole {
    pub name: String,
    pub tags: Tags,
    pub attached: Vec<String>,
    pub inline_policies: Vec<String>,
    pub instance_profiles: Vec<String>,
}

/// A principal a managed policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attachment {
    Role(String),
    User(String),
    Group(String),
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attachment::Role(n) => write!(f, "role {n}"),
            Attachment::User(n) => write!(f, "user {n}"),
            Attachment::Group(n) => write!(f, "group {n}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct FoundRule {
    pub name: String,
    pub target_ids: Vec<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default)]
pub struct FoundQueue {
    pub name: String,
    pub url: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default)]
pub struct FoundPolicy {
    pub arn: String,
    /// Non-default versions (must go before the policy).
    pub other_versions: Vec<String>,
    /// Every role, user and group it is attached to (it must be detached from each first).
    pub attached_to: Vec<Attachment>,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default)]
pub struct FoundAssociation {
    pub id: String,
    pub role_arn: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default)]
pub struct FoundAccessEntry {
    pub principal: String,
    pub kind: String,
    pub tags: Tags,
}

/// Everything karpctl may have left in the account and the cluster, as discovery read it.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub cluster: String,
    /// `data` of the karpctl-state ConfigMap (None when the ConfigMap does not exist).
    pub recorded: Option<BTreeMap<String, String>>,
    /// Deployments running the Cluster Autoscaler, with their current replicas.
    pub autoscalers: Vec<Autoscaler>,
    /// CRDs by name, with whether they carry karpctl's managed-by label.
    pub crds: BTreeMap<String, bool>,
    pub access_entry: Option<FoundAccessEntry>,
    /// `mapRoles` of aws-auth (read on CONFIG_MAP clusters).
    pub aws_auth: Option<String>,
    /// The node role's ARN as karpctl names it (for the access entry and aws-auth row).
    pub node_role_arn: String,
    /// Tags of every subnet and security group init may have tagged.
    pub resource_tags: BTreeMap<String, Tags>,
    pub association: Option<FoundAssociation>,
    /// The cluster's OIDC provider (ARN, tags), when it exists.
    pub oidc_provider: Option<(String, Tags)>,
    pub controller_role: Option<FoundRole>,
    pub policies: Vec<FoundPolicy>,
    pub rules: Vec<FoundRule>,
    pub queue: Option<FoundQueue>,
    pub node_role: Option<FoundRole>,
    /// Every NodePool and EC2NodeClass (when their CRDs are served): the controller must
    /// drain and terminate their nodes before it goes.
    pub node_pools: Vec<String>,
    pub node_classes: Vec<String>,
    /// NodeClaims that exist now.
    pub node_claims: usize,
    /// The controller's objects: everything labelled managed by karpctl except CRDs and the
    /// karpctl-state ConfigMap.
    pub objects: Vec<FoundObject>,
}

/// A Kubernetes object found by label or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundObject {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl FoundObject {
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One call of the apply (to AWS, or to Kubernetes where marked).
#[derive(Debug, Clone, PartialEq)]
pub enum UninstallOp {
    /// Kubernetes: set a Deployment's replicas.
    ScaleDeployment {
        namespace: String,
        name: String,
        replicas: i32,
    },
    /// Kubernetes: drop a key of karpctl-state (the ConfigMap goes when empty).
    Forget {
        key: String,
    },
    /// Kubernetes: delete the karpctl-state ConfigMap.
    DeleteState,
    /// Kubernetes: delete one of karpctl's CRDs.
    DeleteCrd {
        name: String,
    },
    /// Kubernetes: delete an object; with `wait`, until it is gone (finalizers run).
    DeleteObject {
        object: FoundObject,
        wait: bool,
    },
    /// Kubernetes: wait until no NodeClaim is left (the controller terminates their nodes).
    WaitNodeClaimsGone,
    /// Kubernetes: write aws-auth `mapRoles` without our row (re-merged on fresh data).
    UnmapNodeRole {
        rolearn: String,
    },
    DeleteAccessEntry {
        cluster: String,
        principal: String,
    },
    DeleteTags {
        resource: String,
        keys: Vec<String>,
    },
    DeletePodIdentityAssociation {
        cluster: String,
        id: String,
    },
    DeleteOidcProvider {
        arn: String,
    },
    DetachRolePolicy {
        role: String,
        policy_arn: String,
    },
    DetachUserPolicy {
        user: String,
        policy_arn: String,
    },
    DetachGroupPolicy {
        group: String,
        policy_arn: String,
    },
    DeleteRolePolicy {
        role: String,
        name: String,
    },
    RemoveRoleFromInstanceProfile {
        role: String,
        profile: String,
    },
    DeleteRole {
        name: String,
    },
    DeletePolicyVersion {
        arn: String,
        version: String,
    },
    DeletePolicy {
        arn: String,
    },
    RemoveTargets {
        rule: String,
        ids: Vec<String>,
    },
    DeleteRule {
        name: String,
    },
    DeleteQueue {
        url: String,
    },
}

fn destroy(kind: &str, id: &str, reason: &str, ops: Vec<UninstallOp>) -> Item<UninstallOp> {
    Item::change(Resource::new(kind, id, Action::Delete, reason), ops)
}

const OURS: &str = "created by karpctl";

/// The uninstall plan, in apply order; only resources karpctl owns appear in it.
pub fn plan(f: &Found) -> Result<Plan<UninstallOp>, AwsAuthError> {
    let c = &f.cluster;
    let mut items = Vec::new();

    // NodePools first, while the controller still runs: it drains and terminates their
    // nodes; then the node classes (their finalizers delete instance profiles).
    for name in &f.node_pools {
        items.push(destroy(
            "nodepool",
            name,
            "the controller drains and terminates its nodes",
            vec![UninstallOp::DeleteObject {
                object: FoundObject {
                    api_version: "karpenter.sh/v1".into(),
                    kind: "NodePool".into(),
                    namespace: None,
                    name: name.clone(),
                },
                wait: true,
            }],
        ));
    }
    if f.node_claims > 0 || !f.node_pools.is_empty() {
        items.push(Item::change(
            Resource::new(
                "nodeclaims",
                "(all)",
                Action::Delete,
                format!(
                    "{} now; waited on until the controller has terminated every node",
                    f.node_claims
                ),
            ),
            vec![UninstallOp::WaitNodeClaimsGone],
        ));
    }
    for name in &f.node_classes {
        items.push(destroy(
            "ec2nodeclass",
            name,
            "no NodePool uses it any more",
            vec![UninstallOp::DeleteObject {
                object: FoundObject {
                    api_version: "karpenter.k8s.aws/v1".into(),
                    kind: "EC2NodeClass".into(),
                    namespace: None,
                    name: name.clone(),
                },
                wait: true,
            }],
        ));
    }
    // Then the controller: the Deployment first, so nothing acts on a half-removed setup.
    let mut objects = f.objects.clone();
    objects.sort_by_key(|o| (o.kind != "Deployment", o.kind == "Namespace"));
    for o in objects {
        items.push(destroy(
            &o.kind.to_ascii_lowercase(),
            &o.id(),
            "the controller's, labelled managed by karpctl",
            vec![UninstallOp::DeleteObject {
                wait: o.kind == "Namespace",
                object: o,
            }],
        ));
    }

    // Cluster Autoscaler: restore the replicas init recorded, then forget them.
    let recorded = f.recorded.clone().unwrap_or_default();
    let mut forgotten = 0;
    for (key, value) in &recorded {
        let Ok(was) = serde_json::from_str::<Autoscaler>(value) else {
            continue;
        };
        if key != &was.state_key() {
            continue;
        }
        let id = format!("{}/{}", was.namespace, was.name);
        let now = f
            .autoscalers
            .iter()
            .find(|a| a.namespace == was.namespace && a.name == was.name);
        let mut ops = Vec::new();
        let mut changes = Vec::new();
        // Only from the 0 karpctl set: a count someone changed since is theirs to keep.
        if let Some(now) = now
            && now.replicas == 0
            && was.replicas != 0
        {
            changes.push(format!("~ replicas: {} -> {}", now.replicas, was.replicas));
            ops.push(UninstallOp::ScaleDeployment {
                namespace: was.namespace.clone(),
                name: was.name.clone(),
                replicas: was.replicas,
            });
        }
        changes.push(format!("- karpctl-state {key}"));
        ops.push(UninstallOp::Forget { key: key.clone() });
        forgotten += 1;
        let reason = match now {
            None => "deployment gone; drop its record",
            Some(_) if ops.len() > 1 => {
                "restore the replicas recorded before karpctl scaled it to 0"
            }
            Some(_) => "not at karpctl's 0 (changed since, or was 0); kept, record dropped",
        };
        items.push(Item::change(
            Resource::new("deployment", id, Action::Update, reason).with_changes(changes),
            ops,
        ));
    }
    // init's settings go with the rest of the record; on their own when something else
    // (not karpctl's to restore) keeps the ConfigMap.
    let settings = super::init::SETTINGS_KEY;
    if recorded.contains_key(settings) {
        forgotten += 1;
        if forgotten < recorded.len() {
            items.push(destroy(
                "configmap-key",
                &format!("kube-system/karpctl-state[{settings}]"),
                "init's settings",
                vec![UninstallOp::Forget {
                    key: settings.into(),
                }],
            ));
        }
    }
    if f.recorded.is_some() && forgotten == recorded.len() {
        items.push(destroy(
            "configmap",
            "kube-system/karpctl-state",
            "karpctl's record; nothing left in it",
            vec![UninstallOp::DeleteState],
        ));
    }

    for (name, ours) in &f.crds {
        if *ours {
            items.push(destroy(
                "crd",
                name,
                "labelled managed by karpctl",
                vec![UninstallOp::DeleteCrd { name: name.clone() }],
            ));
        }
    }

    if let Some(e) = &f.access_entry
        && e.principal == f.node_role_arn
        && owned(&e.tags, c)
    {
        items.push(destroy(
            "eks-access-entry",
            &e.principal,
            &format!("{} entry for karpctl's node role, {OURS}", e.kind),
            vec![UninstallOp::DeleteAccessEntry {
                cluster: c.clone(),
                principal: e.principal.clone(),
            }],
        ));
    }
    // The row names karpctl's node role: removed unless that role exists and is not ours
    // (someone else's role of the same name, mapped by them).
    let node_role_ours = f.node_role.as_ref().is_none_or(|r| owned(&r.tags, c));
    if let Some(map_roles) = &f.aws_auth
        && !f.node_role_arn.is_empty()
        && node_role_ours
        && let Merge::Changed(_) = aws_auth::remove_role(map_roles, &f.node_role_arn)?
    {
        items.push(Item::change(
            Resource::new(
                "aws-auth-row",
                &f.node_role_arn,
                Action::Delete,
                "karpctl's node role row; every other row kept",
            ),
            vec![UninstallOp::UnmapNodeRole {
                rolearn: f.node_role_arn.clone(),
            }],
        ));
    }

    for (id, tags) in &f.resource_tags {
        if tags.get(DISCOVERY_OWNER_TAG) != Some(c) {
            continue;
        }
        let mut keys = vec![DISCOVERY_OWNER_TAG.to_string()];
        let mut changes = Vec::new();
        if tags.get(DISCOVERY_TAG) == Some(c) {
            keys.insert(0, DISCOVERY_TAG.to_string());
            changes.push(format!("- tag {DISCOVERY_TAG} = {c:?}"));
        }
        changes.push(format!("- tag {DISCOVERY_OWNER_TAG} = {c:?}"));
        items.push(Item::change(
            Resource::new(
                "ec2-tags",
                id,
                Action::Update,
                "discovery tag added by karpctl",
            )
            .with_changes(changes),
            vec![UninstallOp::DeleteTags {
                resource: id.clone(),
                keys,
            }],
        ));
    }

    if let Some(a) = &f.association
        && owned(&a.tags, c)
    {
        items.push(destroy(
            "eks-pod-identity-association",
            &a.id,
            &format!("{OURS} (role {})", a.role_arn),
            vec![UninstallOp::DeletePodIdentityAssociation {
                cluster: c.clone(),
                id: a.id.clone(),
            }],
        ));
    }
    if let Some((arn, tags)) = &f.oidc_provider
        && owned(tags, c)
    {
        items.push(destroy(
            "iam-oidc-provider",
            arn,
            OURS,
            vec![UninstallOp::DeleteOidcProvider { arn: arn.clone() }],
        ));
    }
    role_item(&mut items, f.controller_role.as_ref(), c);
    // The controller role's own item (just before) detaches our policies from it.
    let detached_already = f
        .controller_role
        .as_ref()
        .filter(|r| owned(&r.tags, c))
        .map(|r| Attachment::Role(r.name.clone()));
    for p in &f.policies {
        if owned(&p.tags, c) {
            items.push(policy_item(f, p, detached_already.as_ref()));
        }
    }
    for r in &f.rules {
        if !owned(&r.tags, c) {
            continue;
        }
        let mut ops = Vec::new();
        if !r.target_ids.is_empty() {
            ops.push(UninstallOp::RemoveTargets {
                rule: r.name.clone(),
                ids: r.target_ids.clone(),
            });
        }
        ops.push(UninstallOp::DeleteRule {
            name: r.name.clone(),
        });
        items.push(destroy("eventbridge-rule", &r.name, OURS, ops));
    }
    if let Some(q) = &f.queue
        && owned(&q.tags, c)
    {
        items.push(destroy(
            "sqs-queue",
            &q.name,
            OURS,
            vec![UninstallOp::DeleteQueue { url: q.url.clone() }],
        ));
    }
    role_item(&mut items, f.node_role.as_ref(), c);
    Ok(Plan::new(items))
}

/// A policy of ours: detached from everything it is attached to, its non-default versions
/// deleted, then the policy (IAM refuses DeletePolicy while either remains). A principal
/// that is not karpctl's loses it too — the policy only grants what karpctl's controller
/// needs for this cluster — and the plan names each one, so nobody learns it afterwards.
fn policy_item(
    f: &Found,
    p: &FoundPolicy,
    detached_already: Option<&Attachment>,
) -> Item<UninstallOp> {
    let ours = |a: &Attachment| match a {
        Attachment::Role(name) => [&f.controller_role, &f.node_role]
            .into_iter()
            .flatten()
            .any(|r| &r.name == name && owned(&r.tags, &f.cluster)),
        _ => false,
    };
    let mut ops = Vec::new();
    let mut foreign = Vec::new();
    let mut attached_to = p.attached_to.clone();
    attached_to.sort();
    attached_to.dedup();
    for a in attached_to.iter().filter(|a| Some(*a) != detached_already) {
        let policy_arn = p.arn.clone();
        ops.push(match a {
            Attachment::Role(role) => UninstallOp::DetachRolePolicy {
                role: role.clone(),
                policy_arn,
            },
            Attachment::User(user) => UninstallOp::DetachUserPolicy {
                user: user.clone(),
                policy_arn,
            },
            Attachment::Group(group) => UninstallOp::DetachGroupPolicy {
                group: group.clone(),
                policy_arn,
            },
        });
        if !ours(a) {
            foreign.push(a.to_string());
        }
    }
    ops.extend(
        p.other_versions
            .iter()
            .map(|v| UninstallOp::DeletePolicyVersion {
                arn: p.arn.clone(),
                version: v.clone(),
            }),
    );
    ops.push(UninstallOp::DeletePolicy { arn: p.arn.clone() });
    if foreign.is_empty() {
        return destroy("iam-policy", &p.arn, OURS, ops);
    }
    let reason = format!(
        "{OURS}; detaches it from {}, which {} not karpctl's",
        foreign.join(", "),
        if foreign.len() == 1 { "is" } else { "are" }
    );
    let changes = foreign
        .iter()
        .map(|a| format!("- attachment to {a} (not karpctl's; that principal is kept)"))
        .collect();
    Item::change(
        Resource::new("iam-policy", &p.arn, Action::Delete, reason).with_changes(changes),
        ops,
    )
}

/// A role of ours: out of its instance profiles, its policies detached (and any inline
/// policy someone added deleted), then deleted.
fn role_item(items: &mut Vec<Item<UninstallOp>>, role: Option<&FoundRole>, cluster: &str) {
    let Some(r) = role else { return };
    if !owned(&r.tags, cluster) {
        return;
    }
    let mut ops: Vec<UninstallOp> = r
        .instance_profiles
        .iter()
        .map(|p| UninstallOp::RemoveRoleFromInstanceProfile {
            role: r.name.clone(),
            profile: p.clone(),
        })
        .collect();
    ops.extend(r.attached.iter().map(|a| UninstallOp::DetachRolePolicy {
        role: r.name.clone(),
        policy_arn: a.clone(),
    }));
    ops.extend(
        r.inline_policies
            .iter()
            .map(|name| UninstallOp::DeleteRolePolicy {
                role: r.name.clone(),
                name: name.clone(),
            }),
    );
    ops.push(UninstallOp::DeleteRole {
        name: r.name.clone(),
    });
    let changes = r
        .inline_policies
        .iter()
        .map(|name| format!("- inline policy {name} (not karpctl's; deleted with the role)"))
        .collect();
    items.push(Item::change(
        Resource::new("iam-role", &r.name, Action::Delete, OURS).with_changes(changes),
        ops,
    ));
}

/// Something tagged for the cluster that uninstall does not delete, reported as a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub kind: String,
    pub id: String,
    pub tags: Tags,
}

/// The final sweep's warnings: anything still tagged as karpctl's for this cluster, or
/// made by Karpenter for it (`kubernetes.io/cluster/<name>=owned` with a
/// `karpenter.sh/nodepool` tag, as instances carry, or a `karpenter.k8s.aws/ec2nodeclass`
/// tag, as launch templates and instance profiles carry). Nothing is deleted.
pub fn leftovers(cluster: &str, tagged: &[Leftover]) -> Vec<String> {
    let owned_key = format!("kubernetes.io/cluster/{cluster}");
    tagged
        .iter()
        .filter_map(|l| {
            if owned(&l.tags, cluster) {
                Some(format!("{} {} is still tagged as karpctl's", l.kind, l.id))
            } else if l.tags.get(&owned_key).map(String::as_str) == Some("owned")
                && (l.tags.contains_key("karpenter.sh/nodepool")
                    || l.tags.contains_key("karpenter.k8s.aws/ec2nodeclass"))
            {
                Some(format!(
                    "{} {} was {} by Karpenter for this cluster",
                    l.kind,
                    l.id,
                    if l.kind == "ec2-instance" {
                        "launched"
                    } else {
                        "created"
                    }
                ))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::init::{CLUSTER_TAG, MANAGED_BY, MANAGED_BY_TAG};
    use super::*;

    const C: &str = "demo";
    const NODE_ARN: &str = "arn:aws:iam::111122223333:role/KarpenterNodeRole-demo";

    fn ours() -> Tags {
        Tags::from([
            (MANAGED_BY_TAG.into(), MANAGED_BY.into()),
            (CLUSTER_TAG.into(), C.into()),
        ])
    }

    fn ca(replicas: i32) -> Autoscaler {
        Autoscaler {
            namespace: "kube-system".into(),
            name: "cluster-autoscaler".into(),
            replicas,
        }
    }

    fn role(name: &str, tags: Tags) -> FoundRole {
        FoundRole {
            name: name.into(),
            tags,
            attached: vec!["arn:aws:iam::aws:policy/A".into()],
            inline_policies: vec![],
            instance_profiles: vec![],
        }
    }

    fn full() -> Found {
        let was = ca(2);
        Found {
            cluster: C.into(),
            recorded: Some(BTreeMap::from([(
                was.state_key(),
                serde_json::to_string(&was).unwrap(),
            )])),
            autoscalers: vec![ca(0)],
            crds: BTreeMap::from([
                ("nodepools.karpenter.sh".into(), true),
                ("widgets.example.com".into(), false),
            ]),
            access_entry: Some(FoundAccessEntry {
                principal: NODE_ARN.into(),
                kind: "EC2_LINUX".into(),
                tags: ours(),
            }),
            aws_auth: None,
            node_role_arn: NODE_ARN.into(),
            resource_tags: BTreeMap::from([
                (
                    "subnet-1".into(),
                    Tags::from([
                        (DISCOVERY_TAG.into(), C.into()),
                        (DISCOVERY_OWNER_TAG.into(), C.into()),
                    ]),
                ),
                (
                    "sg-1".into(),
                    Tags::from([(DISCOVERY_TAG.into(), C.into())]),
                ),
            ]),
            association: Some(FoundAssociation {
                id: "a-1".into(),
                role_arn: "r".into(),
                tags: ours(),
            }),
            oidc_provider: None,
            controller_role: Some(role("KarpenterControllerRole-demo", ours())),
            policies: vec![FoundPolicy {
                arn: "arn:aws:iam::111122223333:policy/P".into(),
                other_versions: vec!["v1".into()],
                attached_to: vec![Attachment::Role("KarpenterControllerRole-demo".into())],
                tags: ours(),
            }],
            rules: vec![FoundRule {
                name: "Karpenter-demo-Spot".into(),
                target_ids: vec!["T".into()],
                tags: ours(),
            }],
            queue: Some(FoundQueue {
                name: "Karpenter-demo".into(),
                url: "https://sqs/q".into(),
                tags: ours(),
            }),
            node_role: Some(role("KarpenterNodeRole-demo", ours())),
            node_pools: vec!["default".into()],
            node_classes: vec!["default".into()],
            node_claims: 2,
            objects: vec![
                FoundObject {
                    api_version: "v1".into(),
                    kind: "ServiceAccount".into(),
                    namespace: Some("kube-system".into()),
                    name: "karpenter".into(),
                },
                FoundObject {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    namespace: Some("kube-system".into()),
                    name: "karpenter".into(),
                },
            ],
        }
    }

    fn addresses(p: &Plan<UninstallOp>) -> Vec<String> {
        p.items
            .iter()
            .map(|i| format!("{:?} {}", i.resource.action, i.resource.address()))
            .collect()
    }

    #[test]
    fn full_state_plans_every_delete_in_order() {
        let p = plan(&full()).unwrap();
        assert_eq!(
            addresses(&p),
            vec![
                "Delete nodepool default",
                "Delete nodeclaims (all)",
                "Delete ec2nodeclass default",
                "Delete deployment kube-system/karpenter",
                "Delete serviceaccount kube-system/karpenter",
                "Update deployment kube-system/cluster-autoscaler",
                "Delete configmap kube-system/karpctl-state",
                "Delete crd nodepools.karpenter.sh",
                &format!("Delete eks-access-entry {NODE_ARN}"),
                "Update ec2-tags subnet-1",
                "Delete eks-pod-identity-association a-1",
                "Delete iam-role KarpenterControllerRole-demo",
                "Delete iam-policy arn:aws:iam::111122223333:policy/P",
                "Delete eventbridge-rule Karpenter-demo-Spot",
                "Delete sqs-queue Karpenter-demo",
                "Delete iam-role KarpenterNodeRole-demo",
            ]
        );
        assert_eq!(
            p.items[1].ops,
            vec![UninstallOp::WaitNodeClaimsGone],
            "NodeClaims are waited on before the node classes and the controller go"
        );
        assert_eq!(
            p.items[5].ops,
            vec![
                UninstallOp::ScaleDeployment {
                    namespace: "kube-system".into(),
                    name: "cluster-autoscaler".into(),
                    replicas: 2
                },
                UninstallOp::Forget {
                    key: ca(2).state_key()
                },
            ]
        );
        // Detach before delete; targets before rule; versions before policy.
        assert!(matches!(
            p.items[11].ops[..],
            [
                UninstallOp::DetachRolePolicy { .. },
                UninstallOp::DeleteRole { .. }
            ]
        ));
        assert!(matches!(
            p.items[12].ops[..],
            [
                UninstallOp::DeletePolicyVersion { .. },
                UninstallOp::DeletePolicy { .. }
            ]
        ));
        assert!(matches!(
            p.items[13].ops[..],
            [
                UninstallOp::RemoveTargets { .. },
                UninstallOp::DeleteRule { .. }
            ]
        ));
        assert_eq!(
            p.items[9].ops,
            vec![UninstallOp::DeleteTags {
                resource: "subnet-1".into(),
                keys: vec![DISCOVERY_TAG.into(), DISCOVERY_OWNER_TAG.into()],
            }]
        );
        assert_eq!(p.summary().destroy, 9 + 5);
        assert!(
            p.render()
                .contains("  - iam-role KarpenterNodeRole-demo  (destroy:")
        );
    }

    #[test]
    fn nothing_of_ours_plans_nothing() {
        let mut f = Found {
            cluster: C.into(),
            node_role_arn: NODE_ARN.into(),
            ..Found::default()
        };
        // Foreign things with similar names, untagged or another cluster's.
        let mut other = ours();
        other.insert(CLUSTER_TAG.into(), "other".into());
        f.node_role = Some(role("KarpenterNodeRole-demo", Tags::new()));
        f.controller_role = Some(role("KarpenterControllerRole-demo", other.clone()));
        f.queue = Some(FoundQueue {
            name: "q".into(),
            url: "u".into(),
            tags: other,
        });
        f.crds = BTreeMap::from([("widgets.example.com".into(), false)]);
        f.resource_tags = BTreeMap::from([(
            "subnet-1".into(),
            Tags::from([(DISCOVERY_TAG.into(), C.into())]),
        )]);
        f.access_entry = Some(FoundAccessEntry {
            principal: NODE_ARN.into(),
            kind: "EC2_LINUX".into(),
            tags: Tags::new(),
        });
        f.aws_auth = Some("- rolearn: arn:aws:iam::1:role/other\n  username: x\n".into());
        let p = plan(&f).unwrap();
        assert!(p.items.is_empty());
        assert!(p.render().starts_with("No changes."));
    }

    #[test]
    fn partial_state_plans_only_what_is_left() {
        // A failed init: node role and queue policy only, CA never touched.
        let f = Found {
            cluster: C.into(),
            node_role_arn: NODE_ARN.into(),
            node_role: Some(role("KarpenterNodeRole-demo", ours())),
            policies: vec![FoundPolicy {
                arn: "p".into(),
                other_versions: vec![],
                attached_to: vec![],
                tags: ours(),
            }],
            ..Found::default()
        };
        let p = plan(&f).unwrap();
        assert_eq!(
            addresses(&p),
            vec![
                "Delete iam-policy p",
                "Delete iam-role KarpenterNodeRole-demo"
            ]
        );
    }

    #[test]
    fn aws_auth_row_of_ours_is_removed_and_a_deployment_already_restored_is_only_forgotten() {
        let was = ca(3);
        let f = Found {
            cluster: C.into(),
            node_role_arn: NODE_ARN.into(),
            recorded: Some(BTreeMap::from([
                (was.state_key(), serde_json::to_string(&was).unwrap()),
                ("something-else".into(), "x".into()),
            ])),
            autoscalers: vec![ca(3)],
            aws_auth: Some(format!(
                "- rolearn: arn:aws:iam::1:role/other\n  username: x\n- rolearn: {NODE_ARN}\n  username: system:node:{{{{EC2PrivateDNSName}}}}\n"
            )),
            ..Found::default()
        };
        let p = plan(&f).unwrap();
        assert_eq!(
            addresses(&p),
            vec![
                "Update deployment kube-system/cluster-autoscaler",
                &format!("Delete aws-auth-row {NODE_ARN}"),
            ]
        );
        // Already at 3: no scale, just forget; another key stays, so the ConfigMap stays.
        assert_eq!(
            p.items[0].ops,
            vec![UninstallOp::Forget {
                key: was.state_key()
            }]
        );
    }

    #[test]
    fn a_row_for_a_same_named_role_that_is_not_ours_is_kept_and_a_rescaled_ca_left_alone() {
        let was = ca(2);
        let f = Found {
            cluster: C.into(),
            node_role_arn: NODE_ARN.into(),
            node_role: Some(role("KarpenterNodeRole-demo", Tags::new())),
            aws_auth: Some(format!("- rolearn: {NODE_ARN}\n  username: x\n")),
            recorded: Some(BTreeMap::from([(
                was.state_key(),
                serde_json::to_string(&was).unwrap(),
            )])),
            // Someone scaled it to 5 after init: not ours to change.
            autoscalers: vec![ca(5)],
            ..Found::default()
        };
        let p = plan(&f).unwrap();
        assert_eq!(
            addresses(&p),
            vec![
                "Update deployment kube-system/cluster-autoscaler",
                "Delete configmap kube-system/karpctl-state",
            ]
        );
        assert_eq!(
            p.items[0].ops,
            vec![UninstallOp::Forget {
                key: was.state_key()
            }]
        );
    }

    #[test]
    fn sweep_reports_ours_and_karpenters_only() {
        let karpenter = Tags::from([
            ("kubernetes.io/cluster/demo".into(), "owned".into()),
            ("karpenter.sh/nodepool".into(), "default".into()),
        ]);
        let foreign = Tags::from([("kubernetes.io/cluster/demo".into(), "owned".into())]);
        let got = leftovers(
            C,
            &[
                Leftover {
                    kind: "ec2-instance".into(),
                    id: "i-1".into(),
                    tags: karpenter,
                },
                Leftover {
                    kind: "ec2-instance".into(),
                    id: "i-2".into(),
                    tags: foreign,
                },
                Leftover {
                    kind: "iam-role".into(),
                    id: "r".into(),
                    tags: ours(),
                },
                Leftover {
                    kind: "iam-instance-profile".into(),
                    id: "demo_123".into(),
                    tags: Tags::from([
                        ("kubernetes.io/cluster/demo".into(), "owned".into()),
                        ("karpenter.k8s.aws/ec2nodeclass".into(), "default".into()),
                    ]),
                },
                Leftover {
                    kind: "iam-instance-profile".into(),
                    id: "other_123".into(),
                    tags: Tags::from([
                        ("kubernetes.io/cluster/other".into(), "owned".into()),
                        ("karpenter.k8s.aws/ec2nodeclass".into(), "default".into()),
                    ]),
                },
            ],
        );
        assert_eq!(
            got,
            vec![
                "ec2-instance i-1 was launched by Karpenter for this cluster",
                "iam-role r is still tagged as karpctl's",
                "iam-instance-profile demo_123 was created by Karpenter for this cluster",
            ]
        );
    }

    #[test]
    fn a_policy_attached_to_principals_that_are_not_ours_is_detached_from_each_and_the_plan_names_them()
     {
        let mut f = full();
        f.policies[0].attached_to = vec![
            Attachment::Role("KarpenterControllerRole-demo".into()),
            Attachment::Role("ci-admin".into()),
            Attachment::User("alice".into()),
            Attachment::Group("ops".into()),
        ];
        let p = plan(&f).unwrap();
        let item = p
            .items
            .iter()
            .find(|i| i.resource.kind == "iam-policy")
            .unwrap();
        let arn = "arn:aws:iam::111122223333:policy/P".to_string();
        // Ours is detached by the controller role's own item; every other principal here,
        // then the non-default version, then the policy.
        assert_eq!(
            item.ops,
            vec![
                UninstallOp::DetachRolePolicy {
                    role: "ci-admin".into(),
                    policy_arn: arn.clone()
                },
                UninstallOp::DetachUserPolicy {
                    user: "alice".into(),
                    policy_arn: arn.clone()
                },
                UninstallOp::DetachGroupPolicy {
                    group: "ops".into(),
                    policy_arn: arn.clone()
                },
                UninstallOp::DeletePolicyVersion {
                    arn: arn.clone(),
                    version: "v1".into()
                },
                UninstallOp::DeletePolicy { arn: arn.clone() },
            ]
        );
        let text = p.render();
        assert!(
            text.contains(&format!(
                "  - iam-policy {arn}  (destroy: created by karpctl; detaches it from role ci-admin, user alice, group ops, which are not karpctl's)\n        - attachment to role ci-admin (not karpctl's; that principal is kept)\n"
            )),
            "{text}"
        );
        let json = serde_json::to_value(p.document()).unwrap();
        let policy = json["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "iam-policy")
            .unwrap();
        assert_eq!(policy["changes"].as_array().unwrap().len(), 3, "{policy}");
    }

    #[test]
    fn a_policy_attached_to_a_same_named_role_that_is_not_ours_is_detached_from_it_and_named() {
        let mut f = full();
        f.controller_role = Some(role("KarpenterControllerRole-demo", Tags::new()));
        f.policies[0].other_versions.clear();
        let p = plan(&f).unwrap();
        let item = p
            .items
            .iter()
            .find(|i| i.resource.kind == "iam-policy")
            .unwrap();
        assert!(
            item.resource.reason.ends_with(
                "detaches it from role KarpenterControllerRole-demo, which is not karpctl's"
            ),
            "{}",
            item.resource.reason
        );
        assert!(matches!(
            item.ops[..],
            [
                UninstallOp::DetachRolePolicy { .. },
                UninstallOp::DeletePolicy { .. }
            ]
        ));
        assert!(!addresses(&p).contains(&"Delete iam-role KarpenterControllerRole-demo".into()));
    }

    #[test]
    fn inline_policies_someone_added_to_our_role_are_deleted_before_it() {
        let mut f = full();
        f.node_role.as_mut().unwrap().inline_policies = vec!["extra".into()];
        let p = plan(&f).unwrap();
        let item = p.items.last().unwrap();
        assert_eq!(item.resource.address(), "iam-role KarpenterNodeRole-demo");
        assert_eq!(
            item.ops[1..],
            [
                UninstallOp::DeleteRolePolicy {
                    role: "KarpenterNodeRole-demo".into(),
                    name: "extra".into()
                },
                UninstallOp::DeleteRole {
                    name: "KarpenterNodeRole-demo".into()
                },
            ]
        );
        assert_eq!(
            item.resource.changes,
            vec!["- inline policy extra (not karpctl's; deleted with the role)"]
        );
    }
}

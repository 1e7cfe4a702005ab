//! `karpctl init` as pure data (AWS, plus the CRDs and the Cluster Autoscaler in Kubernetes): the facts discovery found ([`Cluster`]), the
//! state every karpctl resource is in now ([`Current`]), what it should be ([`Desired`]),
//! and [`plan`], which compares the two and yields the operations ([`InitOp`]) that close the
//! gap — nothing for a resource that already matches, so a second run plans "No changes."
//! Nothing here talks to AWS; `aws::state` reads `Current` and `aws::apply` executes ops.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use super::controller::{
    self as manifests, ControllerSettings, KubeObject, ManifestError, NodePoolSettings,
};
use super::iam_policies::{self, PolicyDocument, RenderError, Scope};
use super::{Action, Item, Plan, Resource, names};
use crate::kube::aws_auth::{self, AwsAuthError, MapRole, Merge};

/// Marks every resource karpctl creates, so any later run on any machine can find them.
pub const MANAGED_BY_TAG: &str = "karpctl.sh/managed-by";
pub const MANAGED_BY: &str = "karpctl";
pub const CLUSTER_TAG: &str = "karpctl.sh/cluster";
/// How Karpenter's EC2NodeClass selectors find subnets and security groups.
pub const DISCOVERY_TAG: &str = "karpenter.sh/discovery";
/// Set next to a discovery tag karpctl added (value: the cluster), so `uninstall` removes
/// only the discovery tags karpctl put there and leaves a pre-existing one alone.
pub const DISCOVERY_OWNER_TAG: &str = "karpctl.sh/discovery-tag";

pub const POD_IDENTITY_AGENT: &str = "eks-pod-identity-agent";
pub const SPOT_SERVICE: &str = "spot.amazonaws.com";
pub const SPOT_ROLE: &str = "AWSServiceRoleForEC2Spot";
pub const QUEUE_TARGET_ID: &str = "KarpenterInterruptionQueueTarget";
const NODE_POLICIES: &[&str] = &[
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    // ECR pull policy: chosen at discovery (PullOnly, or ReadOnly where PullOnly is missing).
    "AmazonSSMManagedInstanceCore",
];

pub type Tags = BTreeMap<String, String>;

/// Tags on something karpctl created for `cluster`.
pub fn owned(tags: &Tags, cluster: &str) -> bool {
    tags.get(MANAGED_BY_TAG).map(String::as_str) == Some(MANAGED_BY)
        && tags.get(CLUSTER_TAG).map(String::as_str) == Some(cluster)
}

/// How the controller gets AWS credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    PodIdentity,
    Irsa,
}

impl std::fmt::Display for IdentityMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentityMode::PodIdentity => "EKS Pod Identity",
            IdentityMode::Irsa => "IRSA",
        })
    }
}

/// What discovery learned about the cluster and account (read-only).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub region: String,
    pub account: String,
    pub caller_arn: String,
    pub partition: String,
    pub endpoint: String,
    pub version: String,
    pub oidc_issuer: Option<String>,
    /// `accessConfig.authenticationMode`: CONFIG_MAP, API_AND_CONFIG_MAP or API.
    pub authentication_mode: String,
    pub cluster_security_group: Option<String>,
    pub vpc: String,
    pub node_groups: Vec<NodeGroup>,
    /// The Pod Identity add-on API answers for this cluster.
    pub pod_identity_available: bool,
    /// `AmazonEC2ContainerRegistryPullOnly`, or `...ReadOnly` where PullOnly does not exist.
    pub ecr_policy: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    pub name: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
}

impl Cluster {
    /// Access entries work when the authentication mode includes the EKS API.
    pub fn api_access(&self) -> bool {
        self.authentication_mode.contains("API")
    }
}

/// Choices the user made (or left to karpctl).
#[derive(Debug, Clone)]
pub struct Options {
    pub identity: Option<IdentityMode>,
    pub namespace: String,
    pub service_account: String,
    pub controller: ControllerSettings,
    /// NodePools (each with its EC2NodeClass) to create; upstream's default when not given.
    pub node_pools: Vec<NodePoolSettings>,
    /// Take over IAM roles, policies, the queue and rules that have init's names but not
    /// karpctl's tags (`--adopt`); without it init stops and names them.
    pub adopt: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            identity: None,
            namespace: "kube-system".into(),
            service_account: "karpenter".into(),
            controller: ControllerSettings::default(),
            node_pools: vec![NodePoolSettings::default()],
            adopt: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "--identity irsa needs an OIDC issuer, and cluster {0} has none; use --identity pod-identity, or associate an OIDC provider first (`eksctl utils associate-iam-oidc-provider --cluster {0} --approve`)"
    )]
    NoOidcIssuer(String),
    #[error(transparent)]
    Policy(#[from] RenderError),
    #[error(transparent)]
    AwsAuth(#[from] AwsAuthError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{field} {value:?} is not valid: {rule}")]
    InvalidSetting {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error(
        "these exist with the names init uses but without karpctl's tags (karpctl.sh/managed-by=karpctl, karpctl.sh/cluster={cluster}), so they are not karpctl's: {}; init stops rather than rewrite them (e.g. what upstream's getting-started template created). Remove them, or pass --adopt to let karpctl take them over (uninstall then deletes them too)",
        .resources.join(", ")
    )]
    NotOurs {
        cluster: String,
        resources: Vec<String>,
    },
    #[error(
        "{kind} {id} exists and is not karpctl's (managed by {manager}); karpctl will not take it over. Remove it (e.g. `helm uninstall` if Helm installed Karpenter) or choose another --namespace, then run init again"
    )]
    Foreign {
        kind: String,
        id: String,
        manager: String,
    },
}

/// A role as it should be.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub name: String,
    pub arn: String,
    pub description: String,
    pub trust: Value,
    pub policies: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub name: String,
    pub description: String,
    pub pattern: Value,
}

/// Everything init's AWS side should leave behind, derived from the cluster and options.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Whether existing resources that are not karpctl's are taken over (`--adopt`).
    pub adopt: bool,
    pub cluster: Cluster,
    pub identity: IdentityMode,
    pub namespace: String,
    pub service_account: String,
    pub tags: Tags,
    pub node_role: RoleSpec,
    pub queue_name: String,
    pub queue_arn: String,
    pub queue_attributes: BTreeMap<String, String>,
    pub rules: Vec<RuleSpec>,
    pub policies: Vec<(PolicyDocument, String)>,
    pub controller_role: RoleSpec,
    pub oidc_provider_arn: Option<String>,
    pub discovery_targets: Vec<String>,
    /// karpctl's CRDs by name, with the hash of the spec karpctl applies.
    pub crds: BTreeMap<String, String>,
    /// The controller's objects, then each NodePool's EC2NodeClass and NodePool, in apply order.
    pub objects: Vec<KubeObject>,
    /// What this run decided, recorded in karpctl-state under [`SETTINGS_KEY`].
    pub settings_record: String,
}

/// The karpctl-state key holding the settings of the last init (namespace, service account,
/// identity, controller and NodePools), so uninstall and later runs on any machine know them.
pub const SETTINGS_KEY: &str = "init";

/// The interruption events Karpenter handles: (rule suffix, source, detail-type), as
/// upstream's CloudFormation template wires them.
pub const INTERRUPTION_EVENTS: &[(&str, &str, &str)] = &[
    ("ScheduledChange", "aws.health", "AWS Health Event"),
    (
        "SpotInterruption",
        "aws.ec2",
        "EC2 Spot Instance Interruption Warning",
    ),
    (
        "Rebalance",
        "aws.ec2",
        "EC2 Instance Rebalance Recommendation",
    ),
    (
        "InstanceStateChange",
        "aws.ec2",
        "EC2 Instance State-change Notification",
    ),
    (
        "CapacityReservationInterruption",
        "aws.ec2",
        "EC2 Capacity Reservation Instance Interruption Warning",
    ),
];

/// A DNS-1123 label (a namespace): lower-case alphanumerics and `-`, at most 63.
fn dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// A DNS-1123 subdomain (a service account name): dot-separated labels, at most 253.
fn dns_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(dns_label)
}

/// An image reference: registry, path, tag and digest characters only (no spaces, quotes,
/// newlines or YAML flow characters can reach the Deployment template).
fn image_reference(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 512
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// What reaches the controller's templates is checked first: no setting can inject YAML.
fn validate(options: &Options) -> Result<(), PlanError> {
    let invalid =
        |field: &'static str, value: &str, rule: &'static str| PlanError::InvalidSetting {
            field,
            value: value.to_owned(),
            rule,
        };
    if !dns_label(&options.namespace) {
        return Err(invalid(
            "namespace",
            &options.namespace,
            "a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)",
        ));
    }
    if !dns_subdomain(&options.service_account) {
        return Err(invalid(
            "service account",
            &options.service_account,
            "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters)",
        ));
    }
    let settings = &options.controller;
    if !image_reference(&settings.image) {
        return Err(invalid(
            "image",
            &settings.image,
            "an image reference (letters, digits and . _ - / : @ only)",
        ));
    }
    for (field, value) in [
        ("controller.logLevel", &settings.log_level),
        (
            "controller.batchIdleDuration",
            &settings.batch_idle_duration,
        ),
        ("controller.batchMaxDuration", &settings.batch_max_duration),
        ("controller.launchTtl", &settings.launch_ttl),
        ("controller.registrationTtl", &settings.registration_ttl),
        ("controller.cpu", &settings.cpu),
        ("controller.memory", &settings.memory),
    ] {
        if value.is_empty()
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.')
        {
            return Err(invalid(field, value, "letters, digits and '.' only"));
        }
    }
    Ok(())
}

impl Desired {
    pub fn new(cluster: Cluster, options: &Options) -> Result<Self, PlanError> {
        validate(options)?;
        let c = &cluster.name;
        let p = &cluster.partition;
        let account = &cluster.account;
        let region = &cluster.region;
        let identity = match options.identity {
            Some(mode) => mode,
            None if cluster.api_access() || cluster.pod_identity_available => {
                IdentityMode::PodIdentity
            }
            None => IdentityMode::Irsa,
        };
        if identity == IdentityMode::Irsa && cluster.oidc_issuer.is_none() {
            return Err(PlanError::NoOidcIssuer(c.clone()));
        }
        let tags = Tags::from([
            (MANAGED_BY_TAG.to_string(), MANAGED_BY.to_string()),
            (CLUSTER_TAG.to_string(), c.clone()),
        ]);

        let node_role_name = names::fit("KarpenterNodeRole-", c, "", names::ROLE_OR_RULE);
        let node_role_arn = format!("arn:{p}:iam::{account}:role/{node_role_name}");
        let mut node_policies: Vec<String> = NODE_POLICIES
            .iter()
            .map(|n| format!("arn:{p}:iam::aws:policy/{n}"))
            .collect();
        node_policies.insert(2, format!("arn:{p}:iam::aws:policy/{}", cluster.ecr_policy));
        let node_role = RoleSpec {
            name: node_role_name,
            arn: node_role_arn.clone(),
            description: format!("Nodes Karpenter launches for EKS cluster {c} (karpctl)"),
            trust: service_trust(
                &[&iam_policies::service_principal(p, "ec2")],
                &["sts:AssumeRole"],
            ),
            policies: node_policies,
        };

        let queue_name = names::fit("Karpenter-", c, "", names::QUEUE);
        let queue_arn = format!("arn:{p}:sqs:{region}:{account}:{queue_name}");
        let rules: Vec<RuleSpec> = INTERRUPTION_EVENTS
            .iter()
            .map(|(suffix, source, detail_type)| RuleSpec {
                name: names::fit("Karpenter-", c, &format!("-{suffix}"), names::ROLE_OR_RULE),
                description: format!("{detail_type} events for Karpenter on {c} (karpctl)"),
                pattern: json!({"source": [source], "detail-type": [detail_type]}),
            })
            .collect();
        let rule_arns: Vec<String> = rules
            .iter()
            .map(|r| format!("arn:{p}:events:{region}:{account}:rule/{}", r.name))
            .collect();
        let queue_attributes = BTreeMap::from([
            ("MessageRetentionPeriod".to_string(), "300".to_string()),
            ("SqsManagedSseEnabled".to_string(), "true".to_string()),
            (
                "Policy".to_string(),
                queue_policy(&queue_arn, &rule_arns).to_string(),
            ),
        ]);

        let scope = Scope {
            partition: p.clone(),
            region: region.clone(),
            account: account.clone(),
            cluster: c.clone(),
            queue_arn: queue_arn.clone(),
            node_role_arn: node_role_arn.clone(),
            ec2_principal: iam_policies::service_principal(p, "ec2"),
        };
        let policies: Vec<(PolicyDocument, String)> = iam_policies::controller_policies(&scope)?
            .into_iter()
            .map(|doc| {
                let arn = format!("arn:{p}:iam::{account}:policy/{}", doc.name);
                (doc, arn)
            })
            .collect();

        let (trust, oidc_provider_arn) = match identity {
            // Hardened beyond upstream: only this account's EKS, for this cluster, and only
            // for the controller's namespace and service account (EKS Pod Identity's session
            // tags), so no other pod of any cluster can be given this role.
            IdentityMode::PodIdentity => {
                let mut trust = service_trust(
                    &["pods.eks.amazonaws.com"],
                    &["sts:AssumeRole", "sts:TagSession"],
                );
                trust["Statement"][0]["Condition"] = json!({
                    "StringEquals": {
                        "aws:SourceAccount": account,
                        "aws:RequestTag/kubernetes-namespace": options.namespace,
                        "aws:RequestTag/kubernetes-service-account": options.service_account,
                    },
                    "ArnEquals": {
                        "aws:SourceArn": format!("arn:{p}:eks:{region}:{account}:cluster/{c}"),
                    },
                });
                (trust, None)
            }
            IdentityMode::Irsa => {
                let issuer = cluster.oidc_issuer.as_deref().unwrap_or_default();
                let host = issuer.trim_start_matches("https://");
                let provider = format!("arn:{p}:iam::{account}:oidc-provider/{host}");
                let trust = json!({
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": {"Federated": provider},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                        "Condition": {"StringEquals": {
                            format!("{host}:sub"): format!("system:serviceaccount:{}:{}", options.namespace, options.service_account),
                            format!("{host}:aud"): "sts.amazonaws.com",
                        }}
                    }]
                });
                (trust, Some(provider))
            }
        };
        let controller_role_name =
            names::fit("KarpenterControllerRole-", c, "", names::ROLE_OR_RULE);
        let controller_role = RoleSpec {
            arn: format!("arn:{p}:iam::{account}:role/{controller_role_name}"),
            name: controller_role_name,
            description: format!("The Karpenter controller of EKS cluster {c} (karpctl)"),
            trust,
            policies: policies.iter().map(|(_, arn)| arn.clone()).collect(),
        };

        let mut targets = BTreeSet::new();
        for ng in &cluster.node_groups {
            targets.extend(ng.subnets.iter().cloned());
            targets.extend(ng.security_groups.iter().cloned());
        }
        targets.extend(cluster.cluster_security_group.iter().cloned());
        // Subnets first, then security groups: the order people read them in.
        let mut discovery_targets: Vec<String> = targets.into_iter().collect();
        discovery_targets.sort_by_key(|id| (!id.starts_with("subnet-"), id.clone()));

        let ctx = manifests::Context {
            cluster: c,
            region,
            endpoint: &cluster.endpoint,
            namespace: &options.namespace,
            service_account: &options.service_account,
            interruption_queue: &queue_name,
            irsa_role_arn: (identity == IdentityMode::Irsa).then_some(controller_role.arn.as_str()),
            node_role: &node_role.name,
        };
        let mut objects = manifests::controller_objects(&ctx, &options.controller)?;
        for pool in &options.node_pools {
            objects.extend(manifests::node_pool_objects(&ctx, pool)?);
        }
        let settings_record = serde_json::to_string(&json!({
            "identity": identity,
            "namespace": options.namespace,
            "serviceAccount": options.service_account,
            "controller": options.controller,
            "nodePools": options.node_pools,
        }))
        .expect("settings serialize");

        Ok(Self {
            adopt: options.adopt,
            objects,
            settings_record,
            identity,
            namespace: options.namespace.clone(),
            service_account: options.service_account.clone(),
            tags,
            node_role,
            queue_name,
            queue_arn,
            queue_attributes,
            rules,
            policies,
            controller_role,
            oidc_provider_arn,
            discovery_targets,
            crds: crate::kube::cluster_state::desired_crds()
                .iter()
                .map(|c| {
                    (
                        c.metadata.name.clone().unwrap_or_default(),
                        crate::kube::cluster_state::spec_hash(c),
                    )
                })
                .collect(),
            cluster,
        })
    }

    pub fn oidc_provider_url(&self) -> Option<&str> {
        self.cluster.oidc_issuer.as_deref()
    }
}

fn service_trust(services: &[&str], actions: &[&str]) -> Value {
    let service: Value = if services.len() == 1 {
        json!(services[0])
    } else {
        json!(services)
    };
    let action: Value = if actions.len() == 1 {
        json!(actions[0])
    } else {
        json!(actions)
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": action}]
    })
}

/// EventBridge (and SQS itself) may send; nothing may use the queue without TLS.
/// Upstream's queue policy, hardened: EventBridge may send only on behalf of this cluster's
/// five rules (`aws:SourceArn`), so no other rule in the account, nor anyone else's, can put
/// a forged interruption in front of the controller.
fn queue_policy(queue_arn: &str, rule_arns: &[String]) -> Value {
    json!({
        "Version": "2012-10-17",
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Sid": "AllowEventBridgeToSend",
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}}
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}
            }
        ]
    })
}

// ---- current state ---------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub struct Role {
    pub trust: Value,
    pub tags: Tags,
    pub attached: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Queue {
    pub url: String,
    pub attributes: BTreeMap<String, String>,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub arn: String,
    pub pattern: Value,
    pub enabled: bool,
    /// (target id, target ARN)
    pub targets: Vec<(String, String)>,
    pub tags: Tags,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub document: Value,
    /// Non-default versions, oldest first (IAM keeps at most five in all).
    pub other_versions: Vec<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone)]
pub struct Association {
    pub id: String,
    pub role_arn: String,
}

/// The state of every resource init manages, as discovery read it.
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub node_role: Option<Role>,
    pub controller_role: Option<Role>,
    pub queue: Option<Queue>,
    pub rules: BTreeMap<String, Rule>,
    pub policies: BTreeMap<String, Policy>,
    /// Status of the Pod Identity agent add-on, when installed.
    pub pod_identity_addon: Option<String>,
    pub pod_identity_association: Option<Association>,
    pub oidc_provider: bool,
    pub spot_role: bool,
    /// Type of the node role's access entry, when one exists.
    pub access_entry: Option<String>,
    /// Tags on each subnet and security group discovery targets.
    pub resource_tags: BTreeMap<String, Tags>,
    /// `mapRoles` of the aws-auth ConfigMap (read only for CONFIG_MAP clusters; empty when
    /// the ConfigMap does not exist).
    pub aws_auth: Option<String>,
    /// Each of karpctl's CRDs that exists, with its spec-hash annotation ("" when missing).
    pub crds: BTreeMap<String, String>,
    /// Deployments that run the Cluster Autoscaler.
    pub autoscalers: Vec<Autoscaler>,
    /// `data` of the karpctl-state ConfigMap (what earlier runs changed).
    pub recorded: BTreeMap<String, String>,
    /// Each desired Kubernetes object that exists, by [`object_key`].
    pub objects: BTreeMap<String, ObjectState>,
}

/// An existing object as init sees it: whose it is and which content karpctl last applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectState {
    /// The `app.kubernetes.io/managed-by` label ("" when absent).
    pub managed_by: String,
    /// The `karpctl.sh/spec-hash` annotation ("" when absent).
    pub hash: String,
}

/// `apiVersion/kind/namespace/name`: unique across everything init applies.
pub fn object_key(o: &KubeObject) -> String {
    format!(
        "{}/{}/{}/{}",
        o.api_version,
        o.kind,
        o.namespace.as_deref().unwrap_or(""),
        o.name
    )
}

/// A Deployment running the Cluster Autoscaler, as found and as recorded in karpctl-state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Autoscaler {
    pub namespace: String,
    pub name: String,
    pub replicas: i32,
}

impl Autoscaler {
    /// Its key in karpctl-state; a valid ConfigMap key since both parts are DNS names.
    pub fn state_key(&self) -> String {
        format!("cluster-autoscaler.{}.{}", self.namespace, self.name)
    }
}

// ---- operations ---------------------------------------------------------------------------

/// One call of the apply (to AWS, or to Kubernetes where marked), carrying everything it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum InitOp {
    CreateRole {
        name: String,
        description: String,
        trust: String,
        tags: Tags,
    },
    UpdateAssumeRolePolicy {
        role: String,
        trust: String,
    },
    TagRole {
        role: String,
        tags: Tags,
    },
    AttachRolePolicy {
        role: String,
        policy_arn: String,
    },
    CreateQueue {
        name: String,
        attributes: BTreeMap<String, String>,
        tags: Tags,
    },
    SetQueueAttributes {
        url: String,
        attributes: BTreeMap<String, String>,
    },
    TagQueue {
        url: String,
        tags: Tags,
    },
    PutRule {
        name: String,
        description: String,
        pattern: String,
        tags: Tags,
    },
    TagRule {
        arn: String,
        tags: Tags,
    },
    PutTarget {
        rule: String,
        id: String,
        arn: String,
    },
    CreatePolicy {
        name: String,
        description: String,
        document: String,
        tags: Tags,
    },
    CreatePolicyVersion {
        arn: String,
        document: String,
        delete_first: Option<String>,
    },
    TagPolicy {
        arn: String,
        tags: Tags,
    },
    CreateAddon {
        cluster: String,
        addon: String,
        tags: Tags,
    },
    CreatePodIdentityAssociation {
        cluster: String,
        namespace: String,
        service_account: String,
        role_arn: String,
        tags: Tags,
    },
    UpdatePodIdentityAssociation {
        cluster: String,
        id: String,
        role_arn: String,
    },
    CreateOidcProvider {
        url: String,
        tags: Tags,
    },
    CreateServiceLinkedRole {
        service: String,
    },
    CreateAccessEntry {
        cluster: String,
        principal: String,
        kind: String,
        tags: Tags,
    },
    DeleteAccessEntry {
        cluster: String,
        principal: String,
    },
    CreateTags {
        resource: String,
        tags: Tags,
    },
    /// Not an AWS call: the node role's row in the aws-auth ConfigMap (CONFIG_MAP clusters).
    MapNodeRole {
        rolearn: String,
    },
    /// Kubernetes: server-side apply one of karpctl's CRDs and wait until it is Established.
    ApplyCrd {
        name: String,
    },
    /// Kubernetes: set `key` of the karpctl-state ConfigMap (before changing what it records).
    Record {
        key: String,
        value: String,
    },
    /// Kubernetes: set a Deployment's replicas.
    ScaleDeployment {
        namespace: String,
        name: String,
        replicas: i32,
    },
    /// Kubernetes: server-side apply one object (field manager karpctl), then wait for it
    /// when it asks to be waited on (a Deployment's rollout).
    ApplyObject {
        object: KubeObject,
    },
}

/// An existing resource: unchanged when nothing needs doing, else one in-place update
/// whose reason lists every difference found.
fn update_or_noop(
    kind: &str,
    id: &str,
    why: &[&str],
    changes: Vec<String>,
    ops: Vec<InitOp>,
) -> Item<InitOp> {
    if ops.is_empty() {
        Item::noop(kind, id, "matches")
    } else {
        let resource = Resource::new(kind, id, Action::Update, why.join(", "));
        Item::change(resource.with_changes(changes), ops)
    }
}

fn missing(desired: &Tags, current: &Tags) -> Tags {
    desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn tag_lines(tags: &Tags) -> Vec<String> {
    tags.iter()
        .map(|(k, v)| format!("+ tag {k} = {v:?}"))
        .collect()
}

fn policy_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Compares desired with current and returns the plan, in apply order: the node role, the
/// interruption queue and rules, the controller policies, role and identity, the Spot
/// service-linked role, node access, and the discovery tags.
/// The AWS resources with init's names that exist without karpctl's tags for this cluster,
/// as `(kind, id)`: someone else's (e.g. upstream's getting-started CloudFormation stack).
pub fn not_ours(d: &Desired, cur: &Current) -> Vec<(String, String)> {
    let c = &d.cluster.name;
    let mut found = Vec::new();
    for (spec, role) in [
        (&d.node_role, &cur.node_role),
        (&d.controller_role, &cur.controller_role),
    ] {
        if role.as_ref().is_some_and(|r| !owned(&r.tags, c)) {
            found.push(("iam-role".to_owned(), spec.name.clone()));
        }
    }
    if cur.queue.as_ref().is_some_and(|q| !owned(&q.tags, c)) {
        found.push(("sqs-queue".to_owned(), d.queue_name.clone()));
    }
    for (name, rule) in &cur.rules {
        if !owned(&rule.tags, c) {
            found.push(("eventbridge-rule".to_owned(), name.clone()));
        }
    }
    for (name, policy) in &cur.policies {
        if !owned(&policy.tags, c) {
            found.push(("iam-policy".to_owned(), name.clone()));
        }
    }
    found
}

pub fn plan(d: &Desired, cur: &Current) -> Result<Plan<InitOp>, PlanError> {
    let foreign = not_ours(d, cur);
    if !foreign.is_empty() && !d.adopt {
        return Err(PlanError::NotOurs {
            cluster: d.cluster.name.clone(),
            resources: foreign.iter().map(|(k, i)| format!("{k} {i}")).collect(),
        });
    }
    let mut items = Vec::new();
    role_items(&mut items, &d.node_role, cur.node_role.as_ref(), &d.tags);
    queue_items(&mut items, d, cur);
    rule_items(&mut items, d, cur);
    policy_items(&mut items, d, cur);
    // The controller role's trust names the OIDC provider (IRSA), so the provider comes
    // first; a Pod Identity association names the role, so it comes after.
    let mut identity = Vec::new();
    identity_items(&mut identity, d, cur);
    if d.identity == IdentityMode::Irsa {
        items.append(&mut identity);
    }
    role_items(
        &mut items,
        &d.controller_role,
        cur.controller_role.as_ref(),
        &d.tags,
    );
    items.append(&mut identity);
    items.push(if cur.spot_role {
        Item::noop("iam-service-linked-role", SPOT_ROLE, "exists")
    } else {
        Item::change(
            Resource::new(
                "iam-service-linked-role",
                SPOT_ROLE,
                Action::Create,
                "not found; EC2 needs it to launch Spot instances",
            ),
            vec![InitOp::CreateServiceLinkedRole {
                service: SPOT_SERVICE.into(),
            }],
        )
    });
    access_items(&mut items, d, cur)?;
    tag_items(&mut items, d, cur);
    crd_items(&mut items, d, cur);
    autoscaler_items(&mut items, cur);
    object_items(&mut items, d, cur)?;
    if cur.recorded.get(SETTINGS_KEY) != Some(&d.settings_record) {
        items.push(Item::change(
            Resource::new(
                "configmap-key",
                format!("kube-system/karpctl-state[{SETTINGS_KEY}]"),
                if cur.recorded.contains_key(SETTINGS_KEY) {
                    Action::Update
                } else {
                    Action::Create
                },
                "init's settings, so later runs and uninstall on any machine know them",
            ),
            vec![InitOp::Record {
                key: SETTINGS_KEY.into(),
                value: d.settings_record.clone(),
            }],
        ));
    }
    // What --adopt takes over says so in the plan, by name.
    for item in &mut items {
        let r = &mut item.resource;
        if foreign.iter().any(|(k, i)| *k == r.kind && *i == r.id) {
            r.reason = format!("adopt: exists and is not karpctl's (--adopt); {}", r.reason);
        }
    }
    Ok(Plan::new(items))
}

/// The controller's objects and the NodePools: created when absent, re-applied when what
/// karpctl would apply changed since it last did. Edits users made to an object karpctl's
/// desired content did not change are left alone. An object of the same name that is not
/// karpctl's is never taken over: the controller's are an error (two controllers would
/// fight), a NodePool or EC2NodeClass is left alone (it is the user's).
fn object_items(
    items: &mut Vec<Item<InitOp>>,
    d: &Desired,
    cur: &Current,
) -> Result<(), PlanError> {
    for o in &d.objects {
        let kind = o.plan_kind();
        let id = o.id();
        let op = vec![InitOp::ApplyObject { object: o.clone() }];
        let item = match cur.objects.get(&object_key(o)) {
            None => {
                let why = if o.wait {
                    "not found; applied, then its rollout is waited on"
                } else {
                    "not found"
                };
                Item::change(Resource::new(&kind, &id, Action::Create, why), op)
            }
            Some(state) if state.managed_by != MANAGED_BY => {
                if o.user_owned {
                    Item::noop(&kind, &id, "exists and is not karpctl's; left alone")
                } else {
                    return Err(PlanError::Foreign {
                        kind,
                        id,
                        manager: if state.managed_by.is_empty() {
                            "nothing that says so".into()
                        } else {
                            state.managed_by.clone()
                        },
                    });
                }
            }
            Some(state) if state.hash == o.hash => Item::noop(&kind, &id, "matches"),
            Some(state) => Item::change(
                Resource::new(
                    &kind,
                    &id,
                    Action::Update,
                    "karpctl's desired content changed",
                )
                .with_changes(vec![format!(
                    "~ annotation {}: {:?} -> {:?}",
                    manifests::SPEC_HASH_ANNOTATION,
                    state.hash,
                    o.hash
                )]),
                op,
            ),
        };
        items.push(item);
    }
    Ok(())
}

/// Our CRDs: created when absent, re-applied when the served one was applied from a
/// different spec (an older karpctl, or not by karpctl at all).
fn crd_items(items: &mut Vec<Item<InitOp>>, d: &Desired, cur: &Current) {
    const KIND: &str = "crd";
    for (name, hash) in &d.crds {
        let op = vec![InitOp::ApplyCrd { name: name.clone() }];
        items.push(match cur.crds.get(name) {
            None => Item::change(Resource::new(KIND, name, Action::Create, "not found"), op),
            Some(served) if served == hash => Item::noop(KIND, name, "matches"),
            Some(served) => Item::change(
                Resource::new(KIND, name, Action::Update, "spec differs from karpctl's")
                    .with_changes(vec![format!(
                        "~ annotation {}: {served:?} -> {hash:?}",
                        crate::kube::cluster_state::SPEC_HASH_ANNOTATION
                    )]),
                op,
            ),
        });
    }
}

/// The Cluster Autoscaler and Karpenter would fight over nodes, so a running one is scaled
/// to 0 — after its replica count is recorded, so `uninstall` can restore it. One already at
/// 0 is left alone: either an earlier run recorded it, or it was off before karpctl came.
fn autoscaler_items(items: &mut Vec<Item<InitOp>>, cur: &Current) {
    const KIND: &str = "deployment";
    for ca in &cur.autoscalers {
        let id = format!("{}/{}", ca.namespace, ca.name);
        if ca.replicas == 0 {
            let reason = match cur.recorded.get(&ca.state_key()) {
                Some(_) => "scaled to 0; previous replicas recorded in karpctl-state",
                None => "already at 0 replicas",
            };
            items.push(Item::noop(KIND, &id, reason));
            continue;
        }
        let value = serde_json::to_string(ca).expect("an Autoscaler serializes");
        items.push(Item::change(
            Resource::new(
                KIND,
                &id,
                Action::Update,
                "Cluster Autoscaler would fight Karpenter; scaled to 0, replicas recorded for uninstall",
            )
            .with_changes(vec![format!("~ replicas: {} -> 0", ca.replicas)]),
            vec![
                InitOp::Record {
                    key: ca.state_key(),
                    value,
                },
                InitOp::ScaleDeployment {
                    namespace: ca.namespace.clone(),
                    name: ca.name.clone(),
                    replicas: 0,
                },
            ],
        ));
    }
}

fn role_items(items: &mut Vec<Item<InitOp>>, spec: &RoleSpec, cur: Option<&Role>, tags: &Tags) {
    const KIND: &str = "iam-role";
    match cur {
        None => items.push(Item::change(
            Resource::new(KIND, &spec.name, Action::Create, "not found"),
            vec![InitOp::CreateRole {
                name: spec.name.clone(),
                description: spec.description.clone(),
                trust: spec.trust.to_string(),
                tags: tags.clone(),
            }],
        )),
        Some(role) => {
            let mut ops = Vec::new();
            let mut changes = Vec::new();
            let mut why = Vec::new();
            if role.trust != spec.trust {
                changes.push("~ trust policy".to_string());
                why.push("trust policy differs");
                ops.push(InitOp::UpdateAssumeRolePolicy {
                    role: spec.name.clone(),
                    trust: spec.trust.to_string(),
                });
            }
            let add = missing(tags, &role.tags);
            if !add.is_empty() {
                changes.extend(tag_lines(&add));
                why.push("karpctl tags missing");
                ops.push(InitOp::TagRole {
                    role: spec.name.clone(),
                    tags: add,
                });
            }
            items.push(update_or_noop(KIND, &spec.name, &why, changes, ops));
        }
    }
    for arn in &spec.policies {
        let id = format!("{}/{}", spec.name, policy_name(arn));
        let attached = cur.is_some_and(|r| r.attached.contains(arn));
        items.push(if attached {
            Item::noop("iam-role-policy-attachment", id, "attached")
        } else {
            Item::change(
                Resource::new(
                    "iam-role-policy-attachment",
                    id,
                    Action::Create,
                    "not attached",
                ),
                vec![InitOp::AttachRolePolicy {
                    role: spec.name.clone(),
                    policy_arn: arn.clone(),
                }],
            )
        });
    }
}

fn queue_items(items: &mut Vec<Item<InitOp>>, d: &Desired, cur: &Current) {
    const KIND: &str = "sqs-queue";
    let Some(queue) = &cur.queue else {
        items.push(Item::change(
            Resource::new(KIND, &d.queue_name, Action::Create, "not found"),
            vec![InitOp::CreateQueue {
                name: d.queue_name.clone(),
                attributes: d.queue_attributes.clone(),
                tags: d.tags.clone(),
            }],
        ));
        return;
    };
    let mut differing = BTreeMap::new();
    let mut changes = Vec::new();
    for (key, want) in &d.queue_attributes {
        let have = queue.attributes.get(key);
        let same = match (key.as_str(), have) {
            ("Policy", Some(have)) => {
                serde_json::from_str::<Value>(have).ok() == serde_json::from_str::<Value>(want).ok()
            }
            (_, Some(have)) => have == want,
            (_, None) => false,
        };
        if !same {
            changes.push(match (key.as_str(), have) {
                ("Policy", _) => "~ Policy".to_string(),
                (_, Some(have)) => format!("~ {key}: {have:?} -> {want:?}"),
                (_, None) => format!("+ {key} = {want:?}"),
            });
            differing.insert(key.clone(), want.clone());
        }
    }
    let mut ops = Vec::new();
    let mut why = Vec::new();
    if !differing.is_empty() {
        why.push("attributes differ");
        ops.push(InitOp::SetQueueAttributes {
            url: queue.url.clone(),
            attributes: differing,
        });
    }
    let add = missing(&d.tags, &queue.tags);
    if !add.is_empty() {
        why.push("karpctl tags missing");
        changes.extend(tag_lines(&add));
        ops.push(InitOp::TagQueue {
            url: queue.url.clone(),
            tags: add,
        });
    }
    items.push(update_or_noop(KIND, &d.queue_name, &why, changes, ops));
}

fn rule_items(items: &mut Vec<Item<InitOp>>, d: &Desired, cur: &Current) {
    const KIND: &str = "eventbridge-rule";
    for spec in &d.rules {
        let put_rule = InitOp::PutRule {
            name: spec.name.clone(),
            description: spec.description.clone(),
            pattern: spec.pattern.to_string(),
            tags: d.tags.clone(),
        };
        let put_target = InitOp::PutTarget {
            rule: spec.name.clone(),
            id: QUEUE_TARGET_ID.into(),
            arn: d.queue_arn.clone(),
        };
        let Some(rule) = cur.rules.get(&spec.name) else {
            items.push(Item::change(
                Resource::new(
                    KIND,
                    &spec.name,
                    Action::Create,
                    "not found; targets the interruption queue",
                ),
                vec![put_rule, put_target],
            ));
            continue;
        };
        let mut ops = Vec::new();
        let mut changes = Vec::new();
        let mut why = Vec::new();
        if rule.pattern != spec.pattern || !rule.enabled {
            why.push(if rule.enabled {
                "event pattern differs"
            } else {
                "disabled"
            });
            changes.push("~ event pattern / state".to_string());
            ops.push(put_rule);
        }
        if !rule.targets.iter().any(|(_, arn)| arn == &d.queue_arn) {
            why.push("does not target the queue");
            changes.push(format!("+ target {}", d.queue_arn));
            ops.push(put_target);
        }
        let add = missing(&d.tags, &rule.tags);
        if !add.is_empty() {
            why.push("karpctl tags missing");
            changes.extend(tag_lines(&add));
            ops.push(InitOp::TagRule {
                arn: rule.arn.clone(),
                tags: add,
            });
        }
        items.push(update_or_noop(KIND, &spec.name, &why, changes, ops));
    }
}

fn policy_items(items: &mut Vec<Item<InitOp>>, d: &Desired, cur: &Current) {
    const KIND: &str = "iam-policy";
    for (doc, arn) in &d.policies {
        let Some(policy) = cur.policies.get(&doc.name) else {
            items.push(Item::change(
                Resource::new(KIND, &doc.name, Action::Create, "not found"),
                vec![InitOp::CreatePolicy {
                    name: doc.name.clone(),
                    description: format!(
                        "Karpenter controller permissions for EKS cluster {} (karpctl)",
                        d.cluster.name
                    ),
                    document: doc.compact(),
                    tags: d.tags.clone(),
                }],
            ));
            continue;
        };
        let mut ops = Vec::new();
        let mut changes = Vec::new();
        let mut why = Vec::new();
        if policy.document != doc.document {
            why.push("document differs");
            changes.push("~ policy document (new default version)".to_string());
            // IAM keeps five versions; make room by deleting the oldest non-default one.
            let delete_first =
                (policy.other_versions.len() >= 4).then(|| policy.other_versions[0].clone());
            ops.push(InitOp::CreatePolicyVersion {
                arn: arn.clone(),
                document: doc.compact(),
                delete_first,
            });
        }
        let add = missing(&d.tags, &policy.tags);
        if !add.is_empty() {
            why.push("karpctl tags missing");
            changes.extend(tag_lines(&add));
            ops.push(InitOp::TagPolicy {
                arn: arn.clone(),
                tags: add,
            });
        }
        items.push(update_or_noop(KIND, &doc.name, &why, changes, ops));
    }
}

fn identity_items(items: &mut Vec<Item<InitOp>>, d: &Desired, cur: &Current) {
    let cluster = &d.cluster.name;
    match d.identity {
        IdentityMode::PodIdentity => {
            items.push(match &cur.pod_identity_addon {
                Some(status) => Item::noop(
                    "eks-addon",
                    POD_IDENTITY_AGENT,
                    format!("installed ({status})"),
                ),
                None => Item::change(
                    Resource::new(
                        "eks-addon",
                        POD_IDENTITY_AGENT,
                        Action::Create,
                        "not installed; Pod Identity needs its agent",
                    ),
                    vec![InitOp::CreateAddon {
                        cluster: cluster.clone(),
                        addon: POD_IDENTITY_AGENT.into(),
                        tags: d.tags.clone(),
                    }],
                ),
            });
            let id = format!("{}/{}", d.namespace, d.service_account);
            const KIND: &str = "eks-pod-identity-association";
            let role_arn = &d.controller_role.arn;
            items.push(match &cur.pod_identity_association {
                None => Item::change(
                    Resource::new(KIND, id, Action::Create, "not found"),
                    vec![InitOp::CreatePodIdentityAssociation {
                        cluster: cluster.clone(),
                        namespace: d.namespace.clone(),
                        service_account: d.service_account.clone(),
                        role_arn: role_arn.clone(),
                        tags: d.tags.clone(),
                    }],
                ),
                Some(a) if &a.role_arn == role_arn => Item::noop(KIND, id, "matches"),
                Some(a) => Item::change(
                    Resource::new(KIND, id, Action::Update, "associated with another role")
                        .with_changes(vec![format!("~ role: {} -> {role_arn}", a.role_arn)]),
                    vec![InitOp::UpdatePodIdentityAssociation {
                        cluster: cluster.clone(),
                        id: a.id.clone(),
                        role_arn: role_arn.clone(),
                    }],
                ),
            });
        }
        IdentityMode::Irsa => {
            let url = d.oidc_provider_url().unwrap_or_default();
            let id = url.trim_start_matches("https://");
            items.push(if cur.oidc_provider {
                Item::noop("iam-oidc-provider", id, "exists")
            } else {
                Item::change(
                    Resource::new(
                        "iam-oidc-provider",
                        id,
                        Action::Create,
                        "not found; IRSA needs the cluster's issuer as an IAM provider",
                    ),
                    vec![InitOp::CreateOidcProvider {
                        url: url.to_string(),
                        tags: d.tags.clone(),
                    }],
                )
            });
        }
    }
}

fn access_items(
    items: &mut Vec<Item<InitOp>>,
    d: &Desired,
    cur: &Current,
) -> Result<(), PlanError> {
    const KIND: &str = "eks-access-entry";
    if !d.cluster.api_access() {
        // CONFIG_MAP clusters have no access entries: nodes join through an aws-auth row.
        const ROW: &str = "aws-auth-row";
        let arn = &d.node_role.arn;
        let text = cur.aws_auth.as_deref().unwrap_or_default();
        items.push(match aws_auth::add_role(text, &MapRole::node(arn))? {
            Merge::Unchanged => Item::noop(ROW, arn, "mapped in kube-system/aws-auth"),
            Merge::Changed(_) => Item::change(
                Resource::new(
                    ROW,
                    arn,
                    Action::Create,
                    "not in kube-system/aws-auth mapRoles (authentication mode CONFIG_MAP); lets Karpenter's nodes join, other rows kept as they are",
                ),
                vec![InitOp::MapNodeRole {
                    rolearn: arn.clone(),
                }],
            ),
        });
        return Ok(());
    }
    let cluster = &d.cluster.name;
    let principal = &d.node_role.arn;
    let create = InitOp::CreateAccessEntry {
        cluster: cluster.clone(),
        principal: principal.clone(),
        kind: "EC2_LINUX".into(),
        tags: d.tags.clone(),
    };
    items.push(match cur.access_entry.as_deref() {
        None => Item::change(
            Resource::new(
                KIND,
                principal,
                Action::Create,
                "not found; lets Karpenter's nodes join the cluster",
            ),
            vec![create],
        ),
        Some("EC2_LINUX") => Item::noop(KIND, principal, "matches"),
        Some(other) => Item::change(
            Resource::new(
                KIND,
                principal,
                Action::Update,
                "wrong type; an entry's type cannot change, so it is replaced",
            )
            .with_changes(vec![format!(
                "~ type: {other} -> EC2_LINUX (delete and create)"
            )]),
            vec![
                InitOp::DeleteAccessEntry {
                    cluster: cluster.clone(),
                    principal: principal.clone(),
                },
                create,
            ],
        ),
    });
    Ok(())
}

fn tag_items(items: &mut Vec<Item<InitOp>>, d: &Desired, cur: &Current) {
    const KIND: &str = "ec2-tags";
    let cluster = &d.cluster.name;
    for id in &d.discovery_targets {
        let empty = Tags::new();
        let have = cur.resource_tags.get(id).unwrap_or(&empty);
        match have.get(DISCOVERY_TAG) {
            Some(v) if v == cluster => items.push(Item::noop(KIND, id, "discovery tag present")),
            other => {
                let change = match other {
                    Some(v) => format!("~ tag {DISCOVERY_TAG}: {v:?} -> {cluster:?}"),
                    None => format!("+ tag {DISCOVERY_TAG} = {cluster:?}"),
                };
                let what = if id.starts_with("subnet-") {
                    "subnet"
                } else {
                    "security group"
                };
                items.push(Item::change(
                    Resource::new(
                        KIND,
                        id,
                        Action::Update,
                        format!("{what} lacks the discovery tag"),
                    )
                    .with_changes(vec![change]),
                    vec![InitOp::CreateTags {
                        resource: id.clone(),
                        tags: Tags::from([
                            (DISCOVERY_TAG.to_string(), cluster.clone()),
                            (DISCOVERY_OWNER_TAG.to_string(), cluster.clone()),
                        ]),
                    }],
                ));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cluster() -> Cluster {
        Cluster {
            name: "demo".into(),
            region: "us-west-2".into(),
            account: "123456789012".into(),
            caller_arn: "arn:aws:iam::123456789012:user/me".into(),
            partition: "aws".into(),
            endpoint: "https://example".into(),
            version: "1.37".into(),
            oidc_issuer: Some("https://oidc.eks.us-west-2.amazonaws.com/id/ABC".into()),
            authentication_mode: "API_AND_CONFIG_MAP".into(),
            cluster_security_group: Some("sg-cluster".into()),
            vpc: "vpc-1".into(),
            node_groups: vec![NodeGroup {
                name: "system".into(),
                subnets: vec!["subnet-b".into(), "subnet-a".into()],
                security_groups: vec!["sg-cluster".into(), "sg-ng".into()],
            }],
            pod_identity_available: true,
            ecr_policy: "AmazonEC2ContainerRegistryPullOnly".into(),
        }
    }

    fn desired(c: Cluster, identity: Option<IdentityMode>) -> Desired {
        Desired::new(
            c,
            &Options {
                identity,
                ..Options::default()
            },
        )
        .unwrap()
    }

    /// The state a completed init leaves: every resource as desired.
    pub(crate) fn converged(d: &Desired) -> Current {
        let role = |spec: &RoleSpec| Role {
            trust: spec.trust.clone(),
            tags: d.tags.clone(),
            attached: spec.policies.iter().cloned().collect(),
        };
        Current {
            aws_auth: None,
            crds: d.crds.clone(),
            autoscalers: vec![],
            recorded: BTreeMap::from([(SETTINGS_KEY.to_owned(), d.settings_record.clone())]),
            objects: d
                .objects
                .iter()
                .map(|o| {
                    (
                        object_key(o),
                        ObjectState {
                            managed_by: MANAGED_BY.into(),
                            hash: o.hash.clone(),
                        },
                    )
                })
                .collect(),
            node_role: Some(role(&d.node_role)),
            controller_role: Some(role(&d.controller_role)),
            queue: Some(Queue {
                url: "https://sqs/q".into(),
                attributes: d.queue_attributes.clone(),
                tags: d.tags.clone(),
            }),
            rules: d
                .rules
                .iter()
                .map(|r| {
                    (
                        r.name.clone(),
                        Rule {
                            arn: format!("arn:rule/{}", r.name),
                            pattern: r.pattern.clone(),
                            enabled: true,
                            targets: vec![(QUEUE_TARGET_ID.into(), d.queue_arn.clone())],
                            tags: d.tags.clone(),
                        },
                    )
                })
                .collect(),
            policies: d
                .policies
                .iter()
                .map(|(doc, _)| {
                    (
                        doc.name.clone(),
                        Policy {
                            document: doc.document.clone(),
                            other_versions: vec![],
                            tags: d.tags.clone(),
                        },
                    )
                })
                .collect(),
            pod_identity_addon: Some("ACTIVE".into()),
            pod_identity_association: Some(Association {
                id: "a-1".into(),
                role_arn: d.controller_role.arn.clone(),
            }),
            oidc_provider: true,
            spot_role: true,
            access_entry: Some("EC2_LINUX".into()),
            resource_tags: d
                .discovery_targets
                .iter()
                .map(|id| {
                    (
                        id.clone(),
                        Tags::from([(DISCOVERY_TAG.into(), "demo".into())]),
                    )
                })
                .collect(),
        }
    }

    fn line(p: &Plan<InitOp>, kind: &str, id: &str) -> Resource {
        p.items
            .iter()
            .map(|i| i.resource.clone())
            .find(|r| r.kind == kind && r.id == id)
            .unwrap_or_else(|| panic!("no {kind} {id} in\n{}", p.render()))
    }

    #[test]
    fn fresh_account_plans_every_resource_as_a_create_in_apply_order() {
        let d = desired(cluster(), None);
        let p = plan(&d, &Current::default()).unwrap();
        let s = p.summary();
        // 2 roles + 4 + 5 attachments, queue, 5 rules, 5 policies, add-on, association,
        // spot role, access entry, 3 CRDs, 12 controller objects, the default EC2NodeClass
        // and NodePool, the settings record; 4 tag updates (2 subnets, 2 security groups).
        assert_eq!(
            (s.add, s.change, s.destroy),
            (2 + 9 + 1 + 5 + 5 + 2 + 1 + 1 + 3 + 12 + 2 + 1, 4, 0)
        );
        let kinds: Vec<&str> = p.items.iter().map(|i| i.resource.kind.as_str()).collect();
        assert_eq!(kinds.first(), Some(&"iam-role"));
        let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
        assert!(at("crd") < at("deployment") && at("deployment") < at("nodepool"));
        assert_eq!(kinds.last(), Some(&"configmap-key"));
        let text = p.render();
        assert!(
            text.contains("  + iam-role KarpenterNodeRole-demo  (create: not found)\n"),
            "{text}"
        );
        assert!(text.contains("  ~ ec2-tags subnet-a  (update in-place: subnet lacks the discovery tag)\n        + tag karpenter.sh/discovery = \"demo\"\n"), "{text}");
        assert!(
            text.ends_with("Plan: 44 to add, 4 to change, 0 to destroy.\n"),
            "{text}"
        );
        // Subnets sort before security groups.
        let tagged: Vec<&str> = p
            .items
            .iter()
            .filter(|i| i.resource.kind == "ec2-tags")
            .map(|i| i.resource.id.as_str())
            .collect();
        assert_eq!(tagged, ["subnet-a", "subnet-b", "sg-cluster", "sg-ng"]);
    }

    /// The whole plan for a fresh account, as `karpctl init --plan` prints it.
    #[test]
    fn fresh_account_plan_snapshot() {
        let mut c = cluster();
        c.node_groups[0].subnets.truncate(1);
        c.node_groups[0].security_groups.clear();
        let text = plan(&desired(c, None), &Current::default())
            .unwrap()
            .render();
        let expected = include_str!("snapshots/fresh_account_plan.txt");
        if text != expected && std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/src/plan/snapshots/fresh_account_plan.txt"
                ),
                &text,
            )
            .unwrap();
            return;
        }
        assert_eq!(text, expected, "UPDATE_SNAPSHOTS=1 rewrites the snapshot");
    }

    #[test]
    fn converged_state_plans_no_changes() {
        let d = desired(cluster(), None);
        let p = plan(&d, &converged(&d)).unwrap();
        assert!(!p.has_changes(), "{}", p.render());
        assert!(p.render().starts_with("No changes."));
        let d = desired(cluster(), Some(IdentityMode::Irsa));
        assert!(!plan(&d, &converged(&d)).unwrap().has_changes());
    }

    #[test]
    fn node_role_trusts_ec2_and_gets_the_four_node_policies() {
        let d = desired(cluster(), None);
        assert_eq!(
            d.node_role.trust["Statement"][0]["Principal"]["Service"],
            "ec2.amazonaws.com"
        );
        let names: Vec<&str> = d
            .node_role
            .policies
            .iter()
            .map(|a| policy_name(a))
            .collect();
        assert_eq!(
            names,
            [
                "AmazonEKSWorkerNodePolicy",
                "AmazonEKS_CNI_Policy",
                "AmazonEC2ContainerRegistryPullOnly",
                "AmazonSSMManagedInstanceCore"
            ]
        );
    }

    #[test]
    fn identity_is_pod_identity_when_the_cluster_supports_it_else_irsa() {
        assert_eq!(desired(cluster(), None).identity, IdentityMode::PodIdentity);
        let mut c = cluster();
        c.authentication_mode = "CONFIG_MAP".into();
        c.pod_identity_available = false;
        let d = desired(c, None);
        assert_eq!(d.identity, IdentityMode::Irsa);
        let stmt = &d.controller_role.trust["Statement"][0];
        assert_eq!(stmt["Action"], "sts:AssumeRoleWithWebIdentity");
        let cond = &stmt["Condition"]["StringEquals"];
        assert_eq!(
            cond["oidc.eks.us-west-2.amazonaws.com/id/ABC:sub"],
            "system:serviceaccount:kube-system:karpenter"
        );
        assert_eq!(
            cond["oidc.eks.us-west-2.amazonaws.com/id/ABC:aud"],
            "sts.amazonaws.com"
        );
        assert_eq!(
            stmt["Principal"]["Federated"],
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/ABC"
        );
        let pod = desired(cluster(), Some(IdentityMode::PodIdentity));
        let stmt = &pod.controller_role.trust["Statement"][0];
        assert_eq!(stmt["Principal"]["Service"], "pods.eks.amazonaws.com");
        assert_eq!(stmt["Action"], json!(["sts:AssumeRole", "sts:TagSession"]));
        // Conditioned on the account, the cluster, the namespace and the service account.
        assert_eq!(
            stmt["Condition"],
            json!({
                "StringEquals": {
                    "aws:SourceAccount": "123456789012",
                    "aws:RequestTag/kubernetes-namespace": "kube-system",
                    "aws:RequestTag/kubernetes-service-account": "karpenter",
                },
                "ArnEquals": {"aws:SourceArn": "arn:aws:eks:us-west-2:123456789012:cluster/demo"},
            })
        );
    }

    #[test]
    fn dependencies_come_before_what_names_them() {
        let position = |p: &Plan<InitOp>, kind: &str| {
            p.items
                .iter()
                .position(|i| i.resource.kind == kind)
                .unwrap()
        };
        let irsa = plan(
            &desired(cluster(), Some(IdentityMode::Irsa)),
            &Current::default(),
        )
        .unwrap();
        let controller = irsa
            .items
            .iter()
            .position(|i| i.resource.id == "KarpenterControllerRole-demo")
            .unwrap();
        assert!(position(&irsa, "iam-oidc-provider") < controller);
        assert!(position(&irsa, "sqs-queue") < position(&irsa, "eventbridge-rule"));
        assert!(position(&irsa, "iam-policy") < controller);
        let pod = plan(&desired(cluster(), None), &Current::default()).unwrap();
        let controller = pod
            .items
            .iter()
            .position(|i| i.resource.id == "KarpenterControllerRole-demo")
            .unwrap();
        assert!(controller < position(&pod, "eks-pod-identity-association"));
    }

    #[test]
    fn the_longest_cluster_names_still_give_valid_resource_names() {
        let mut c = cluster();
        c.name = format!("{}-x", "long-cluster-name".repeat(5)); // 87 characters
        let d = desired(c, None);
        assert!(d.node_role.name.len() <= 64, "{}", d.node_role.name);
        assert!(
            d.controller_role.name.len() <= 64,
            "{}",
            d.controller_role.name
        );
        assert!(d.queue_name.len() <= 80, "{}", d.queue_name);
        for r in &d.rules {
            assert!(r.name.len() <= 64, "{}", r.name);
        }
        for (p, _) in &d.policies {
            assert!(p.name.len() <= 128, "{}", p.name);
        }
        let names: BTreeSet<&str> = d.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), 5);
    }

    #[test]
    fn irsa_forced_without_an_oidc_issuer_is_a_clear_error() {
        let mut c = cluster();
        c.oidc_issuer = None;
        let err = Desired::new(
            c,
            &Options {
                identity: Some(IdentityMode::Irsa),
                ..Options::default()
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--identity irsa needs an OIDC issuer, and cluster demo has none"),
            "{err}"
        );
    }

    #[test]
    fn config_map_clusters_get_an_aws_auth_row_instead_of_an_access_entry() {
        let mut c = cluster();
        c.authentication_mode = "CONFIG_MAP".into();
        c.pod_identity_available = false;
        let d = desired(c, None);
        let arn = d.node_role.arn.clone();
        let existing = "# admins\n- rolearn: arn:aws:iam::123456789012:role/admin\n  username: admin\n  groups:\n  - system:masters\n";
        let cur = Current {
            aws_auth: Some(existing.into()),
            ..Current::default()
        };
        let p = plan(&d, &cur).unwrap();
        assert!(
            p.items
                .iter()
                .all(|i| i.resource.kind != "eks-access-entry")
        );
        let row = p
            .items
            .iter()
            .find(|i| i.resource.kind == "aws-auth-row")
            .unwrap();
        assert_eq!(row.resource.action, Action::Create);
        assert_eq!(
            row.ops,
            [InitOp::MapNodeRole {
                rolearn: arn.clone()
            }]
        );

        let mapped =
            format!("{existing}- rolearn: {arn}\n  username: x\n  groups: [system:nodes]\n");
        let mut cur = converged(&d);
        cur.aws_auth = Some(mapped);
        assert!(!plan(&d, &cur).unwrap().has_changes());

        cur.aws_auth = Some("- rolearn: [broken\n".into());
        let err = plan(&d, &cur).unwrap_err().to_string();
        assert!(
            err.contains("aws-auth ConfigMap's mapRoles is not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn drift_is_planned_as_in_place_updates_naming_what_changed() {
        let d = desired(cluster(), None);
        let mut cur = converged(&d);
        cur.queue
            .as_mut()
            .unwrap()
            .attributes
            .insert("MessageRetentionPeriod".into(), "345600".into());
        cur.node_role
            .as_mut()
            .unwrap()
            .trust
            .as_object_mut()
            .unwrap()
            .insert("Id".into(), json!("edited"));
        cur.node_role
            .as_mut()
            .unwrap()
            .attached
            .remove(&d.node_role.policies[0]);
        cur.rules
            .get_mut("Karpenter-demo-ScheduledChange")
            .unwrap()
            .targets
            .clear();
        cur.access_entry = Some("STANDARD".into());
        cur.resource_tags.insert(
            "sg-ng".into(),
            Tags::from([(DISCOVERY_TAG.into(), "other".into())]),
        );
        let p = plan(&d, &cur).unwrap();
        let q = line(&p, "sqs-queue", "Karpenter-demo");
        assert_eq!(q.action, Action::Update);
        assert_eq!(
            q.changes,
            ["~ MessageRetentionPeriod: \"345600\" -> \"300\""]
        );
        let role = line(&p, "iam-role", "KarpenterNodeRole-demo");
        assert_eq!(role.reason, "trust policy differs");
        assert_eq!(
            line(
                &p,
                "iam-role-policy-attachment",
                "KarpenterNodeRole-demo/AmazonEKSWorkerNodePolicy"
            )
            .action,
            Action::Create
        );
        assert_eq!(
            line(&p, "eventbridge-rule", "Karpenter-demo-ScheduledChange").reason,
            "does not target the queue"
        );
        assert_eq!(
            line(&p, "eks-access-entry", &d.node_role.arn).changes,
            ["~ type: STANDARD -> EC2_LINUX (delete and create)"]
        );
        assert_eq!(
            line(&p, "ec2-tags", "sg-ng").changes,
            ["~ tag karpenter.sh/discovery: \"other\" -> \"demo\""]
        );
        assert_eq!(
            p.summary(),
            crate::plan::Summary {
                add: 1,
                change: 5,
                destroy: 0
            }
        );
    }

    #[test]
    fn resources_with_inits_names_but_not_karpctls_tags_stop_init_unless_adopted() {
        // An account set up with upstream's getting-started template: same names, no tags.
        let d = desired(cluster(), None);
        let mut cur = converged(&d);
        cur.node_role.as_mut().unwrap().tags.clear();
        cur.controller_role.as_mut().unwrap().tags =
            Tags::from([(CLUSTER_TAG.into(), "demo".into())]);
        cur.queue.as_mut().unwrap().tags.clear();
        cur.policies.values_mut().next().unwrap().tags.clear();
        let err = plan(&d, &cur).unwrap_err().to_string();
        for name in [
            "iam-role KarpenterNodeRole-demo",
            "iam-role KarpenterControllerRole-demo",
            "sqs-queue Karpenter-demo",
            "iam-policy KarpenterController",
            "--adopt",
        ] {
            assert!(err.contains(name), "{name} missing from: {err}");
        }

        // A role karpctl made for another cluster of the same name prefix is not ours either.
        let mut other = converged(&d);
        other
            .node_role
            .as_mut()
            .unwrap()
            .tags
            .insert(CLUSTER_TAG.into(), "other".into());
        assert!(matches!(plan(&d, &other), Err(PlanError::NotOurs { .. })));

        let adopting = Desired {
            adopt: true,
            ..d.clone()
        };
        let p = plan(&adopting, &cur).unwrap();
        let role = line(&p, "iam-role", "KarpenterNodeRole-demo");
        assert_eq!(role.action, Action::Update);
        assert_eq!(
            role.reason,
            "adopt: exists and is not karpctl's (--adopt); karpctl tags missing"
        );
        assert!(
            line(&p, "sqs-queue", "Karpenter-demo")
                .reason
                .starts_with("adopt: ")
        );
        // Ours stay as they were.
        assert!(
            !line(&p, "eventbridge-rule", "Karpenter-demo-ScheduledChange")
                .reason
                .starts_with("adopt")
        );
    }

    #[test]
    fn settings_that_reach_the_templates_are_validated_first() {
        let bad = |options: Options| match Desired::new(cluster(), &options) {
            Err(PlanError::InvalidSetting { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        };
        let with = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o
        };
        assert_eq!(
            bad(with(|o| o.namespace = "kube-system\nkind: Secret".into())),
            "namespace"
        );
        assert_eq!(bad(with(|o| o.namespace = "Upper".into())), "namespace");
        assert_eq!(
            bad(with(|o| o.service_account = "a b".into())),
            "service account"
        );
        assert_eq!(
            bad(with(|o| o.service_account = "x\"}".into())),
            "service account"
        );
        assert_eq!(
            bad(with(
                |o| o.controller.image = "repo/img:1\n  command: [sh]".into()
            )),
            "image"
        );
        assert_eq!(
            bad(with(|o| o.controller.memory = "1Gi # x".into())),
            "controller.memory"
        );
        let ok = with(|o| {
            o.namespace = "karpenter".into();
            o.service_account = "karpenter.controller".into();
            o.controller.image =
                "registry.example.com:5000/karpenter/controller@sha256:0123abcd".into();
        });
        assert!(Desired::new(cluster(), &ok).is_ok());
    }

    #[test]
    fn a_changed_policy_document_makes_room_for_a_new_version() {
        let d = desired(cluster(), None);
        let mut cur = converged(&d);
        let name = d.policies[0].0.name.clone();
        let p = cur.policies.get_mut(&name).unwrap();
        p.document = json!({"Version": "2012-10-17", "Statement": []});
        p.other_versions = vec!["v1".into(), "v2".into(), "v3".into(), "v4".into()];
        let plan = plan(&d, &cur).unwrap();
        let item = plan.items.iter().find(|i| i.resource.id == name).unwrap();
        assert!(
            matches!(&item.ops[0], InitOp::CreatePolicyVersion { delete_first: Some(v), .. } if v == "v1")
        );
    }

    #[test]
    fn queue_policy_allows_eventbridge_and_denies_plain_http() {
        let d = desired(cluster(), None);
        let policy: Value = serde_json::from_str(&d.queue_attributes["Policy"]).unwrap();
        assert_eq!(
            policy["Statement"][0]["Principal"]["Service"],
            json!(["events.amazonaws.com", "sqs.amazonaws.com"])
        );
        assert_eq!(policy["Statement"][1]["Effect"], "Deny");
        assert_eq!(
            policy["Statement"][1]["Condition"]["Bool"]["aws:SecureTransport"],
            "false"
        );
        assert_eq!(d.queue_attributes["MessageRetentionPeriod"], "300");
        assert_eq!(d.rules.len(), 5);
        // Only this cluster's five rules may send (hardening beyond upstream).
        assert_eq!(
            policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
            json!(
                d.rules
                    .iter()
                    .map(|r| format!("arn:aws:events:us-west-2:123456789012:rule/{}", r.name))
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            d.rules[1].pattern,
            json!({"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]})
        );
    }

    fn autoscaler(replicas: i32) -> Autoscaler {
        Autoscaler {
            namespace: "kube-system".into(),
            name: "cluster-autoscaler".into(),
            replicas,
        }
    }

    #[test]
    fn crds_are_created_when_absent_reapplied_when_their_hash_differs_else_unchanged() {
        let d = desired(cluster(), None);
        assert_eq!(d.crds.len(), 3);
        let mut cur = converged(&d);
        let mut names = d.crds.keys();
        let absent = names.next().unwrap().clone();
        let stale = names.next().unwrap().clone();
        let same = names.next().unwrap().clone();
        cur.crds.remove(&absent);
        cur.crds.insert(stale.clone(), "0123".into());
        let p = plan(&d, &cur).unwrap();
        let created = line(&p, "crd", &absent);
        assert_eq!(created.action, Action::Create);
        let updated = line(&p, "crd", &stale);
        assert_eq!(updated.action, Action::Update);
        assert_eq!(
            updated.changes,
            [format!(
                "~ annotation karpctl.sh/spec-hash: \"0123\" -> {:?}",
                d.crds[&stale]
            )]
        );
        assert_eq!(line(&p, "crd", &same).action, Action::NoOp);
        let ops: Vec<&InitOp> = p
            .items
            .iter()
            .filter(|i| i.resource.kind == "crd")
            .flat_map(|i| &i.ops)
            .collect();
        assert_eq!(
            ops,
            [
                &InitOp::ApplyCrd { name: absent },
                &InitOp::ApplyCrd { name: stale }
            ]
        );
    }

    #[test]
    fn crd_hashes_are_stable_and_the_labels_mark_them_as_karpctls() {
        let crds = crate::kube::cluster_state::desired_crds();
        let again = crate::kube::cluster_state::desired_crds();
        for (a, b) in crds.iter().zip(&again) {
            assert_eq!(a.metadata.annotations, b.metadata.annotations);
            assert_eq!(
                a.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                "karpctl"
            );
        }
        let hashes: BTreeSet<_> = crds
            .iter()
            .map(crate::kube::cluster_state::spec_hash)
            .collect();
        assert_eq!(hashes.len(), 3);
    }

    #[test]
    fn a_running_cluster_autoscaler_is_recorded_then_scaled_to_zero() {
        let d = desired(cluster(), None);
        let mut cur = converged(&d);
        cur.autoscalers = vec![autoscaler(2)];
        let p = plan(&d, &cur).unwrap();
        let item = p
            .items
            .iter()
            .find(|i| i.resource.id == "kube-system/cluster-autoscaler")
            .unwrap();
        assert_eq!(item.resource.action, Action::Update);
        assert_eq!(item.resource.changes, ["~ replicas: 2 -> 0"]);
        assert_eq!(
            item.ops,
            [
                InitOp::Record {
                    key: "cluster-autoscaler.kube-system.cluster-autoscaler".into(),
                    value:
                        r#"{"namespace":"kube-system","name":"cluster-autoscaler","replicas":2}"#
                            .into(),
                },
                InitOp::ScaleDeployment {
                    namespace: "kube-system".into(),
                    name: "cluster-autoscaler".into(),
                    replicas: 0,
                },
            ]
        );
    }

    #[test]
    fn controller_objects_change_only_when_karpctls_content_does_and_foreign_ones_are_not_taken_over()
     {
        let d = desired(cluster(), None);
        let mut cur = converged(&d);
        assert!(!plan(&d, &cur).unwrap().has_changes());

        // A changed setting re-applies just the Deployment.
        let d2 = Desired::new(
            cluster(),
            &Options {
                controller: ControllerSettings {
                    replicas: 3,
                    ..Default::default()
                },
                ..Options::default()
            },
        )
        .unwrap();
        let p = plan(&d2, &cur).unwrap();
        let changed: Vec<String> = p
            .items
            .iter()
            .filter(|i| i.resource.action != Action::NoOp)
            .map(|i| format!("{} {}", i.resource.kind, i.resource.id))
            .collect();
        assert_eq!(
            changed,
            vec![
                "deployment kube-system/karpenter".to_owned(),
                "configmap-key kube-system/karpctl-state[init]".to_owned()
            ]
        );

        // A NodePool named like ours that the user made is theirs: left alone.
        let np = d.objects.iter().find(|o| o.kind == "NodePool").unwrap();
        cur.objects.insert(
            object_key(np),
            ObjectState {
                managed_by: String::new(),
                hash: String::new(),
            },
        );
        let p = plan(&d, &cur).unwrap();
        assert!(!p.has_changes(), "{}", p.render());
        assert_eq!(
            line(&p, "nodepool", "default").reason,
            "exists and is not karpctl's; left alone"
        );

        // A Helm-installed controller is never taken over.
        let dep = d.objects.iter().find(|o| o.kind == "Deployment").unwrap();
        cur.objects.insert(
            object_key(dep),
            ObjectState {
                managed_by: "Helm".into(),
                hash: String::new(),
            },
        );
        let err = plan(&d, &cur).unwrap_err().to_string();
        assert!(
            err.contains(
                "deployment kube-system/karpenter exists and is not karpctl's (managed by Helm)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_cluster_autoscaler_at_zero_is_never_rerecorded() {
        let d = desired(cluster(), None);
        let mut cur = converged(&d);
        cur.autoscalers = vec![autoscaler(0)];
        // Scaled down by an earlier run: the recorded count stays as it is.
        cur.recorded.insert(
            autoscaler(0).state_key(),
            serde_json::to_string(&autoscaler(1)).unwrap(),
        );
        let p = plan(&d, &cur).unwrap();
        assert!(!p.has_changes(), "{}", p.render());
        assert_eq!(
            line(&p, "deployment", "kube-system/cluster-autoscaler").reason,
            "scaled to 0; previous replicas recorded in karpctl-state"
        );
        // Off before karpctl came: nothing to record, nothing to do.
        cur.recorded.remove(&autoscaler(0).state_key());
        let p = plan(&d, &cur).unwrap();
        assert!(!p.has_changes(), "{}", p.render());
        assert!(p.items.iter().all(|i| i.ops.is_empty()));
    }
}

//! The permissions `karpctl init` and `karpctl uninstall` need, as one IAM policy for one
//! cluster: derived from the calls they make (`src/aws/`), each statement named for the step
//! that needs it, scoped to the names init gives its resources (the same `names::fit` as
//! `init`), so an operator can hand an installer exactly this and nothing more
//! (`karpctl init --print-installer-policy`, `docs/iam.md`). A sandbox test runs init and
//! uninstall as a principal holding only this policy (`tests/installer_policy.rs`).

use serde_json::{Value, json};

use super::init::{DISCOVERY_OWNER_TAG, DISCOVERY_TAG, INTERRUPTION_EVENTS};
use super::names;

/// What the policy is scoped to.
#[derive(Debug, Clone)]
pub struct InstallerScope {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub cluster: String,
}

/// The managed policies `init` creates, as `iam_policies` names them.
const CONTROLLER_POLICY_PARTS: &[&str] = &[
    "NodeLifecycle",
    "IAMIntegration",
    "EKSIntegration",
    "Interruption",
    "ResourceDiscovery",
];

/// The installer's policy document for `scope`.
pub fn installer_policy(scope: &InstallerScope) -> Value {
    let InstallerScope {
        partition: p,
        region: r,
        account: a,
        cluster: c,
    } = scope;
    let role = |name: String| format!("arn:{p}:iam::{a}:role/{name}");
    let node_role = role(names::fit("KarpenterNodeRole-", c, "", names::ROLE_OR_RULE));
    let controller_role = role(names::fit(
        "KarpenterControllerRole-",
        c,
        "",
        names::ROLE_OR_RULE,
    ));
    let policies: Vec<String> = CONTROLLER_POLICY_PARTS
        .iter()
        .map(|part| {
            let name = names::fit(
                &format!("KarpenterController{part}Policy-"),
                c,
                "",
                names::POLICY,
            );
            format!("arn:{p}:iam::{a}:policy/{name}")
        })
        .collect();
    // The five names differ only in their part unless `fit` had to shorten them: then one
    // pattern names exactly them (and keeps the document under IAM's size limit).
    let untruncated = CONTROLLER_POLICY_PARTS
        .iter()
        .zip(&policies)
        .all(|(part, arn)| arn.ends_with(&format!(":policy/KarpenterController{part}Policy-{c}")));
    let policy_refs: Vec<String> = if untruncated {
        vec![format!(
            "arn:{p}:iam::{a}:policy/KarpenterController*Policy-{c}"
        )]
    } else {
        policies
    };
    let queue = format!(
        "arn:{p}:sqs:{r}:{a}:{}",
        names::fit("Karpenter-", c, "", names::QUEUE)
    );
    let rules: Vec<String> = INTERRUPTION_EVENTS
        .iter()
        .map(|(suffix, _, _)| {
            let name = names::fit("Karpenter-", c, &format!("-{suffix}"), names::ROLE_OR_RULE);
            format!("arn:{p}:events:{r}:{a}:rule/{name}")
        })
        .collect();
    let eks = |rest: &str| format!("arn:{p}:eks:{r}:{a}:{rest}");
    let mut attachable = policy_refs.clone();
    attachable.extend(
        [
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonEC2ContainerRegistryPullOnly",
            "AmazonEC2ContainerRegistryReadOnly",
            "AmazonSSMManagedInstanceCore",
        ]
        .iter()
        .map(|n| format!("arn:{p}:iam::aws:policy/{n}")),
    );
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Discovery",
                "Effect": "Allow",
                "Action": [
                    "eks:ListClusters",
                    "eks:DescribeAddonVersions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeInstances",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeLaunchTemplateVersions",
                    "iam:ListRoles",
                    "iam:ListInstanceProfiles",
                    "iam:ListOpenIDConnectProviders"
                ],
                "Resource": "*"
            },
            {
                "Sid": "EksCluster",
                "Effect": "Allow",
                "Action": [
                    "eks:DescribeCluster",
                    "eks:ListNodegroups",
                    "eks:DescribeNodegroup",
                    "eks:CreateAddon",
                    "eks:DescribeAddon",
                    "eks:CreateAccessEntry",
                    "eks:DescribeAccessEntry",
                    "eks:DeleteAccessEntry",
                    "eks:ListPodIdentityAssociations",
                    "eks:CreatePodIdentityAssociation",
                    "eks:DescribePodIdentityAssociation",
                    "eks:UpdatePodIdentityAssociation",
                    "eks:DeletePodIdentityAssociation",
                    "eks:TagResource",
                    "eks:ListTagsForResource"
                ],
                "Resource": [
                    eks(&format!("cluster/{c}")),
                    eks(&format!("nodegroup/{c}/*")),
                    eks(&format!("addon/{c}/*")),
                    eks(&format!("access-entry/{c}/*")),
                    eks(&format!("podidentityassociation/{c}/*"))
                ]
            },
            {
                "Sid": "NodeAndControllerRoles",
                "Effect": "Allow",
                "Action": [
                    "iam:CreateRole",
                    "iam:GetRole",
                    "iam:DeleteRole",
                    "iam:TagRole",
                    "iam:ListRoleTags",
                    "iam:UpdateAssumeRolePolicy",
                    "iam:ListAttachedRolePolicies",
                    "iam:ListRolePolicies",
                    "iam:DeleteRolePolicy",
                    "iam:ListInstanceProfilesForRole",
                    "iam:DetachRolePolicy"
                ],
                "Resource": [node_role, controller_role]
            },
            {
                "Sid": "AttachOnlyKarpctlPolicies",
                "Effect": "Allow",
                "Action": "iam:AttachRolePolicy",
                "Resource": [node_role, controller_role],
                "Condition": {"ArnLike": {"iam:PolicyARN": attachable}}
            },
            {
                "Sid": "PassControllerRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": controller_role,
                "Condition": {"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com"}}
            },
            {
                "Sid": "ChooseTheNodesEcrPolicy",
                "Effect": "Allow",
                "Action": "iam:GetPolicy",
                "Resource": format!("arn:{p}:iam::aws:policy/AmazonEC2ContainerRegistry*")
            },
            {
                "Sid": "ControllerPolicies",
                "Effect": "Allow",
                "Action": [
                    "iam:CreatePolicy",
                    "iam:GetPolicy",
                    "iam:GetPolicyVersion",
                    "iam:ListPolicyVersions",
                    "iam:CreatePolicyVersion",
                    "iam:DeletePolicyVersion",
                    "iam:DeletePolicy",
                    "iam:TagPolicy",
                    "iam:ListPolicyTags",
                    "iam:ListEntitiesForPolicy"
                ],
                "Resource": policy_refs
            },
            {
                "Sid": "UninstallDetachPolicies",
                "Effect": "Allow",
                "Action": ["iam:DetachRolePolicy", "iam:DetachUserPolicy", "iam:DetachGroupPolicy"],
                "Resource": [
                    format!("arn:{p}:iam::{a}:role/*"),
                    format!("arn:{p}:iam::{a}:user/*"),
                    format!("arn:{p}:iam::{a}:group/*")
                ],
                "Condition": {"ArnLike": {"iam:PolicyARN": policy_refs}}
            },
            {
                "Sid": "UninstallInstanceProfiles",
                "Effect": "Allow",
                "Action": ["iam:RemoveRoleFromInstanceProfile", "iam:ListInstanceProfileTags"],
                "Resource": format!("arn:{p}:iam::{a}:instance-profile/*")
            },
            {
                "Sid": "SpotServiceLinkedRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": format!("arn:{p}:iam::{a}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"),
                "Condition": {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}
            },
            {
                "Sid": "IrsaOidcProvider",
                "Effect": "Allow",
                "Action": [
                    "iam:CreateOpenIDConnectProvider",
                    "iam:DeleteOpenIDConnectProvider",
                    "iam:TagOpenIDConnectProvider",
                    "iam:ListOpenIDConnectProviderTags"
                ],
                "Resource": format!("arn:{p}:iam::{a}:oidc-provider/oidc.eks.{r}.*")
            },
            {
                "Sid": "InterruptionQueue",
                "Effect": "Allow",
                "Action": [
                    "sqs:CreateQueue",
                    "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes",
                    "sqs:SetQueueAttributes",
                    "sqs:TagQueue",
                    "sqs:ListQueueTags",
                    "sqs:DeleteQueue"
                ],
                "Resource": queue
            },
            {
                "Sid": "InterruptionRules",
                "Effect": "Allow",
                "Action": [
                    "events:PutRule",
                    "events:DescribeRule",
                    "events:DeleteRule",
                    "events:PutTargets",
                    "events:RemoveTargets",
                    "events:ListTargetsByRule",
                    "events:TagResource",
                    "events:ListTagsForResource"
                ],
                "Resource": rules
            },
            {
                "Sid": "DiscoveryTags",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
                "Resource": [
                    format!("arn:{p}:ec2:{r}:{a}:subnet/*"),
                    format!("arn:{p}:ec2:{r}:{a}:security-group/*")
                ],
                "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": [DISCOVERY_TAG, DISCOVERY_OWNER_TAG]}}
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(cluster: &str) -> InstallerScope {
        InstallerScope {
            partition: "aws".into(),
            region: "us-west-2".into(),
            account: "123456789012".into(),
            cluster: cluster.into(),
        }
    }

    #[test]
    fn the_installer_policy_is_scoped_to_the_clusters_names_and_fits_a_managed_policy() {
        let doc = installer_policy(&scope("sandbox"));
        let text = doc.to_string();
        for name in [
            "role/KarpenterNodeRole-sandbox",
            "role/KarpenterControllerRole-sandbox",
            "policy/KarpenterController*Policy-sandbox",
            "sqs:us-west-2:123456789012:Karpenter-sandbox",
            "rule/Karpenter-sandbox-SpotInterruption",
            "cluster/sandbox",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(
            super::super::iam_policies::iam_size(&text)
                <= super::super::iam_policies::MANAGED_POLICY_LIMIT,
            "{}",
            text.len()
        );
    }

    #[test]
    fn a_long_cluster_name_gets_the_same_shortened_names_as_init() {
        let long = "a-very-long-cluster-name-that-does-not-fit-in-a-role-name-at-all";
        let text = installer_policy(&scope(long)).to_string();
        let node_role = names::fit("KarpenterNodeRole-", long, "", names::ROLE_OR_RULE);
        assert!(text.contains(&format!("role/{node_role}\"")), "{text}");
    }

    #[test]
    fn every_statement_has_a_sid_naming_its_step() {
        let doc = installer_policy(&scope("sandbox"));
        for s in doc["Statement"].as_array().unwrap() {
            assert!(s["Sid"].as_str().is_some_and(|sid| !sid.is_empty()), "{s}");
        }
    }
}

//! The controller's IAM policy documents, rendered from `templates/iam/*.json.hbs` for one
//! cluster, region, account, interruption queue and node role. Least privilege as upstream
//! Karpenter's v1 CloudFormation template grants it, split by concern into several managed
//! policies so that no document reaches IAM's 6,144-character limit for managed policies
//! (IAM counts every character except whitespace).

use handlebars::Handlebars;
use serde::Serialize;
use serde_json::Value;

/// IAM's limit for one managed policy document, whitespace excluded.
pub const MANAGED_POLICY_LIMIT: usize = 6144;

/// Each template and the suffix of its managed policy's name, as upstream names them
/// (`KarpenterController<Part>Policy-<cluster>`), so operators recognise them.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "NodeLifecycle",
        include_str!("../../templates/iam/node-lifecycle.json.hbs"),
    ),
    (
        "IAMIntegration",
        include_str!("../../templates/iam/iam-integration.json.hbs"),
    ),
    (
        "EKSIntegration",
        include_str!("../../templates/iam/eks-integration.json.hbs"),
    ),
    (
        "Interruption",
        include_str!("../../templates/iam/interruption.json.hbs"),
    ),
    (
        "ResourceDiscovery",
        include_str!("../../templates/iam/resource-discovery.json.hbs"),
    ),
];

/// What the templates are scoped to.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub cluster: String,
    pub queue_arn: String,
    pub node_role_arn: String,
    /// EC2's service principal in this partition (`ec2.amazonaws.com.cn` in China).
    pub ec2_principal: String,
}

/// A service's principal in a partition: AWS names services by the partition's DNS suffix.
pub fn service_principal(partition: &str, service: &str) -> String {
    let suffix = match partition {
        "aws-cn" => "amazonaws.com.cn",
        "aws-iso" => "c2s.ic.gov",
        "aws-iso-b" => "sc2s.sgov.gov",
        _ => "amazonaws.com",
    };
    format!("{service}.{suffix}")
}

/// One rendered managed policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    pub name: String,
    pub document: Value,
}

impl PolicyDocument {
    /// The document as it is uploaded: compact JSON.
    pub fn compact(&self) -> String {
        self.document.to_string()
    }
}

/// The size IAM checks against its limits: every character that is not whitespace.
pub fn iam_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("rendering IAM policy template {name}: {source}")]
    Template {
        name: String,
        source: Box<handlebars::RenderError>,
    },
    #[error("IAM policy template {name} did not render to JSON: {source}")]
    Json {
        name: String,
        source: serde_json::Error,
    },
    #[error("IAM policy {name} is {size} characters; IAM allows {MANAGED_POLICY_LIMIT}")]
    TooLarge { name: String, size: usize },
}

/// Renders every controller policy for `scope`; each is valid JSON and under the limit.
pub fn controller_policies(scope: &Scope) -> Result<Vec<PolicyDocument>, RenderError> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    TEMPLATES
        .iter()
        .map(|(part, template)| {
            let name = super::names::fit(
                &format!("KarpenterController{part}Policy-"),
                &scope.cluster,
                "",
                super::names::POLICY,
            );
            let text =
                hb.render_template(template, scope)
                    .map_err(|source| RenderError::Template {
                        name: name.clone(),
                        source: Box::new(source),
                    })?;
            let document: Value =
                serde_json::from_str(&text).map_err(|source| RenderError::Json {
                    name: name.clone(),
                    source,
                })?;
            let size = iam_size(&document.to_string());
            if size >= MANAGED_POLICY_LIMIT {
                return Err(RenderError::TooLarge { name, size });
            }
            Ok(PolicyDocument { name, document })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            account: "111122223333".into(),
            cluster: "prod".into(),
            queue_arn: "arn:aws:sqs:eu-west-1:111122223333:Karpenter-prod".into(),
            node_role_arn: "arn:aws:iam::111122223333:role/KarpenterNodeRole-prod".into(),
            ec2_principal: "ec2.amazonaws.com".into(),
        }
    }

    #[test]
    fn china_and_govcloud_get_their_partition_in_every_arn_and_ec2s_principal() {
        for (partition, region, ec2) in [
            ("aws-cn", "cn-north-1", "ec2.amazonaws.com.cn"),
            ("aws-us-gov", "us-gov-west-1", "ec2.amazonaws.com"),
        ] {
            let scope = Scope {
                partition: partition.into(),
                region: region.into(),
                queue_arn: format!("arn:{partition}:sqs:{region}:111122223333:Karpenter-prod"),
                node_role_arn: format!(
                    "arn:{partition}:iam::111122223333:role/KarpenterNodeRole-prod"
                ),
                ec2_principal: service_principal(partition, "ec2"),
                ..scope()
            };
            let policies = controller_policies(&scope).unwrap();
            let text: String = policies.iter().map(PolicyDocument::compact).collect();
            assert!(!text.contains("arn:aws:"), "{partition}: {text}");
            assert!(
                text.contains(&format!("\"iam:PassedToService\":\"{ec2}\"")),
                "{text}"
            );
        }
    }

    fn all_statements(policies: &[PolicyDocument]) -> Vec<Value> {
        policies
            .iter()
            .flat_map(|p| p.document["Statement"].as_array().unwrap().clone())
            .collect()
    }

    fn statement(policies: &[PolicyDocument], sid: &str) -> Value {
        all_statements(policies)
            .into_iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
    }

    #[test]
    fn every_document_is_json_and_under_the_managed_policy_limit() {
        let policies = controller_policies(&scope()).unwrap();
        assert_eq!(policies.len(), TEMPLATES.len());
        for p in &policies {
            let pretty = serde_json::to_string_pretty(&p.document).unwrap();
            let size = iam_size(&pretty);
            assert_eq!(size, iam_size(&p.compact()), "whitespace is not counted");
            assert!(size < MANAGED_POLICY_LIMIT, "{} is {size}", p.name);
            assert_eq!(p.document["Version"], "2012-10-17");
        }
        // Together they exceed what one document could hold comfortably; that is why they are split.
        let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"KarpenterControllerNodeLifecyclePolicy-prod"));
    }

    #[test]
    fn iam_size_ignores_all_whitespace() {
        assert_eq!(iam_size("{ \"a\" :\n\t\"b c\" }"), 10);
    }

    #[test]
    fn launches_require_this_clusters_ownership_and_nodepool_request_tags() {
        let p = controller_policies(&scope()).unwrap();
        let s = statement(&p, "AllowScopedEC2InstanceActionsWithTags");
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:RequestTag/kubernetes.io/cluster/prod"],
            "owned"
        );
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:RequestTag/eks:eks-cluster-name"],
            "prod"
        );
        assert_eq!(
            s["Condition"]["StringLike"]["aws:RequestTag/karpenter.sh/nodepool"],
            "*"
        );
        let tagging = statement(&p, "AllowScopedResourceTagging");
        assert_eq!(
            tagging["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
            serde_json::json!(["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"])
        );
        let creation = statement(&p, "AllowScopedResourceCreationTagging");
        assert!(creation["Condition"]["StringEquals"]["ec2:CreateAction"].is_array());
        let deletion = statement(&p, "AllowScopedDeletion");
        assert_eq!(
            deletion["Condition"]["StringEquals"]["aws:ResourceTag/kubernetes.io/cluster/prod"],
            "owned"
        );
    }

    #[test]
    fn pass_role_is_only_the_node_role_and_only_to_ec2() {
        let p = controller_policies(&scope()).unwrap();
        let s = statement(&p, "AllowPassingInstanceRole");
        assert_eq!(s["Resource"], scope().node_role_arn);
        assert_eq!(
            s["Condition"]["StringEquals"]["iam:PassedToService"],
            "ec2.amazonaws.com"
        );
    }

    #[test]
    fn instance_profile_writes_are_scoped_to_this_cluster_and_region() {
        let p = controller_policies(&scope()).unwrap();
        for sid in [
            "AllowScopedInstanceProfileCreationActions",
            "AllowScopedInstanceProfileTagActions",
            "AllowScopedInstanceProfileActions",
        ] {
            let cond = &statement(&p, sid)["Condition"]["StringEquals"];
            let text = cond.to_string();
            assert!(
                text.contains("kubernetes.io/cluster/prod\":\"owned"),
                "{sid}: {text}"
            );
            assert!(
                text.contains("topology.kubernetes.io/region\":\"eu-west-1"),
                "{sid}: {text}"
            );
        }
    }

    #[test]
    fn reads_queue_and_cluster_are_scoped() {
        let p = controller_policies(&scope()).unwrap();
        let reads = statement(&p, "AllowRegionalReadActions");
        assert_eq!(
            reads["Condition"]["StringEquals"]["aws:RequestedRegion"],
            "eu-west-1"
        );
        assert_eq!(
            statement(&p, "AllowInterruptionQueueActions")["Resource"],
            scope().queue_arn
        );
        assert_eq!(
            statement(&p, "AllowAPIServerEndpointDiscovery")["Resource"],
            "arn:aws:eks:eu-west-1:111122223333:cluster/prod"
        );
        assert_eq!(
            statement(&p, "AllowSSMReadActions")["Resource"],
            "arn:aws:ssm:eu-west-1::parameter/aws/service/*"
        );
        assert_eq!(
            statement(&p, "AllowPricingReadActions")["Action"],
            "pricing:GetProducts"
        );
    }

    #[test]
    fn no_statement_allows_everything() {
        for s in all_statements(&controller_policies(&scope()).unwrap()) {
            assert_ne!(s["Action"], "*");
            assert_ne!(s["Effect"], "Deny");
        }
    }
}

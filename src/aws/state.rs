//! Reads the current state of every resource `init` manages (read-only calls only), for
//! `plan::init::plan` to compare with the desired state.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{Aws, AwsError, Result, error::absent_if, parse_policy};
use crate::plan::init::{
    Association, Current, Desired, IdentityMode, POD_IDENTITY_AGENT, Policy, Queue, Role, Rule,
    SPOT_SERVICE, Tags,
};
use crate::plan::uninstall::{
    Found, FoundAccessEntry, FoundAssociation, FoundPolicy, FoundQueue, FoundRole, FoundRule,
    Leftover,
};

const NO_SUCH_ENTITY: &[&str] = &["NoSuchEntity"];
const EKS_NOT_FOUND: &[&str] = &["ResourceNotFoundException"];
const NO_QUEUE: &[&str] = &[
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
    "NonExistentQueue",
];

impl Aws {
    pub async fn current(&self, d: &Desired) -> Result<Current> {
        let cluster = &d.cluster.name;
        let mut cur = Current {
            node_role: self.role(&d.node_role.name).await?,
            controller_role: self.role(&d.controller_role.name).await?,
            queue: self.queue(&d.queue_name).await?,
            spot_role: self.service_linked_role_exists(SPOT_SERVICE).await?,
            ..Current::default()
        };
        for rule in &d.rules {
            if let Some(r) = self.rule(&rule.name).await? {
                cur.rules.insert(rule.name.clone(), r);
            }
        }
        for (doc, arn) in &d.policies {
            if let Some(p) = self.policy(arn).await? {
                cur.policies.insert(doc.name.clone(), p);
            }
        }
        match d.identity {
            IdentityMode::PodIdentity => {
                cur.pod_identity_addon = self.addon_status(cluster, POD_IDENTITY_AGENT).await?;
                cur.pod_identity_association = self
                    .association(cluster, &d.namespace, &d.service_account)
                    .await?;
            }
            IdentityMode::Irsa => {
                let want = d.oidc_provider_arn.as_deref().unwrap_or_default();
                cur.oidc_provider = self.oidc_providers().await?.iter().any(|a| a == want);
            }
        }
        if d.cluster.api_access() {
            cur.access_entry = self.access_entry_type(cluster, &d.node_role.arn).await?;
        }
        cur.resource_tags = self.ec2_tags(&d.discovery_targets).await?;
        Ok(cur)
    }

    /// Service-linked roles live under `/aws-service-role/<service>/`; their name is AWS's
    /// choice (`AWSServiceRoleForEC2Spot` for Spot), so look them up by path.
    async fn service_linked_role_exists(&self, service: &str) -> Result<bool> {
        let out = self
            .iam
            .list_roles()
            .path_prefix(format!("/aws-service-role/{service}/"))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListRoles", e))?;
        Ok(!out.roles().is_empty())
    }

    async fn role(&self, name: &str) -> Result<Option<Role>> {
        let got = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:GetRole", e));
        let Some(out) = absent_if(got, NO_SUCH_ENTITY)? else {
            return Ok(None);
        };
        let trust = out
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .map(parse_policy)
            .unwrap_or_default();
        let tags = self
            .iam
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListRoleTags", e))?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        let mut attached = std::collections::BTreeSet::new();
        let mut pages = self
            .iam
            .list_attached_role_policies()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListAttachedRolePolicies", e))?;
            attached.extend(
                page.attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string)),
            );
        }
        Ok(Some(Role {
            trust,
            tags,
            attached,
        }))
    }

    async fn queue(&self, name: &str) -> Result<Option<Queue>> {
        let got = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs:GetQueueUrl", e));
        let Some(out) = absent_if(got, NO_QUEUE)? else {
            return Ok(None);
        };
        let url = out.queue_url().unwrap_or_default().to_string();
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs:GetQueueAttributes", e))?
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.as_str().to_string(), v))
            .collect();
        let tags = self
            .sqs
            .list_queue_tags()
            .queue_url(&url)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sqs:ListQueueTags", e))?
            .tags
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Some(Queue {
            url,
            attributes,
            tags,
        }))
    }

    async fn rule(&self, name: &str) -> Result<Option<Rule>> {
        let got = self
            .events
            .describe_rule()
            .name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("events:DescribeRule", e));
        let Some(out) = absent_if(got, EKS_NOT_FOUND)? else {
            return Ok(None);
        };
        let arn = out.arn().unwrap_or_default().to_string();
        let targets = self
            .events
            .list_targets_by_rule()
            .rule(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("events:ListTargetsByRule", e))?
            .targets()
            .iter()
            .map(|t| (t.id().to_string(), t.arn().to_string()))
            .collect();
        let tags = self
            .events
            .list_tags_for_resource()
            .resource_arn(&arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("events:ListTagsForResource", e))?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        Ok(Some(Rule {
            pattern: out
                .event_pattern()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default(),
            enabled: out.state().is_some_and(|s| s.as_str() == "ENABLED"),
            arn,
            targets,
            tags,
        }))
    }

    async fn policy(&self, arn: &str) -> Result<Option<Policy>> {
        let got = self
            .iam
            .get_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:GetPolicy", e));
        let Some(out) = absent_if(got, NO_SUCH_ENTITY)? else {
            return Ok(None);
        };
        let default = out
            .policy()
            .and_then(|p| p.default_version_id())
            .unwrap_or("v1")
            .to_string();
        let document = self
            .iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(&default)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:GetPolicyVersion", e))?
            .policy_version()
            .and_then(|v| v.document())
            .map(parse_policy)
            .unwrap_or_default();
        let versions = self
            .iam
            .list_policy_versions()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListPolicyVersions", e))?;
        let mut others: Vec<_> = versions
            .versions()
            .iter()
            .filter(|v| !v.is_default_version())
            .map(|v| {
                (
                    v.create_date().map(|d| d.secs()),
                    v.version_id().unwrap_or_default().to_string(),
                )
            })
            .collect();
        others.sort();
        let tags = self
            .iam
            .list_policy_tags()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListPolicyTags", e))?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        Ok(Some(Policy {
            document,
            other_versions: others.into_iter().map(|(_, v)| v).collect(),
            tags,
        }))
    }

    async fn addon_status(&self, cluster: &str, addon: &str) -> Result<Option<String>> {
        let got = self
            .eks
            .describe_addon()
            .cluster_name(cluster)
            .addon_name(addon)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("eks:DescribeAddon", e));
        Ok(absent_if(got, EKS_NOT_FOUND)?.map(|out| {
            out.addon()
                .and_then(|a| a.status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "unknown".into())
        }))
    }

    async fn association(
        &self,
        cluster: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Option<Association>> {
        let list = self
            .eks
            .list_pod_identity_associations()
            .cluster_name(cluster)
            .namespace(namespace)
            .service_account(service_account)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("eks:ListPodIdentityAssociations", e))?;
        let Some(id) = list
            .associations()
            .iter()
            .find_map(|a| a.association_id().map(str::to_string))
        else {
            return Ok(None);
        };
        let out = self
            .eks
            .describe_pod_identity_association()
            .cluster_name(cluster)
            .association_id(&id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("eks:DescribePodIdentityAssociation", e))?;
        let role_arn = out
            .association()
            .and_then(|a| a.role_arn())
            .unwrap_or_default()
            .to_string();
        Ok(Some(Association { id, role_arn }))
    }

    async fn oidc_providers(&self) -> Result<Vec<String>> {
        Ok(self
            .iam
            .list_open_id_connect_providers()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListOpenIDConnectProviders", e))?
            .open_id_connect_provider_list()
            .iter()
            .filter_map(|p| p.arn().map(str::to_string))
            .collect())
    }

    async fn access_entry_type(&self, cluster: &str, principal: &str) -> Result<Option<String>> {
        let got = self
            .eks
            .describe_access_entry()
            .cluster_name(cluster)
            .principal_arn(principal)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("eks:DescribeAccessEntry", e));
        Ok(absent_if(got, EKS_NOT_FOUND)?.map(|out| {
            out.access_entry()
                .and_then(|e| e.r#type())
                .unwrap_or("STANDARD")
                .to_string()
        }))
    }

    /// Tags of subnets and security groups, by id.
    async fn ec2_tags(&self, ids: &[String]) -> Result<BTreeMap<String, Tags>> {
        let mut out = BTreeMap::new();
        let subnets: Vec<String> = ids
            .iter()
            .filter(|i| i.starts_with("subnet-"))
            .cloned()
            .collect();
        let groups: Vec<String> = ids
            .iter()
            .filter(|i| i.starts_with("sg-"))
            .cloned()
            .collect();
        if !subnets.is_empty() {
            let resp = self
                .ec2
                .describe_subnets()
                .set_subnet_ids(Some(subnets))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:DescribeSubnets", e))?;
            for s in resp.subnets() {
                out.insert(
                    s.subnet_id().unwrap_or_default().to_string(),
                    s.tags()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                );
            }
        }
        if !groups.is_empty() {
            let resp = self
                .ec2
                .describe_security_groups()
                .set_group_ids(Some(groups))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", e))?;
            for g in resp.security_groups() {
                out.insert(
                    g.group_id().unwrap_or_default().to_string(),
                    g.tags()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }
}

/// What `uninstall` needs to know about karpctl's AWS resources (read-only calls only).
impl Aws {
    pub async fn found(&self, d: &Desired) -> Result<Found> {
        let cluster = &d.cluster.name;
        let mut f = Found {
            cluster: cluster.clone(),
            node_role_arn: d.node_role.arn.clone(),
            ..Found::default()
        };
        f.node_role = self.found_role(&d.node_role.name).await?;
        f.controller_role = self.found_role(&d.controller_role.name).await?;
        if let Some(q) = self.queue(&d.queue_name).await? {
            f.queue = Some(FoundQueue {
                name: d.queue_name.clone(),
                url: q.url,
                tags: q.tags,
            });
        }
        for rule in &d.rules {
            if let Some(r) = self.rule(&rule.name).await? {
                f.rules.push(FoundRule {
                    name: rule.name.clone(),
                    target_ids: r.targets.into_iter().map(|(id, _)| id).collect(),
                    tags: r.tags,
                });
            }
        }
        for (_, arn) in &d.policies {
            if let Some(p) = self.policy(arn).await? {
                f.policies.push(FoundPolicy {
                    arn: arn.clone(),
                    other_versions: p.other_versions,
                    tags: p.tags,
                });
            }
        }
        // Both identity modes are looked at: init may have run with either.
        if d.cluster.pod_identity_available
            && let Some(a) = self
                .association(cluster, &d.namespace, &d.service_account)
                .await?
        {
            let tags = self
                .eks
                .describe_pod_identity_association()
                .cluster_name(cluster)
                .association_id(&a.id)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("eks:DescribePodIdentityAssociation", e))?
                .association()
                .and_then(|x| x.tags())
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            f.association = Some(FoundAssociation {
                id: a.id,
                role_arn: a.role_arn,
                tags,
            });
        }
        if let Some(issuer) = d.cluster.oidc_issuer.as_deref() {
            let host = issuer.trim_start_matches("https://");
            let want = format!(
                "arn:{}:iam::{}:oidc-provider/{host}",
                d.cluster.partition, d.cluster.account
            );
            if self.oidc_providers().await?.iter().any(|a| a == &want) {
                let tags = self
                    .iam
                    .list_open_id_connect_provider_tags()
                    .open_id_connect_provider_arn(&want)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("iam:ListOpenIDConnectProviderTags", e))?
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect();
                f.oidc_provider = Some((want, tags));
            }
        }
        if d.cluster.api_access() {
            let got = self
                .eks
                .describe_access_entry()
                .cluster_name(cluster)
                .principal_arn(&d.node_role.arn)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("eks:DescribeAccessEntry", e));
            f.access_entry = absent_if(got, EKS_NOT_FOUND)?.map(|out| {
                let e = out.access_entry();
                FoundAccessEntry {
                    principal: d.node_role.arn.clone(),
                    kind: e.and_then(|e| e.r#type()).unwrap_or("STANDARD").to_string(),
                    tags: e
                        .and_then(|e| e.tags())
                        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                        .unwrap_or_default(),
                }
            });
        }
        f.resource_tags = self.ec2_tags(&d.discovery_targets).await?;
        Ok(f)
    }

    async fn found_role(&self, name: &str) -> Result<Option<FoundRole>> {
        let Some(role) = self.role(name).await? else {
            return Ok(None);
        };
        let instance_profiles = self
            .iam
            .list_instance_profiles_for_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListInstanceProfilesForRole", e))?
            .instance_profiles()
            .iter()
            .map(|p| p.instance_profile_name().to_string())
            .collect();
        Ok(Some(FoundRole {
            name: name.to_string(),
            tags: role.tags,
            attached: role.attached.into_iter().collect(),
            instance_profiles,
        }))
    }

    /// For the final sweep: EC2 instances and launch templates tagged as owned by the
    /// cluster, and instance profiles; tags included, `plan::uninstall::leftovers` decides.
    pub async fn tagged_leftovers(&self, cluster: &str) -> Result<Vec<Leftover>> {
        fn ec2(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
            tags.iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        }
        let owned = aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:kubernetes.io/cluster/{cluster}"))
            .values("owned")
            .build();
        let mut out = Vec::new();
        let instances = self
            .ec2
            .describe_instances()
            .filters(owned.clone())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
        for r in instances.reservations() {
            for i in r.instances() {
                if i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("terminated") {
                    continue;
                }
                out.push(Leftover {
                    kind: "ec2-instance".into(),
                    id: i.instance_id().unwrap_or_default().into(),
                    tags: ec2(i.tags()),
                });
            }
        }
        let templates = self
            .ec2
            .describe_launch_templates()
            .filters(owned)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeLaunchTemplates", e))?;
        for t in templates.launch_templates() {
            out.push(Leftover {
                kind: "ec2-launch-template".into(),
                id: t.launch_template_name().unwrap_or_default().into(),
                tags: ec2(t.tags()),
            });
        }
        let profiles = self
            .iam
            .list_instance_profiles()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:ListInstanceProfiles", e))?;
        for p in profiles.instance_profiles() {
            out.push(Leftover {
                kind: "iam-instance-profile".into(),
                id: p.instance_profile_name().into(),
                tags: p
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect(),
            });
        }
        Ok(out)
    }
}

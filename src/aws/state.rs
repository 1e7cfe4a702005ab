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
    Attachment, Found, FoundAccessEntry, FoundAssociation, FoundPolicy, FoundQueue, FoundRole,
    FoundRule, Leftover,
};

const NO_SUCH_ENTITY: &[&str] = &["NoSuchEntity"];

fn iam_tags(tags: &[aws_sdk_iam::types::Tag]) -> impl Iterator<Item = (String, String)> + '_ {
    tags.iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
}

fn ec2_tag_map(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
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
        let mut pages = self
            .iam
            .list_roles()
            .path_prefix(format!("/aws-service-role/{service}/"))
            .into_paginator()
            .send();
        // IAM may answer a truncated page with no roles in it: only the last page says "none".
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListRoles", e))?;
            if !page.roles().is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
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
        let mut tags = Tags::new();
        let mut pages = self
            .iam
            .list_role_tags()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListRoleTags", e))?;
            tags.extend(iam_tags(page.tags()));
        }
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

    /// Whether an IAM role of this name exists (doctor: the role an EC2NodeClass names).
    pub async fn role_exists(&self, name: &str) -> Result<bool> {
        let got = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:GetRole", e));
        Ok(absent_if(got, NO_SUCH_ENTITY)?.is_some())
    }

    /// The role names an instance profile holds; None when it does not exist.
    pub async fn instance_profile_roles(&self, name: &str) -> Result<Option<Vec<String>>> {
        let got = self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("iam:GetInstanceProfile", e));
        Ok(absent_if(got, NO_SUCH_ENTITY)?.map(|out| {
            out.instance_profile()
                .map(|p| {
                    p.roles()
                        .iter()
                        .map(|r| r.role_name().to_string())
                        .collect()
                })
                .unwrap_or_default()
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
        let mut targets = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .events
                .list_targets_by_rule()
                .rule(name)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("events:ListTargetsByRule", e))?;
            targets.extend(
                page.targets()
                    .iter()
                    .map(|t| (t.id().to_string(), t.arn().to_string())),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
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
        let mut others = Vec::new();
        let mut pages = self
            .iam
            .list_policy_versions()
            .policy_arn(arn)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListPolicyVersions", e))?;
            others.extend(
                page.versions()
                    .iter()
                    .filter(|v| !v.is_default_version())
                    .map(|v| {
                        (
                            v.create_date().map(|d| d.secs()),
                            v.version_id().unwrap_or_default().to_string(),
                        )
                    }),
            );
        }
        others.sort();
        let mut tags = Tags::new();
        let mut pages = self
            .iam
            .list_policy_tags()
            .policy_arn(arn)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListPolicyTags", e))?;
            tags.extend(iam_tags(page.tags()));
        }
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
        let mut id = None;
        let mut pages = self
            .eks
            .list_pod_identity_associations()
            .cluster_name(cluster)
            .namespace(namespace)
            .service_account(service_account)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::from_sdk("eks:ListPodIdentityAssociations", e))?;
            id = page
                .associations()
                .iter()
                .find_map(|a| a.association_id().map(str::to_string));
            if id.is_some() {
                break;
            }
        }
        let Some(id) = id else {
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
            let mut pages = self
                .ec2
                .describe_subnets()
                .set_subnet_ids(Some(subnets))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeSubnets", e))?;
                for s in page.subnets() {
                    out.insert(
                        s.subnet_id().unwrap_or_default().to_string(),
                        ec2_tag_map(s.tags()),
                    );
                }
            }
        }
        if !groups.is_empty() {
            let mut pages = self
                .ec2
                .describe_security_groups()
                .set_group_ids(Some(groups))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeSecurityGroups", e))?;
                for g in page.security_groups() {
                    out.insert(
                        g.group_id().unwrap_or_default().to_string(),
                        ec2_tag_map(g.tags()),
                    );
                }
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
                    attached_to: self.policy_entities(arn).await?,
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
                let mut tags = Tags::new();
                let mut pages = self
                    .iam
                    .list_open_id_connect_provider_tags()
                    .open_id_connect_provider_arn(&want)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page
                        .map_err(|e| AwsError::from_sdk("iam:ListOpenIDConnectProviderTags", e))?;
                    tags.extend(iam_tags(page.tags()));
                }
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
        let mut instance_profiles = Vec::new();
        let mut pages = self
            .iam
            .list_instance_profiles_for_role()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::from_sdk("iam:ListInstanceProfilesForRole", e))?;
            instance_profiles.extend(
                page.instance_profiles()
                    .iter()
                    .map(|p| p.instance_profile_name().to_string()),
            );
        }
        // Inline policies someone added to our role: IAM refuses to delete a role with any.
        let mut inline_policies = Vec::new();
        let mut pages = self
            .iam
            .list_role_policies()
            .role_name(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListRolePolicies", e))?;
            inline_policies.extend(page.policy_names().iter().cloned());
        }
        Ok(Some(FoundRole {
            name: name.to_string(),
            tags: role.tags,
            attached: role.attached.into_iter().collect(),
            instance_profiles,
            inline_policies,
        }))
    }

    /// Every role, user and group a managed policy is attached to (IAM refuses to delete
    /// a policy that is attached anywhere).
    async fn policy_entities(&self, arn: &str) -> Result<Vec<Attachment>> {
        let mut out = Vec::new();
        let mut pages = self
            .iam
            .list_entities_for_policy()
            .policy_arn(arn)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListEntitiesForPolicy", e))?;
            out.extend(
                page.policy_roles()
                    .iter()
                    .filter_map(|r| r.role_name().map(|n| Attachment::Role(n.into()))),
            );
            out.extend(
                page.policy_users()
                    .iter()
                    .filter_map(|u| u.user_name().map(|n| Attachment::User(n.into()))),
            );
            out.extend(
                page.policy_groups()
                    .iter()
                    .filter_map(|g| g.group_name().map(|n| Attachment::Group(n.into()))),
            );
        }
        Ok(out)
    }

    /// For the final sweep: EC2 instances and launch templates tagged as owned by the
    /// cluster, and instance profiles; tags included, `plan::uninstall::leftovers` decides.
    /// Every page of every listing is read: a leftover on page two is still a leftover.
    pub async fn tagged_leftovers(&self, cluster: &str) -> Result<Vec<Leftover>> {
        let owned = aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:kubernetes.io/cluster/{cluster}"))
            .values("owned")
            .build();
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(owned.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", e))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                if i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("terminated") {
                    continue;
                }
                out.push(Leftover {
                    kind: "ec2-instance".into(),
                    id: i.instance_id().unwrap_or_default().into(),
                    tags: ec2_tag_map(i.tags()),
                });
            }
        }
        let mut pages = self
            .ec2
            .describe_launch_templates()
            .filters(owned)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeLaunchTemplates", e))?;
            out.extend(page.launch_templates().iter().map(|t| Leftover {
                kind: "ec2-launch-template".into(),
                id: t.launch_template_name().unwrap_or_default().into(),
                tags: ec2_tag_map(t.tags()),
            }));
        }
        let mut profiles = Vec::new();
        let mut pages = self.iam.list_instance_profiles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListInstanceProfiles", e))?;
            profiles.extend(page.instance_profiles().iter().map(|p| {
                (
                    p.instance_profile_name().to_string(),
                    iam_tags(p.tags()).collect::<Tags>(),
                )
            }));
        }
        // IAM's listing leaves tags out (only some implementations include them), and one
        // call per profile in the account would be too many: the tags are read for the
        // profiles named as the controller names them (`<cluster>_<hash>`).
        let prefix = format!("{cluster}_");
        for (name, mut tags) in profiles {
            if tags.is_empty() && name.starts_with(&prefix) {
                let mut pages = self
                    .iam
                    .list_instance_profile_tags()
                    .instance_profile_name(&name)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page =
                        page.map_err(|e| AwsError::from_sdk("iam:ListInstanceProfileTags", e))?;
                    tags.extend(iam_tags(page.tags()));
                }
            }
            out.push(Leftover {
                kind: "iam-instance-profile".into(),
                id: name,
                tags,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! The sweep against a fake endpoint that answers EC2 and IAM in pages, as AWS does
    //! for an account with many instances, launch templates or instance profiles.

    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use aws_config::{BehaviorVersion, Region};

    use super::*;
    use crate::plan::uninstall::leftovers;

    const OWNED: &str = "<item><key>kubernetes.io/cluster/demo</key><value>owned</value></item>";

    fn instances(ids: &[(&str, &str)], next: Option<&str>) -> String {
        let items: String = ids
            .iter()
            .map(|(id, state)| {
                format!(
                    "<item><instanceId>{id}</instanceId><instanceState><code>16</code><name>{state}</name></instanceState><tagSet>{OWNED}<item><key>karpenter.sh/nodepool</key><value>default</value></item></tagSet></item>"
                )
            })
            .collect();
        format!(
            "<DescribeInstancesResponse><requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet>{items}</instancesSet></item></reservationSet>{}</DescribeInstancesResponse>",
            next.map(|t| format!("<nextToken>{t}</nextToken>"))
                .unwrap_or_default()
        )
    }

    fn templates(name: &str, next: Option<&str>) -> String {
        format!(
            "<DescribeLaunchTemplatesResponse><requestId>r</requestId><launchTemplates><item><launchTemplateName>{name}</launchTemplateName><tagSet>{OWNED}<item><key>karpenter.k8s.aws/ec2nodeclass</key><value>default</value></item></tagSet></item></launchTemplates>{}</DescribeLaunchTemplatesResponse>",
            next.map(|t| format!("<nextToken>{t}</nextToken>"))
                .unwrap_or_default()
        )
    }

    fn iam_member_tags(tags: &[(&str, &str)]) -> String {
        tags.iter()
            .map(|(k, v)| format!("<member><Key>{k}</Key><Value>{v}</Value></member>"))
            .collect()
    }

    fn profiles(names: &[(&str, &[(&str, &str)])], marker: Option<&str>) -> String {
        let members: String = names
            .iter()
            .map(|(name, tags)| {
                format!(
                    "<member><Path>/</Path><InstanceProfileName>{name}</InstanceProfileName><InstanceProfileId>AIPA{name}</InstanceProfileId><Arn>arn:aws:iam::1:instance-profile/{name}</Arn><CreateDate>2026-01-01T00:00:00Z</CreateDate><Roles/><Tags>{}</Tags></member>",
                    iam_member_tags(tags)
                )
            })
            .collect();
        format!(
            "<ListInstanceProfilesResponse><ListInstanceProfilesResult><IsTruncated>{}</IsTruncated>{}<InstanceProfiles>{members}</InstanceProfiles></ListInstanceProfilesResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></ListInstanceProfilesResponse>",
            marker.is_some(),
            marker
                .map(|m| format!("<Marker>{m}</Marker>"))
                .unwrap_or_default()
        )
    }

    const NODE_CLASS_TAGS: &[(&str, &str)] = &[
        ("kubernetes.io/cluster/demo", "owned"),
        ("karpenter.k8s.aws/ec2nodeclass", "default"),
    ];

    /// The answer to one query-protocol request (`Action=...&NextToken=...`): every listing
    /// has two pages; `asked` records the profiles whose tags were read one by one.
    fn answer(form: &str, asked: &Mutex<Vec<String>>) -> String {
        let param = |key: &str| {
            form.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
        };
        let token = param("NextToken").or_else(|| param("Marker"));
        match (
            param("Action").unwrap_or_default().as_str(),
            token.as_deref(),
        ) {
            ("DescribeInstances", None) => instances(&[("i-1", "running")], Some("p2")),
            ("DescribeInstances", Some("p2")) => {
                instances(&[("i-2", "running"), ("i-3", "terminated")], None)
            }
            ("DescribeLaunchTemplates", None) => templates("lt-1", Some("p2")),
            ("DescribeLaunchTemplates", Some("p2")) => templates("lt-2", None),
            ("ListInstanceProfiles", None) => profiles(&[("demo_1", &[])], Some("m2")),
            ("ListInstanceProfiles", Some("m2")) => {
                profiles(&[("someone-elses", &[]), ("demo_2", NODE_CLASS_TAGS)], None)
            }
            ("ListInstanceProfileTags", None) => {
                let name = param("InstanceProfileName").unwrap_or_default();
                asked.lock().unwrap().push(name);
                format!(
                    "<ListInstanceProfileTagsResponse><ListInstanceProfileTagsResult><IsTruncated>false</IsTruncated><Tags>{}</Tags></ListInstanceProfileTagsResult></ListInstanceProfileTagsResponse>",
                    iam_member_tags(NODE_CLASS_TAGS)
                )
            }
            other => panic!("unexpected request {other:?}: {form}"),
        }
    }

    /// Serves `answer` over HTTP/1.1 on a local port, one request per connection.
    fn fake_endpoint(asked: Arc<Mutex<Vec<String>>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let xml = answer(&String::from_utf8(body).unwrap(), &asked);
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                    xml.len()
                )
                .unwrap();
            }
        });
        url
    }

    #[tokio::test]
    async fn the_sweep_reads_every_page_and_the_tags_of_the_controllers_instance_profiles() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let config = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(fake_endpoint(asked.clone()))
            .region(Region::new("us-west-2"))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        let aws = Aws::from_config(&config, "us-west-2".into());

        let found = aws.tagged_leftovers("demo").await.unwrap();

        let ids: Vec<&str> = found.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "i-1",
                "i-2",
                "lt-1",
                "lt-2",
                "demo_1",
                "someone-elses",
                "demo_2"
            ]
        );
        // Listed without tags and named as the controller names profiles: read one by one;
        // a profile listed with its tags, or named otherwise, is not.
        assert_eq!(*asked.lock().unwrap(), ["demo_1"]);
        assert_eq!(
            leftovers("demo", &found),
            [
                "ec2-instance i-1 was launched by Karpenter for this cluster",
                "ec2-instance i-2 was launched by Karpenter for this cluster",
                "ec2-launch-template lt-1 was created by Karpenter for this cluster",
                "ec2-launch-template lt-2 was created by Karpenter for this cluster",
                "iam-instance-profile demo_1 was created by Karpenter for this cluster",
                "iam-instance-profile demo_2 was created by Karpenter for this cluster",
            ]
        );
    }
}

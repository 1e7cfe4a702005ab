//! Executes `init`'s operations, one AWS call each (two for a policy version that needs room),
//! with errors sorted at this edge. Creates carry karpctl's ownership tags.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;

use super::{Aws, AwsError};
use crate::plan::Executor;
use crate::plan::init::{InitOp, Tags};
use crate::plan::uninstall::UninstallOp;

fn iam_tags(tags: &Tags) -> Vec<aws_sdk_iam::types::Tag> {
    tags.iter()
        .filter_map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .ok()
        })
        .collect()
}

fn events_tags(tags: &Tags) -> Vec<aws_sdk_eventbridge::types::Tag> {
    tags.iter()
        .filter_map(|(k, v)| {
            aws_sdk_eventbridge::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .ok()
        })
        .collect()
}

fn map_tags(tags: &Tags) -> HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A service-linked role that exists already is what we wanted.
fn already_exists(e: &AwsError) -> bool {
    let m = e.message();
    e.is(&["InvalidInput", "EntityAlreadyExists"])
        && (m.contains("has been taken") || m.contains("already exists"))
}

impl Executor<InitOp> for Aws {
    async fn execute(&self, op: &InitOp) -> anyhow::Result<()> {
        self.run(op).await.map_err(anyhow::Error::from)
    }
}

impl Aws {
    async fn run(&self, op: &InitOp) -> Result<(), AwsError> {
        macro_rules! call {
            ($action:literal, $fut:expr) => {
                $fut.send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk($action, e))
            };
        }
        match op {
            InitOp::MapNodeRole { .. }
            | InitOp::ApplyCrd { .. }
            | InitOp::Record { .. }
            | InitOp::ScaleDeployment { .. }
            | InitOp::ApplyObject { .. } => Err(AwsError::Other {
                action: "kubernetes".into(),
                detail: format!("{op:?} goes through Kubernetes, not AWS"),
            }),
            InitOp::CreateRole {
                name,
                description,
                trust,
                tags,
            } => call!(
                "iam:CreateRole",
                self.iam
                    .create_role()
                    .role_name(name)
                    .description(description)
                    .assume_role_policy_document(trust)
                    .set_tags(Some(iam_tags(tags)))
            ),
            InitOp::UpdateAssumeRolePolicy { role, trust } => call!(
                "iam:UpdateAssumeRolePolicy",
                self.iam
                    .update_assume_role_policy()
                    .role_name(role)
                    .policy_document(trust)
            ),
            InitOp::TagRole { role, tags } => call!(
                "iam:TagRole",
                self.iam
                    .tag_role()
                    .role_name(role)
                    .set_tags(Some(iam_tags(tags)))
            ),
            InitOp::AttachRolePolicy { role, policy_arn } => call!(
                "iam:AttachRolePolicy",
                self.iam
                    .attach_role_policy()
                    .role_name(role)
                    .policy_arn(policy_arn)
            ),
            InitOp::CreateQueue {
                name,
                attributes,
                tags,
            } => call!(
                "sqs:CreateQueue",
                self.sqs
                    .create_queue()
                    .queue_name(name)
                    .set_attributes(Some(
                        attributes
                            .iter()
                            .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v.clone()))
                            .collect()
                    ))
                    .set_tags(Some(map_tags(tags)))
            ),
            InitOp::SetQueueAttributes { url, attributes } => call!(
                "sqs:SetQueueAttributes",
                self.sqs
                    .set_queue_attributes()
                    .queue_url(url)
                    .set_attributes(Some(
                        attributes
                            .iter()
                            .map(|(k, v)| (QueueAttributeName::from(k.as_str()), v.clone()))
                            .collect()
                    ))
            ),
            InitOp::TagQueue { url, tags } => call!(
                "sqs:TagQueue",
                self.sqs
                    .tag_queue()
                    .queue_url(url)
                    .set_tags(Some(map_tags(tags)))
            ),
            InitOp::PutRule {
                name,
                description,
                pattern,
                tags,
            } => call!(
                "events:PutRule",
                self.events
                    .put_rule()
                    .name(name)
                    .description(description)
                    .event_pattern(pattern)
                    .state(aws_sdk_eventbridge::types::RuleState::Enabled)
                    .set_tags(Some(events_tags(tags)))
            ),
            InitOp::TagRule { arn, tags } => call!(
                "events:TagResource",
                self.events
                    .tag_resource()
                    .resource_arn(arn)
                    .set_tags(Some(events_tags(tags)))
            ),
            InitOp::PutTarget { rule, id, arn } => {
                let target = aws_sdk_eventbridge::types::Target::builder()
                    .id(id)
                    .arn(arn)
                    .build()
                    .map_err(|e| AwsError::Other {
                        action: "events:PutTargets".into(),
                        detail: e.to_string(),
                    })?;
                let out = self
                    .events
                    .put_targets()
                    .rule(rule)
                    .targets(target)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("events:PutTargets", e))?;
                // PutTargets reports per-target failures in a 200 response.
                if let Some(f) = out.failed_entries().first() {
                    return Err(AwsError::Service {
                        action: "events:PutTargets".into(),
                        code: f.error_code().unwrap_or("Failed").into(),
                        message: f.error_message().unwrap_or_default().into(),
                    });
                }
                Ok(())
            }
            InitOp::CreatePolicy {
                name,
                description,
                document,
                tags,
            } => call!(
                "iam:CreatePolicy",
                self.iam
                    .create_policy()
                    .policy_name(name)
                    .description(description)
                    .policy_document(document)
                    .set_tags(Some(iam_tags(tags)))
            ),
            InitOp::CreatePolicyVersion {
                arn,
                document,
                delete_first,
            } => {
                if let Some(version) = delete_first {
                    call!(
                        "iam:DeletePolicyVersion",
                        self.iam
                            .delete_policy_version()
                            .policy_arn(arn)
                            .version_id(version)
                    )?;
                }
                call!(
                    "iam:CreatePolicyVersion",
                    self.iam
                        .create_policy_version()
                        .policy_arn(arn)
                        .policy_document(document)
                        .set_as_default(true)
                )
            }
            InitOp::TagPolicy { arn, tags } => call!(
                "iam:TagPolicy",
                self.iam
                    .tag_policy()
                    .policy_arn(arn)
                    .set_tags(Some(iam_tags(tags)))
            ),
            InitOp::CreateAddon {
                cluster,
                addon,
                tags,
            } => call!(
                "eks:CreateAddon",
                self.eks
                    .create_addon()
                    .cluster_name(cluster)
                    .addon_name(addon)
                    .set_tags(Some(map_tags(tags)))
            ),
            InitOp::CreatePodIdentityAssociation {
                cluster,
                namespace,
                service_account,
                role_arn,
                tags,
            } => call!(
                "eks:CreatePodIdentityAssociation",
                self.eks
                    .create_pod_identity_association()
                    .cluster_name(cluster)
                    .namespace(namespace)
                    .service_account(service_account)
                    .role_arn(role_arn)
                    .set_tags(Some(map_tags(tags)))
            ),
            InitOp::UpdatePodIdentityAssociation {
                cluster,
                id,
                role_arn,
            } => call!(
                "eks:UpdatePodIdentityAssociation",
                self.eks
                    .update_pod_identity_association()
                    .cluster_name(cluster)
                    .association_id(id)
                    .role_arn(role_arn)
            ),
            InitOp::CreateOidcProvider { url, tags } => call!(
                "iam:CreateOpenIDConnectProvider",
                self.iam
                    .create_open_id_connect_provider()
                    .url(url)
                    .client_id_list("sts.amazonaws.com")
                    .set_tags(Some(iam_tags(tags)))
            ),
            InitOp::CreateServiceLinkedRole { service } => {
                let result = call!(
                    "iam:CreateServiceLinkedRole",
                    self.iam
                        .create_service_linked_role()
                        .aws_service_name(service)
                );
                match result {
                    Err(e) if already_exists(&e) => Ok(()),
                    other => other,
                }
            }
            InitOp::CreateAccessEntry {
                cluster,
                principal,
                kind,
                tags,
            } => call!(
                "eks:CreateAccessEntry",
                self.eks
                    .create_access_entry()
                    .cluster_name(cluster)
                    .principal_arn(principal)
                    .r#type(kind)
                    .set_tags(Some(map_tags(tags)))
            ),
            InitOp::DeleteAccessEntry { cluster, principal } => call!(
                "eks:DeleteAccessEntry",
                self.eks
                    .delete_access_entry()
                    .cluster_name(cluster)
                    .principal_arn(principal)
            ),
            InitOp::CreateTags { resource, tags } => call!(
                "ec2:CreateTags",
                self.ec2.create_tags().resources(resource).set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
                        .collect()
                ))
            ),
        }
    }
}

/// Errors meaning the thing is gone already: a delete that finds nothing has done its job
/// (a re-run after a partial uninstall, or a concurrent one).
const GONE: &[&str] = &[
    "NoSuchEntity",
    "ResourceNotFoundException",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
    "NonExistentQueue",
];

/// IAM's DeleteConflict after the plan detached everything it read means something was
/// attached (or added to a role) since: a re-run reads it and plans its removal.
fn in_use(e: AwsError) -> AwsError {
    match e {
        AwsError::Service {
            action,
            code,
            message,
        } if code == "DeleteConflict" => AwsError::Other {
            action,
            detail: format!(
                "{code}: {message}; something was attached to it after the plan was read: run `karpctl uninstall` again, which plans detaching it"
            ),
        },
        other => other,
    }
}

impl Aws {
    /// Executes one of `uninstall`'s AWS operations (the Kubernetes ones are refused).
    pub async fn run_uninstall(&self, op: &UninstallOp) -> Result<(), AwsError> {
        macro_rules! call {
            ($action:literal, $fut:expr) => {
                match $fut
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk($action, e))
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.is(GONE) => Ok(()),
                    Err(e) => Err(e),
                }
            };
        }
        match op {
            UninstallOp::ScaleDeployment { .. }
            | UninstallOp::Forget { .. }
            | UninstallOp::DeleteState
            | UninstallOp::DeleteCrd { .. }
            | UninstallOp::DeleteObject { .. }
            | UninstallOp::WaitNodeClaimsGone
            | UninstallOp::UnmapNodeRole { .. } => Err(AwsError::Other {
                action: "kubernetes".into(),
                detail: format!("{op:?} goes through Kubernetes, not AWS"),
            }),
            UninstallOp::DeleteAccessEntry { cluster, principal } => call!(
                "eks:DeleteAccessEntry",
                self.eks
                    .delete_access_entry()
                    .cluster_name(cluster)
                    .principal_arn(principal)
            ),
            UninstallOp::DeleteTags { resource, keys } => call!(
                "ec2:DeleteTags",
                self.ec2.delete_tags().resources(resource).set_tags(Some(
                    keys.iter()
                        .map(|k| aws_sdk_ec2::types::Tag::builder().key(k).build())
                        .collect()
                ))
            ),
            UninstallOp::DeletePodIdentityAssociation { cluster, id } => call!(
                "eks:DeletePodIdentityAssociation",
                self.eks
                    .delete_pod_identity_association()
                    .cluster_name(cluster)
                    .association_id(id)
            ),
            UninstallOp::DeleteOidcProvider { arn } => call!(
                "iam:DeleteOpenIDConnectProvider",
                self.iam
                    .delete_open_id_connect_provider()
                    .open_id_connect_provider_arn(arn)
            ),
            UninstallOp::DetachRolePolicy { role, policy_arn } => call!(
                "iam:DetachRolePolicy",
                self.iam
                    .detach_role_policy()
                    .role_name(role)
                    .policy_arn(policy_arn)
            ),
            UninstallOp::DetachUserPolicy { user, policy_arn } => call!(
                "iam:DetachUserPolicy",
                self.iam
                    .detach_user_policy()
                    .user_name(user)
                    .policy_arn(policy_arn)
            ),
            UninstallOp::DetachGroupPolicy { group, policy_arn } => call!(
                "iam:DetachGroupPolicy",
                self.iam
                    .detach_group_policy()
                    .group_name(group)
                    .policy_arn(policy_arn)
            ),
            UninstallOp::DeleteRolePolicy { role, name } => call!(
                "iam:DeleteRolePolicy",
                self.iam
                    .delete_role_policy()
                    .role_name(role)
                    .policy_name(name)
            ),
            UninstallOp::RemoveRoleFromInstanceProfile { role, profile } => call!(
                "iam:RemoveRoleFromInstanceProfile",
                self.iam
                    .remove_role_from_instance_profile()
                    .role_name(role)
                    .instance_profile_name(profile)
            ),
            UninstallOp::DeleteRole { name } => {
                call!("iam:DeleteRole", self.iam.delete_role().role_name(name)).map_err(in_use)
            }
            UninstallOp::DeletePolicyVersion { arn, version } => call!(
                "iam:DeletePolicyVersion",
                self.iam
                    .delete_policy_version()
                    .policy_arn(arn)
                    .version_id(version)
            ),
            UninstallOp::DeletePolicy { arn } => {
                call!("iam:DeletePolicy", self.iam.delete_policy().policy_arn(arn)).map_err(in_use)
            }
            UninstallOp::RemoveTargets { rule, ids } => call!(
                "events:RemoveTargets",
                self.events
                    .remove_targets()
                    .rule(rule)
                    .set_ids(Some(ids.clone()))
            ),
            UninstallOp::DeleteRule { name } => {
                call!("events:DeleteRule", self.events.delete_rule().name(name))
            }
            UninstallOp::DeleteQueue { url } => {
                call!("sqs:DeleteQueue", self.sqs.delete_queue().queue_url(url))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_conflict_says_to_run_uninstall_again() {
        let conflict = AwsError::Service {
            action: "iam:DeletePolicy".into(),
            code: "DeleteConflict".into(),
            message: "Cannot delete a policy attached to entities.".into(),
        };
        assert_eq!(
            in_use(conflict).to_string(),
            "iam:DeletePolicy failed: DeleteConflict: Cannot delete a policy attached to entities.; something was attached to it after the plan was read: run `karpctl uninstall` again, which plans detaching it"
        );
        let other = AwsError::Service {
            action: "iam:DeletePolicy".into(),
            code: "ServiceFailure".into(),
            message: "m".into(),
        };
        assert_eq!(in_use(other).code(), Some("ServiceFailure"));
    }

    #[test]
    fn an_existing_spot_role_counts_as_success() {
        let taken = AwsError::Service {
            action: "iam:CreateServiceLinkedRole".into(),
            code: "InvalidInput".into(),
            message: "Service role name AWSServiceRoleForEC2Spot has been taken in this account, please try a different suffix.".into(),
        };
        assert!(already_exists(&taken));
        let other = AwsError::Service {
            action: "iam:CreateServiceLinkedRole".into(),
            code: "InvalidInput".into(),
            message: "bad service name".into(),
        };
        assert!(!already_exists(&other));
    }
}

//! Managed node groups for `migrate-from-cas`: what EKS says about each group (instance
//! types, capacity type, labels, taints, AMI type, disk, scaling config, Auto Scaling groups,
//! tags), the Auto Scaling groups Cluster Autoscaler discovers by tag, and the two writes a
//! migration makes — a group's scaling config, and terminating one drained instance out of
//! its Auto Scaling group (decrementing its desired capacity, as Cluster Autoscaler does, so
//! exactly the drained instance goes rather than one the group's termination policy picks).

use std::collections::BTreeMap;

use karpctl_api::v1::Taint;

use super::{Aws, AwsError, Result};
use crate::plan::migrate::{NodeGroup, Scaling, taint_effect};

/// Cluster Autoscaler's auto-discovery tag (`--node-group-auto-discovery=asg:tag=...`).
pub const CAS_DISCOVERY_TAG: &str = "k8s.io/cluster-autoscaler/enabled";

impl Aws {
    /// Every managed node group of the cluster, described.
    pub async fn node_groups(&self, cluster: &str) -> Result<Vec<NodeGroup>> {
        let mut names = Vec::new();
        let mut pages = self
            .eks
            .list_nodegroups()
            .cluster_name(cluster)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("eks:ListNodegroups", e))?;
            names.extend(page.nodegroups().iter().cloned());
        }
        let mut out = Vec::new();
        for name in names {
            let Some(ng) = self
                .eks
                .describe_nodegroup()
                .cluster_name(cluster)
                .nodegroup_name(&name)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("eks:DescribeNodegroup", e))?
                .nodegroup
            else {
                continue;
            };
            let scaling = ng.scaling_config();
            let taints = ng
                .taints()
                .iter()
                .filter_map(|t| {
                    Some(Taint {
                        key: t.key()?.to_string(),
                        value: t.value().filter(|v| !v.is_empty()).map(str::to_string),
                        effect: taint_effect(t.effect()?.as_str())?,
                        time_added: None,
                    })
                })
                .collect();
            out.push(NodeGroup {
                name: name.clone(),
                instance_types: ng.instance_types().to_vec(),
                capacity_type: ng
                    .capacity_type()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "ON_DEMAND".into()),
                labels: ng
                    .labels()
                    .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                taints,
                ami_type: ng
                    .ami_type()
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default(),
                disk_size_gib: ng.disk_size(),
                scaling: Scaling {
                    min_size: scaling.and_then(|s| s.min_size()).unwrap_or(0),
                    max_size: scaling.and_then(|s| s.max_size()).unwrap_or(0),
                    desired_size: scaling.and_then(|s| s.desired_size()).unwrap_or(0),
                },
                auto_scaling_groups: ng
                    .resources()
                    .map(|r| {
                        r.auto_scaling_groups()
                            .iter()
                            .filter_map(|g| g.name().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                tags: ng
                    .tags()
                    .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Auto Scaling groups carrying Cluster Autoscaler's auto-discovery tag, by name, with
    /// their tags.
    pub async fn autoscaler_groups(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .autoscaling
                .describe_auto_scaling_groups()
                .filters(
                    aws_sdk_autoscaling::types::Filter::builder()
                        .name("tag-key")
                        .values(CAS_DISCOVERY_TAG)
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("autoscaling:DescribeAutoScalingGroups", e))?;
            for g in page.auto_scaling_groups() {
                let tags = g
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                out.insert(
                    g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    tags,
                );
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// `eks:UpdateNodegroupConfig` with the sizes given (the others unchanged).
    pub async fn update_scaling(
        &self,
        cluster: &str,
        group: &str,
        min_size: Option<i32>,
        max_size: Option<i32>,
        desired_size: Option<i32>,
    ) -> Result<()> {
        let config = aws_sdk_eks::types::NodegroupScalingConfig::builder()
            .set_min_size(min_size)
            .set_max_size(max_size)
            .set_desired_size(desired_size)
            .build();
        self.eks
            .update_nodegroup_config()
            .cluster_name(cluster)
            .nodegroup_name(group)
            .scaling_config(config)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("eks:UpdateNodegroupConfig", e))?;
        Ok(())
    }

    /// Terminates one instance of an Auto Scaling group and lowers its desired capacity by
    /// one. An instance already gone is not an error (a re-run after an interruption).
    pub async fn terminate_in_group(&self, instance_id: &str) -> Result<()> {
        match self
            .autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("autoscaling:TerminateInstanceInAutoScalingGroup", e))
        {
            Ok(_) => Ok(()),
            Err(e) if e.is(&["ValidationError"]) && e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

//! Read-only discovery: who is calling, what the cluster is (endpoint, version, OIDC issuer,
//! authentication mode, security group, VPC), its node groups with their subnets and
//! security groups, and what the account offers (Pod Identity, the ECR pull policy).

use super::{Aws, AwsError, Result, error::absent_if, partition};
use crate::plan::init::{Cluster, NodeGroup, POD_IDENTITY_AGENT};

const ECR_PULL_ONLY: &str = "AmazonEC2ContainerRegistryPullOnly";
const ECR_READ_ONLY: &str = "AmazonEC2ContainerRegistryReadOnly";

impl Aws {
    /// Names of the EKS clusters in this region, all pages, sorted.
    pub async fn list_clusters(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .eks
                .list_clusters()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("eks:ListClusters", e))?;
            out.extend(page.clusters().iter().cloned());
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.sort();
        Ok(out)
    }

    /// The caller's account and partition (sts:GetCallerIdentity needs no permission).
    pub async fn caller_account(&self) -> Result<(String, String)> {
        let identity = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", e))?;
        Ok((
            identity.account().unwrap_or_default().to_string(),
            partition(&self.region).to_string(),
        ))
    }

    pub async fn discover(&self, name: &str) -> Result<Cluster> {
        let identity = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", e))?;
        let account = identity.account().unwrap_or_default().to_string();
        let caller_arn = identity.arn().unwrap_or_default().to_string();

        let cluster = match self.eks.describe_cluster().name(name).send().await {
            Ok(out) => out.cluster.ok_or_else(|| AwsError::ClusterNotFound {
                name: name.into(),
                region: self.region.clone(),
            })?,
            Err(e) => {
                let e = AwsError::from_sdk("eks:DescribeCluster", e);
                return Err(if e.is(&["ResourceNotFoundException"]) {
                    AwsError::ClusterNotFound {
                        name: name.into(),
                        region: self.region.clone(),
                    }
                } else {
                    e
                });
            }
        };
        let vpc = cluster.resources_vpc_config();
        let authentication_mode = cluster
            .access_config()
            .and_then(|a| a.authentication_mode())
            .map(|m| m.as_str().to_string())
            // Clusters from before access entries answer without accessConfig.
            .unwrap_or_else(|| "CONFIG_MAP".into());
        let version = cluster.version().unwrap_or_default().to_string();

        let mut node_groups = Vec::new();
        let mut pages = self
            .eks
            .list_nodegroups()
            .cluster_name(name)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("eks:ListNodegroups", e))?;
            names.extend(page.nodegroups().iter().cloned());
        }
        for ng_name in names {
            let Some(ng) = self
                .eks
                .describe_nodegroup()
                .cluster_name(name)
                .nodegroup_name(&ng_name)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("eks:DescribeNodegroup", e))?
                .nodegroup
            else {
                continue;
            };
            let mut security_groups = Vec::new();
            if let Some(sg) = ng
                .resources()
                .and_then(|r| r.remote_access_security_group())
            {
                security_groups.push(sg.to_string());
            }
            if let Some(lt) = ng.launch_template() {
                security_groups.extend(
                    self.launch_template_security_groups(lt.id(), lt.name(), lt.version())
                        .await?,
                );
            }
            node_groups.push(NodeGroup {
                name: ng_name,
                subnets: ng.subnets().to_vec(),
                security_groups,
            });
        }

        let api = authentication_mode.contains("API");
        let pod_identity_available = api || self.pod_identity_offered(&version).await;
        let part = partition(&self.region);
        let pull_only = format!("arn:{part}:iam::aws:policy/{ECR_PULL_ONLY}");
        let ecr_policy =
            match absent_if(self.get_policy_exists(&pull_only).await, &["NoSuchEntity"])? {
                Some(()) => ECR_PULL_ONLY,
                None => ECR_READ_ONLY,
            };

        Ok(Cluster {
            name: name.to_string(),
            region: self.region.clone(),
            account,
            caller_arn,
            partition: part.to_string(),
            endpoint: cluster.endpoint().unwrap_or_default().to_string(),
            version,
            oidc_issuer: cluster
                .identity()
                .and_then(|i| i.oidc())
                .and_then(|o| o.issuer())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            authentication_mode,
            cluster_security_group: vpc
                .and_then(|v| v.cluster_security_group_id())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            vpc: vpc.and_then(|v| v.vpc_id()).unwrap_or_default().to_string(),
            node_groups,
            pod_identity_available,
            ecr_policy: ecr_policy.to_string(),
        })
    }

    async fn launch_template_security_groups(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<String>> {
        let out = self
            .ec2
            .describe_launch_template_versions()
            .set_launch_template_id(id.map(str::to_string))
            .set_launch_template_name(if id.is_some() {
                None
            } else {
                name.map(str::to_string)
            })
            .versions(version.unwrap_or("$Default"))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeLaunchTemplateVersions", e))?;
        let mut groups = Vec::new();
        for v in out.launch_template_versions() {
            if let Some(data) = v.launch_template_data() {
                groups.extend(data.security_group_ids().iter().cloned());
                for ni in data.network_interfaces() {
                    groups.extend(ni.groups().iter().cloned());
                }
            }
        }
        Ok(groups)
    }

    /// Whether the EKS add-on API offers the Pod Identity agent for this version; any error
    /// means "no" (the answer only steers the automatic choice).
    async fn pod_identity_offered(&self, version: &str) -> bool {
        self.eks
            .describe_addon_versions()
            .addon_name(POD_IDENTITY_AGENT)
            .kubernetes_version(version)
            .send()
            .await
            .map(|out| !out.addons().is_empty())
            .unwrap_or(false)
    }

    pub(crate) async fn get_policy_exists(&self, arn: &str) -> Result<()> {
        self.iam
            .get_policy()
            .policy_arn(arn)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("iam:GetPolicy", e))
    }
}

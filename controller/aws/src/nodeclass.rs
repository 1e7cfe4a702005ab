//! Resolving an EC2NodeClass into its status: which subnets (with zones), security groups and
//! AMIs (with the instance types each suits) its selector terms select now, and the instance
//! profile its nodes get. Also its clean-up (instance profile, launch templates) and drift:
//! whether a claim's instance still matches what the node class resolves to.
//!
//! Errors are [`CloudError::NodeClassNotReady`] whose `reason` starts with the condition type
//! that failed (`SubnetsReady: ...`) and names the selector terms that matched nothing.

use std::collections::{BTreeMap, BTreeSet};

use karpctl_api::labels;
use karpctl_api::v1::condition_types::ec2_node_class as condition_types;
use karpctl_api::v1::{
    Ami, AmiFamily, AmiSelectorTerm, Condition, ConditionStatus, EC2NodeClass, EC2NodeClassStatus,
    NodeClaim, NodeSelectorRequirement, SecurityGroup, Subnet,
};
use karpctl_cloud::{CloudError, CloudResult, DriftReason};

use crate::AwsCloud;
use crate::api::{AwsApi, Filter, ImageRecord};

/// Tag filters for a selector term's `tags` (`*` matches any value).
pub fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| {
            if v == "*" {
                Filter::new("tag-key", [k.as_str()])
            } else {
                Filter::new(format!("tag:{k}"), [v.as_str()])
            }
        })
        .collect()
}

/// `kubernetes.io/arch` from EC2's architecture name.
pub fn arch_label(architecture: &str) -> Option<&'static str> {
    match architecture {
        "x86_64" | "x86_64_mac" => Some(labels::ARCH_AMD64),
        "arm64" | "arm64_mac" => Some(labels::ARCH_ARM64),
        _ => None,
    }
}

/// The instance profile Karpenter manages for a node class's `role`: one per cluster, region
/// and node class, named deterministically (upstream: `<cluster>_<hash>`).
pub fn instance_profile_name(cluster: &str, region: &str, node_class: &str) -> String {
    format!("{cluster}_{}", fnv64(&format!("{region}{node_class}")))
}

/// The role's name from `spec.role`, which may be an ARN with a path.
pub fn role_name(role: &str) -> &str {
    role.rsplit('/').next().unwrap_or(role)
}

/// The workspace's stable hash, for deterministic names.
pub fn fnv64(text: &str) -> u64 {
    karpctl_api::hash::fnv1a64(text)
}

/// Which instance types an EKS-optimized AMI variant is for: the standard AMI for types
/// without accelerators, the NVIDIA one for GPU types, the Neuron one for Inferentia and
/// Trainium (upstream's alias requirements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Standard,
    Nvidia,
    Neuron,
}

impl Variant {
    /// Requirements an instance type must meet to run this variant, beyond its architecture.
    pub fn requirements(self) -> Vec<NodeSelectorRequirement> {
        let req = |key: &str, operator: &str| NodeSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: Vec::new(),
        };
        match self {
            Variant::Standard => vec![
                req(labels::INSTANCE_GPU_COUNT, "DoesNotExist"),
                req(labels::INSTANCE_ACCELERATOR_COUNT, "DoesNotExist"),
            ],
            Variant::Nvidia => vec![req(labels::INSTANCE_GPU_COUNT, "Exists")],
            Variant::Neuron => vec![req(labels::INSTANCE_ACCELERATOR_COUNT, "Exists")],
        }
    }
}

/// One SSM parameter an alias resolves through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasParameter {
    /// EC2's architecture name.
    pub arch: &'static str,
    pub variant: Variant,
    pub name: String,
}

/// The public SSM parameters an alias resolves through (the names EKS and Bottlerocket
/// publish), for every architecture and accelerator variant.
pub fn alias_parameters(
    family: AmiFamily,
    version: &str,
    kubernetes: &str,
) -> Option<Vec<AliasParameter>> {
    let latest = version == "latest";
    let mut out = Vec::new();
    let mut push = |arch, variant, name| {
        out.push(AliasParameter {
            arch,
            variant,
            name,
        })
    };
    match family {
        AmiFamily::Al2023 => {
            for arch in ["x86_64", "arm64"] {
                let variants: &[(Variant, &str)] = if arch == "x86_64" {
                    &[
                        (Variant::Standard, "standard"),
                        (Variant::Nvidia, "nvidia"),
                        (Variant::Neuron, "neuron"),
                    ]
                } else {
                    &[(Variant::Standard, "standard"), (Variant::Nvidia, "nvidia")]
                };
                for (variant, path) in variants {
                    let base = format!(
                        "/aws/service/eks/optimized-ami/{kubernetes}/amazon-linux-2023/{arch}/{path}"
                    );
                    let name = if latest {
                        format!("{base}/recommended/image_id")
                    } else {
                        format!(
                            "{base}/amazon-eks-node-al2023-{arch}-{path}-{kubernetes}-{version}/image_id"
                        )
                    };
                    push(arch, *variant, name);
                }
            }
        }
        AmiFamily::Al2 => {
            let variants = [
                (
                    "x86_64",
                    Variant::Standard,
                    "amazon-linux-2",
                    "amazon-eks-node",
                ),
                (
                    "arm64",
                    Variant::Standard,
                    "amazon-linux-2-arm64",
                    "amazon-eks-arm64-node",
                ),
                (
                    "x86_64",
                    Variant::Nvidia,
                    "amazon-linux-2-gpu",
                    "amazon-eks-gpu-node",
                ),
            ];
            for (arch, variant, path, prefix) in variants {
                let base = format!("/aws/service/eks/optimized-ami/{kubernetes}/{path}");
                let name = if latest {
                    format!("{base}/recommended/image_id")
                } else {
                    format!("{base}/{prefix}-{kubernetes}-{version}/image_id")
                };
                push(arch, variant, name);
            }
        }
        AmiFamily::Bottlerocket => {
            let v = version.trim_start_matches('v');
            for arch in ["x86_64", "arm64"] {
                for (variant, flavour) in [(Variant::Standard, ""), (Variant::Nvidia, "-nvidia")] {
                    push(
                        arch,
                        variant,
                        format!(
                            "/aws/service/bottlerocket/aws-k8s-{kubernetes}{flavour}/{arch}/{v}/image_id"
                        ),
                    );
                }
            }
        }
        AmiFamily::Custom | AmiFamily::Windows2019 | AmiFamily::Windows2022 => return None,
    }
    Some(out)
}

fn not_ready(node_class: &EC2NodeClass, condition: &str, message: String) -> CloudError {
    CloudError::NodeClassNotReady {
        name: node_class.metadata.name.clone().unwrap_or_default(),
        reason: format!("{condition}: {message}"),
    }
}

fn describe_term(term: &impl serde::Serialize) -> String {
    serde_json::to_string(term).unwrap_or_default()
}

/// A part's condition from its lookup: True, or False with upstream's reason for a term that
/// matched nothing and the error's own reason (`Throttled`, `CloudProviderError`) for a
/// failed call. Transition times are the controller's to keep.
fn part_condition(type_: &str, outcome: Result<(), CloudError>) -> Condition {
    let (status, reason, message) = match outcome {
        Ok(()) => (ConditionStatus::True, type_.to_owned(), String::new()),
        Err(CloudError::NodeClassNotReady { reason, .. }) => {
            let message = reason
                .strip_prefix(type_)
                .and_then(|r| r.strip_prefix(": "))
                .unwrap_or(&reason)
                .to_owned();
            (
                ConditionStatus::False,
                not_found_reason(type_).to_owned(),
                message,
            )
        }
        Err(e) => (ConditionStatus::False, e.reason().to_owned(), e.to_string()),
    };
    Condition {
        type_: type_.to_owned(),
        status,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ),
        reason,
        message,
        observed_generation: None,
    }
}

/// The reason a part's condition is False with when its terms matched nothing, as upstream
/// names it.
pub fn not_found_reason(condition_type: &str) -> &'static str {
    match condition_type {
        condition_types::SUBNETS_READY => "SubnetsNotFound",
        condition_types::SECURITY_GROUPS_READY => "SecurityGroupsNotFound",
        condition_types::AMIS_READY => "AMINotFound",
        condition_types::INSTANCE_PROFILE_READY => "InstanceProfileNotReady",
        _ => "NotReady",
    }
}

impl<A: AwsApi> AwsCloud<A> {
    /// Resolve every part from scratch: each part is looked up even when another failed, and
    /// the status says exactly what this pass observed — a part that failed has its condition
    /// False (naming the term, or the API error) and no stale values, a part that resolved
    /// has its condition True. Nothing is carried over from the old status, so a class that
    /// failed once (IAM's `NoSuchEntity` for seconds after a role is created, a wrong role
    /// corrected later) is Ready again as soon as its parts resolve.
    pub(crate) async fn resolve_node_class(
        &self,
        node_class: &EC2NodeClass,
    ) -> CloudResult<EC2NodeClassStatus> {
        let mut status = EC2NodeClassStatus::default();
        let mut outcomes: Vec<(&str, Result<(), CloudError>)> = Vec::new();
        match self.resolve_subnets(node_class).await {
            Ok(v) => {
                status.subnets = v;
                outcomes.push((condition_types::SUBNETS_READY, Ok(())));
            }
            Err(e) => outcomes.push((condition_types::SUBNETS_READY, Err(e))),
        }
        match self.resolve_security_groups(node_class).await {
            Ok(v) => {
                status.security_groups = v;
                outcomes.push((condition_types::SECURITY_GROUPS_READY, Ok(())));
            }
            Err(e) => outcomes.push((condition_types::SECURITY_GROUPS_READY, Err(e))),
        }
        match self.resolve_amis(node_class).await {
            Ok(v) => {
                status.amis = v;
                outcomes.push((condition_types::AMIS_READY, Ok(())));
            }
            Err(e) => outcomes.push((condition_types::AMIS_READY, Err(e))),
        }
        match self.resolve_instance_profile(node_class).await {
            Ok(v) => {
                status.instance_profile = Some(v);
                outcomes.push((condition_types::INSTANCE_PROFILE_READY, Ok(())));
            }
            Err(e) => outcomes.push((condition_types::INSTANCE_PROFILE_READY, Err(e))),
        }
        status.conditions = outcomes
            .into_iter()
            .map(|(type_, outcome)| part_condition(type_, outcome))
            .collect();
        Ok(status)
    }

    async fn resolve_subnets(&self, node_class: &EC2NodeClass) -> CloudResult<Vec<Subnet>> {
        let mut found = BTreeMap::new();
        let mut empty = Vec::new();
        for (i, term) in node_class.spec.subnet_selector_terms.iter().enumerate() {
            let mut filters = tag_filters(&term.tags);
            if let Some(id) = &term.id {
                filters.push(Filter::new("subnet-id", [id.as_str()]));
            }
            let subnets = self.api.describe_subnets(filters).await?;
            if subnets.is_empty() {
                empty.push(format!("subnetSelectorTerms[{i}] {}", describe_term(term)));
            }
            for s in subnets {
                found.entry(s.id.clone()).or_insert(Subnet {
                    id: s.id,
                    zone: s.zone,
                    zone_id: s.zone_id,
                });
            }
        }
        if found.is_empty() {
            return Err(not_ready(
                node_class,
                condition_types::SUBNETS_READY,
                format!("no subnet matched: {}", empty.join(", ")),
            ));
        }
        Ok(found.into_values().collect())
    }

    async fn resolve_security_groups(
        &self,
        node_class: &EC2NodeClass,
    ) -> CloudResult<Vec<SecurityGroup>> {
        let mut found = BTreeMap::new();
        let mut empty = Vec::new();
        for (i, term) in node_class
            .spec
            .security_group_selector_terms
            .iter()
            .enumerate()
        {
            let mut filters = tag_filters(&term.tags);
            if let Some(id) = &term.id {
                filters.push(Filter::new("group-id", [id.as_str()]));
            }
            if let Some(name) = &term.name {
                filters.push(Filter::new("group-name", [name.as_str()]));
            }
            let groups = self.api.describe_security_groups(filters).await?;
            if groups.is_empty() {
                empty.push(format!(
                    "securityGroupSelectorTerms[{i}] {}",
                    describe_term(term)
                ));
            }
            for g in groups {
                found.entry(g.id.clone()).or_insert(SecurityGroup {
                    id: g.id,
                    name: Some(g.name),
                });
            }
        }
        if found.is_empty() {
            return Err(not_ready(
                node_class,
                condition_types::SECURITY_GROUPS_READY,
                format!("no security group matched: {}", empty.join(", ")),
            ));
        }
        Ok(found.into_values().collect())
    }

    /// An SSM parameter's value, cached for the instance-types TTL.
    async fn parameter(&self, name: String) -> CloudResult<Option<String>> {
        if let Some(value) = self.parameters.get(&name) {
            return Ok(value);
        }
        let value = self.api.get_parameter(name.clone()).await?;
        self.parameters.put(name, value.clone());
        Ok(value)
    }

    /// The images a term selects, each with what an instance type must meet to use it beyond
    /// its architecture.
    async fn images_for_term(
        &self,
        node_class: &EC2NodeClass,
        term: &AmiSelectorTerm,
    ) -> CloudResult<Vec<(ImageRecord, Vec<NodeSelectorRequirement>)>> {
        let plain =
            |images: Vec<ImageRecord>| images.into_iter().map(|i| (i, Vec::new())).collect();
        if let Some(alias) = &term.alias {
            let (family, version) = alias.split_once('@').unwrap_or((alias.as_str(), "latest"));
            let family = AmiFamily::from_alias(family);
            let Some(params) =
                family.and_then(|f| alias_parameters(f, version, &self.kubernetes_version))
            else {
                return Err(not_ready(
                    node_class,
                    condition_types::AMIS_READY,
                    format!("alias {alias:?} is not supported"),
                ));
            };
            let mut variants = BTreeMap::new();
            for parameter in params {
                if let Some(id) = self.parameter(parameter.name).await? {
                    variants.insert(id, parameter.variant);
                }
            }
            if variants.is_empty() {
                return Ok(Vec::new());
            }
            let images = self
                .api
                .describe_images(variants.keys().cloned().collect(), Vec::new(), Vec::new())
                .await?;
            return Ok(images
                .into_iter()
                .map(|i| {
                    let requirements = variants
                        .get(&i.id)
                        .map(|v| v.requirements())
                        .unwrap_or_default();
                    (i, requirements)
                })
                .collect());
        }
        if let Some(parameter) = &term.ssm_parameter {
            return match self.parameter(parameter.clone()).await? {
                Some(id) => Ok(plain(
                    self.api
                        .describe_images(vec![id], Vec::new(), Vec::new())
                        .await?,
                )),
                None => Ok(Vec::new()),
            };
        }
        if let Some(id) = &term.id {
            return Ok(plain(
                self.api
                    .describe_images(vec![id.clone()], Vec::new(), Vec::new())
                    .await?,
            ));
        }
        let mut filters = tag_filters(&term.tags);
        if let Some(name) = &term.name {
            filters.push(Filter::new("name", [name.as_str()]));
        }
        let owners = match (&term.owner, &term.name) {
            (Some(owner), _) => vec![owner.clone()],
            // Upstream: a name without an owner only matches our own or Amazon's images.
            (None, Some(_)) => vec!["self".to_owned(), "amazon".to_owned()],
            (None, None) => Vec::new(),
        };
        Ok(plain(
            self.api
                .describe_images(Vec::new(), owners, filters)
                .await?,
        ))
    }

    async fn resolve_amis(&self, node_class: &EC2NodeClass) -> CloudResult<Vec<Ami>> {
        let mut images: BTreeMap<String, (ImageRecord, Vec<NodeSelectorRequirement>)> =
            BTreeMap::new();
        let mut empty = Vec::new();
        for (i, term) in node_class.spec.ami_selector_terms.iter().enumerate() {
            let found = self.images_for_term(node_class, term).await?;
            if found.is_empty() {
                empty.push(format!("amiSelectorTerms[{i}] {}", describe_term(term)));
            }
            for (image, requirements) in found {
                images
                    .entry(image.id.clone())
                    .or_insert((image, requirements));
            }
        }
        let mut images: Vec<_> = images
            .into_values()
            .filter(|(i, _)| arch_label(&i.architecture).is_some())
            .collect();
        if images.is_empty() {
            return Err(not_ready(
                node_class,
                condition_types::AMIS_READY,
                format!("no AMI matched: {}", empty.join(", ")),
            ));
        }
        // Newest first, non-deprecated before deprecated: launches take the first that fits.
        images.sort_by(|(a, _), (b, _)| {
            a.deprecated
                .cmp(&b.deprecated)
                .then_with(|| b.creation_date.cmp(&a.creation_date))
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(images
            .into_iter()
            .map(|(i, extra)| {
                let mut requirements = vec![NodeSelectorRequirement {
                    key: labels::ARCH.to_owned(),
                    operator: "In".to_owned(),
                    values: vec![arch_label(&i.architecture).unwrap_or_default().to_owned()],
                }];
                requirements.extend(extra);
                Ami {
                    requirements,
                    id: i.id,
                    deprecated: i.deprecated,
                    name: i.name,
                }
            })
            .collect())
    }

    fn profile_tags(&self, node_class: &EC2NodeClass) -> BTreeMap<String, String> {
        let cluster = &self.settings.cluster_name;
        BTreeMap::from([
            (labels::cluster_owned_tag(cluster), "owned".to_owned()),
            (labels::EKS_CLUSTER_NAME_TAG.to_owned(), cluster.clone()),
            (
                labels::EC2_NODE_CLASS.to_owned(),
                node_class.metadata.name.clone().unwrap_or_default(),
            ),
            (labels::TOPOLOGY_REGION.to_owned(), self.region.clone()),
        ])
    }

    async fn resolve_instance_profile(&self, node_class: &EC2NodeClass) -> CloudResult<String> {
        if let Some(profile) = &node_class.spec.instance_profile {
            return match self.api.get_instance_profile(profile.clone()).await? {
                Some(p) => Ok(p.name),
                None => Err(not_ready(
                    node_class,
                    condition_types::INSTANCE_PROFILE_READY,
                    format!("instance profile {profile:?} does not exist"),
                )),
            };
        }
        let Some(role) = node_class.spec.role.as_deref() else {
            return Err(not_ready(
                node_class,
                condition_types::INSTANCE_PROFILE_READY,
                "neither role nor instanceProfile is set".to_owned(),
            ));
        };
        let role = role_name(role).to_owned();
        let name = instance_profile_name(
            &self.settings.cluster_name,
            &self.region,
            node_class.metadata.name.as_deref().unwrap_or_default(),
        );
        let profile = match self.api.get_instance_profile(name.clone()).await? {
            Some(p) => p,
            None => {
                self.api
                    .create_instance_profile(name.clone(), self.profile_tags(node_class))
                    .await
                    .map_err(|e| {
                        not_ready(
                            node_class,
                            condition_types::INSTANCE_PROFILE_READY,
                            format!("creating instance profile {name} for role {role}: {e}"),
                        )
                    })?;
                self.api
                    .get_instance_profile(name.clone())
                    .await?
                    .ok_or_else(|| {
                        CloudError::other(
                            "CreateInstanceProfile",
                            format!("{name} vanished after creation"),
                        )
                    })?
            }
        };
        if !profile.roles.contains(&role) {
            // A profile holds one role, so the old one must go before the new one is added.
            // If the new one cannot be added (a wrong or not yet visible role), the old one is
            // put back: nodes already running with this profile keep a working role.
            for other in &profile.roles {
                self.api
                    .remove_role_from_instance_profile(name.clone(), other.clone())
                    .await?;
            }
            if let Err(e) = self
                .api
                .add_role_to_instance_profile(name.clone(), role.clone())
                .await
            {
                for other in &profile.roles {
                    if let Err(restore) = self
                        .api
                        .add_role_to_instance_profile(name.clone(), other.clone())
                        .await
                    {
                        tracing::warn!(instance_profile = %name, role = %other, error = %restore, "putting the previous role back failed");
                    }
                }
                return Err(not_ready(
                    node_class,
                    condition_types::INSTANCE_PROFILE_READY,
                    format!("role {role} cannot be added to instance profile {name}: {e}"),
                ));
            }
        }
        Ok(name)
    }

    pub(crate) async fn clean_up_node_class(&self, node_class: &EC2NodeClass) -> CloudResult<()> {
        let nc_name = node_class.metadata.name.clone().unwrap_or_default();
        if node_class.spec.role.is_some() {
            let name = instance_profile_name(&self.settings.cluster_name, &self.region, &nc_name);
            if let Some(profile) = self.api.get_instance_profile(name.clone()).await? {
                let ours = profile
                    .tags
                    .get(&labels::cluster_owned_tag(&self.settings.cluster_name))
                    == Some(&"owned".to_owned());
                if ours {
                    for role in profile.roles {
                        self.api
                            .remove_role_from_instance_profile(name.clone(), role)
                            .await?;
                    }
                    self.api.delete_instance_profile(name).await?;
                }
            }
        }
        let templates = self
            .api
            .describe_launch_templates(vec![
                Filter::new(
                    format!("tag:{}", labels::EC2_NODE_CLASS),
                    [nc_name.as_str()],
                ),
                Filter::new(
                    format!("tag:{}", labels::EKS_CLUSTER_NAME_TAG),
                    [self.settings.cluster_name.as_str()],
                ),
            ])
            .await?;
        for template in templates {
            self.api
                .delete_launch_template(template.name.clone())
                .await?;
        }
        self.launch_templates.clear();
        Ok(())
    }

    pub(crate) async fn drift(
        &self,
        claim: &NodeClaim,
        node_class: &EC2NodeClass,
    ) -> CloudResult<Option<DriftReason>> {
        let Some(provider_id) = claim.status.as_ref().and_then(|s| s.provider_id.clone()) else {
            return Ok(None);
        };
        let Some(status) = node_class.status.as_ref() else {
            return Ok(None);
        };
        let record = self.instance_record(&provider_id).await?;
        if !status.amis.is_empty() && !status.amis.iter().any(|a| a.id == record.image_id) {
            return Ok(Some(DriftReason(format!(
                "AMIDrift: image {} is no longer selected",
                record.image_id
            ))));
        }
        if let Some(subnet) = &record.subnet_id
            && !status.subnets.is_empty()
            && !status.subnets.iter().any(|s| &s.id == subnet)
        {
            return Ok(Some(DriftReason(format!(
                "SubnetDrift: subnet {subnet} is no longer selected"
            ))));
        }
        let have: BTreeSet<&str> = record
            .security_group_ids
            .iter()
            .map(String::as_str)
            .collect();
        let want: BTreeSet<&str> = status
            .security_groups
            .iter()
            .map(|g| g.id.as_str())
            .collect();
        if !have.is_empty() && !want.is_empty() && have != want {
            return Ok(Some(DriftReason(format!(
                "SecurityGroupDrift: instance has {have:?}, node class selects {want:?}"
            ))));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_terms_become_filters() {
        let tags = BTreeMap::from([
            ("karpenter.sh/discovery".to_owned(), "sandbox".to_owned()),
            ("kubernetes.io/role/internal-elb".to_owned(), "*".to_owned()),
        ]);
        assert_eq!(
            tag_filters(&tags),
            vec![
                Filter::new("tag:karpenter.sh/discovery", ["sandbox"]),
                Filter::new("tag-key", ["kubernetes.io/role/internal-elb"]),
            ]
        );
    }

    #[test]
    fn aliases_resolve_through_the_public_parameters() {
        let names = |family, version| -> Vec<(&'static str, Variant, String)> {
            alias_parameters(family, version, "1.37")
                .unwrap()
                .into_iter()
                .map(|p| (p.arch, p.variant, p.name))
                .collect()
        };
        let al2023 = names(AmiFamily::Al2023, "latest");
        assert_eq!(al2023.len(), 5);
        assert!(al2023.contains(&(
            "x86_64",
            Variant::Standard,
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/x86_64/standard/recommended/image_id".into()
        )));
        assert!(al2023.contains(&(
            "arm64",
            Variant::Nvidia,
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/arm64/nvidia/recommended/image_id".into()
        )));
        let pinned = names(AmiFamily::Al2023, "v20261115");
        assert!(pinned.iter().any(|(_, _, n)| n == "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/arm64/standard/amazon-eks-node-al2023-arm64-standard-1.37-v20261115/image_id"));
        let al2 = names(AmiFamily::Al2, "latest");
        assert!(al2.contains(&(
            "arm64",
            Variant::Standard,
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2-arm64/recommended/image_id".into()
        )));
        assert!(al2.contains(&(
            "x86_64",
            Variant::Nvidia,
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2-gpu/recommended/image_id".into()
        )));
        let br = names(AmiFamily::Bottlerocket, "latest");
        assert!(br.contains(&(
            "x86_64",
            Variant::Standard,
            "/aws/service/bottlerocket/aws-k8s-1.37/x86_64/latest/image_id".into()
        )));
        assert!(br.contains(&(
            "arm64",
            Variant::Nvidia,
            "/aws/service/bottlerocket/aws-k8s-1.37-nvidia/arm64/latest/image_id".into()
        )));
        assert!(alias_parameters(AmiFamily::Windows2022, "latest", "1.37").is_none());
    }

    #[test]
    fn instance_profile_names_are_deterministic() {
        let a = instance_profile_name("sandbox", "us-west-2", "default");
        assert_eq!(a, instance_profile_name("sandbox", "us-west-2", "default"));
        assert!(a.starts_with("sandbox_"));
        assert_ne!(a, instance_profile_name("sandbox", "us-east-1", "default"));
        assert_eq!(
            role_name("arn:aws:iam::1:role/path/KarpenterNodeRole"),
            "KarpenterNodeRole"
        );
        assert_eq!(role_name("KarpenterNodeRole"), "KarpenterNodeRole");
    }
}

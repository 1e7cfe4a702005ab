//! Turning a NodeClaim into one EC2 instance, and finding and terminating instances.
//!
//! A launch is idempotent per claim: an instance already tagged `karpenter.sh/nodeclaim=<name>`
//! is returned instead of launching another. Otherwise the claim's requirements pick the
//! instance types and zones (cheapest first, at most [`MAX_OVERRIDES`]), each AMI gets a
//! launch template named by a hash of its whole configuration, and CreateFleet (`instant`)
//! launches one of them: `lowest-price` on demand, `price-capacity-optimized` on spot.
//! Overrides EC2 refuses for lack of capacity go into the unavailable-offerings cache and the
//! launch is retried with the rest; when none is left the claim gets
//! [`CloudError::InsufficientCapacity`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use karpctl_api::labels;
use karpctl_api::requirements::{Constraint, Requirement, parse_requirements};
use karpctl_api::v1::{
    AmiFamily, BlockDevice, BlockDeviceMapping, EC2NodeClass, EC2NodeClassStatus, MetadataOptions,
    NodeClaim, Taint, TaintEffect,
};
use karpctl_cloud::{
    CapacityType, CloudError, CloudResult, Instance, InstanceType, Launched, OfferingKey,
};

use crate::AwsCloud;
use crate::api::{
    AwsApi, FleetOverride, FleetRequest, InstanceRecord, LaunchTemplateRequest,
    is_insufficient_capacity,
};
use crate::nodeclass::fnv64;
use crate::userdata::{self, Bootstrap};

/// CreateFleet accepts more, but upstream caps overrides at 60 to keep requests small.
pub const MAX_OVERRIDES: usize = 60;

/// Launch attempts after capacity errors before giving up on the claim for now.
const MAX_ATTEMPTS: usize = 3;

/// Prefix of the launch templates this provider creates (upstream's name).
pub const LAUNCH_TEMPLATE_PREFIX: &str = "karpenter.k8s.aws";

/// Whether `value` (absent: `None`) satisfies `constraint`.
pub fn satisfies(constraint: &Constraint, value: Option<&str>) -> bool {
    let number = || value.and_then(|v| v.parse::<i64>().ok());
    match constraint {
        Constraint::In(values) => value.is_some_and(|v| values.iter().any(|x| x == v)),
        Constraint::NotIn(values) => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        Constraint::Exists => value.is_some(),
        Constraint::DoesNotExist => value.is_none(),
        Constraint::Gt(n) => number().is_some_and(|v| v > *n),
        Constraint::Lt(n) => number().is_some_and(|v| v < *n),
        Constraint::Gte(n) => number().is_some_and(|v| v >= *n),
        Constraint::Lte(n) => number().is_some_and(|v| v <= *n),
    }
}

/// Whether an offering's labels meet the requirements. Keys an instance type can say
/// nothing about (a NodePool's own labels) are not the offering's to meet.
pub fn compatible(requirements: &[Requirement], labels_of: &BTreeMap<String, String>) -> bool {
    requirements.iter().all(|r| {
        let decidable = labels_of.contains_key(&r.key)
            || r.key.starts_with("karpenter.k8s.aws/instance-")
            || [
                labels::INSTANCE_TYPE,
                labels::ARCH,
                labels::OS,
                labels::TOPOLOGY_ZONE,
                labels::CAPACITY_TYPE,
            ]
            .contains(&r.key.as_str());
        !decidable || satisfies(&r.constraint, labels_of.get(&r.key).map(String::as_str))
    })
}

/// One (instance type, zone, capacity type) the claim may launch as.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub price: f64,
}

/// The offerings the claim allows that are available, of one capacity type (spot when the
/// claim allows it and any spot offering is left, as upstream prefers), cheapest first.
pub fn candidates(
    requirements: &[Requirement],
    types: &[InstanceType],
    unavailable: impl Fn(&OfferingKey) -> bool,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for it in types {
        for o in it.offerings.iter().filter(|o| o.available) {
            let mut l = it.labels.clone();
            l.insert(labels::TOPOLOGY_ZONE.to_owned(), o.zone.clone());
            l.insert(
                labels::CAPACITY_TYPE.to_owned(),
                o.capacity_type.as_str().to_owned(),
            );
            let key = OfferingKey {
                instance_type: it.name.clone(),
                zone: o.zone.clone(),
                capacity_type: o.capacity_type,
            };
            if compatible(requirements, &l) && !unavailable(&key) {
                out.push(Candidate {
                    instance_type: it.name.clone(),
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type,
                    price: o.price,
                });
            }
        }
    }
    let capacity_type = if out.iter().any(|c| c.capacity_type == CapacityType::Spot) {
        CapacityType::Spot
    } else {
        CapacityType::OnDemand
    };
    out.retain(|c| c.capacity_type == capacity_type);
    out.sort_by(|a, b| {
        a.price
            .total_cmp(&b.price)
            .then_with(|| a.instance_type.cmp(&b.instance_type))
            .then_with(|| a.zone.cmp(&b.zone))
    });
    out
}

/// Fleet overrides for the cheapest candidates: one per (type, zone), in the first subnet
/// of that zone, at most [`MAX_OVERRIDES`].
pub fn overrides(candidates: &[Candidate], status: &EC2NodeClassStatus) -> Vec<FleetOverride> {
    candidates
        .iter()
        .filter_map(|c| {
            let subnet = status.subnets.iter().find(|s| s.zone == c.zone)?;
            Some(FleetOverride {
                instance_type: c.instance_type.clone(),
                subnet_id: subnet.id.clone(),
                zone: c.zone.clone(),
                price: c.price,
            })
        })
        .take(MAX_OVERRIDES)
        .collect()
}

/// Whether the kubelet may set `key` on its own Node (the NodeRestriction admission plugin
/// refuses other `kubernetes.io` / `k8s.io` labels).
fn kubelet_may_set(key: &str) -> bool {
    let domain = labels::domain(key);
    let restricted = domain.ends_with("kubernetes.io") || domain.ends_with("k8s.io");
    !restricted
        || domain.ends_with("node.kubernetes.io")
            && !domain.ends_with("node-restriction.kubernetes.io")
        || [
            labels::ARCH,
            labels::OS,
            labels::TOPOLOGY_ZONE,
            labels::TOPOLOGY_REGION,
            labels::INSTANCE_TYPE,
        ]
        .contains(&key)
}

/// The labels a node registers with: the claim's labels (NodePool labels and
/// `karpenter.sh/nodepool`), every requirement with a single `In` value, and the capacity
/// type being launched.
pub fn node_labels(
    claim: &NodeClaim,
    requirements: &[Requirement],
    capacity_type: CapacityType,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = claim.metadata.labels.clone().unwrap_or_default();
    for r in requirements {
        if let Constraint::In(values) = &r.constraint
            && values.len() == 1
        {
            out.insert(r.key.clone(), values[0].clone());
        }
    }
    out.insert(
        labels::CAPACITY_TYPE.to_owned(),
        capacity_type.as_str().to_owned(),
    );
    out.retain(|k, _| kubelet_may_set(k));
    out
}

/// Taints the node registers with: the claim's, its startup taints, and
/// `karpenter.sh/unregistered:NoExecute` until the controller has matched it to its claim.
pub fn node_taints(claim: &NodeClaim) -> Vec<Taint> {
    let mut taints: Vec<Taint> = claim
        .spec
        .taints
        .iter()
        .chain(&claim.spec.startup_taints)
        .cloned()
        .collect();
    if !taints.iter().any(|t| t.key == labels::UNREGISTERED_TAINT) {
        taints.push(Taint::new(
            labels::UNREGISTERED_TAINT,
            TaintEffect::NoExecute,
        ));
    }
    taints
}

/// The block devices a family's nodes get when the node class names none (upstream's
/// defaults: a 20Gi gp3 root; Bottlerocket's 4Gi OS volume and 20Gi data volume).
pub fn default_block_devices(family: AmiFamily) -> Vec<BlockDeviceMapping> {
    let device = |name: &str, size: &str| BlockDeviceMapping {
        device_name: Some(name.to_owned()),
        ebs: Some(BlockDevice {
            encrypted: Some(true),
            delete_on_termination: Some(true),
            volume_size: Some(size.to_owned()),
            volume_type: Some("gp3".to_owned()),
            ..BlockDevice::default()
        }),
        root_volume: false,
    };
    match family {
        AmiFamily::Bottlerocket => vec![device("/dev/xvda", "4Gi"), device("/dev/xvdb", "20Gi")],
        _ => vec![device("/dev/xvda", "20Gi")],
    }
}

/// A launch template's name: the prefix and a hash of everything in it, so equal
/// configurations share one template and any change makes a new one.
pub fn launch_template_name(request: &LaunchTemplateRequest) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "{}|{:?}|{}|{}|{:?}|{:?}|{}|{:?}|{}|{:?}",
        request.image_id,
        request.security_group_ids,
        request.user_data,
        request.instance_profile,
        request.block_device_mappings,
        request.metadata_options,
        request.detailed_monitoring,
        request.associate_public_ip_address,
        request.capacity_type.as_str(),
        request.tags,
    );
    format!("{LAUNCH_TEMPLATE_PREFIX}/{:016x}", fnv64(&text))
}

/// Whether an EC2 error says a launch template does not exist.
fn is_missing_launch_template(message: &str) -> bool {
    message.contains("InvalidLaunchTemplateName.NotFound")
        || message.contains("InvalidLaunchTemplateId.NotFound")
}

fn provider_id(zone: &str, id: &str) -> String {
    format!("aws:///{zone}/{id}")
}

/// The instance id at the end of `aws:///<zone>/<id>`.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    provider_id
        .rsplit('/')
        .next()
        .filter(|id| id.starts_with("i-"))
}

fn instance(record: &InstanceRecord) -> Instance {
    Instance {
        provider_id: provider_id(&record.zone, &record.id),
        id: record.id.clone(),
        instance_type: record.instance_type.clone(),
        zone: record.zone.clone(),
        capacity_type: record.capacity_type,
        image_id: record.image_id.clone(),
        subnet_id: record.subnet_id.clone(),
        security_group_ids: record.security_group_ids.clone(),
        state: record.state,
        launch_time: record.launch_time,
        tags: record.tags.clone(),
    }
}

fn launched(record: &InstanceRecord, it: Option<&InstanceType>) -> Launched {
    let (capacity, allocatable, mut l) = match it {
        Some(it) => (
            it.capacity.clone(),
            it.allocatable.clone(),
            it.labels.clone(),
        ),
        None => Default::default(),
    };
    l.insert(
        labels::INSTANCE_TYPE.to_owned(),
        record.instance_type.clone(),
    );
    l.insert(labels::TOPOLOGY_ZONE.to_owned(), record.zone.clone());
    l.insert(
        labels::CAPACITY_TYPE.to_owned(),
        record.capacity_type.as_str().to_owned(),
    );
    Launched {
        instance: instance(record),
        capacity,
        allocatable,
        labels: l,
    }
}

impl<A: AwsApi> AwsCloud<A> {
    fn cluster_filters(&self) -> Vec<crate::api::Filter> {
        use crate::api::Filter;
        vec![
            Filter::new(
                "tag-key",
                [labels::cluster_owned_tag(&self.settings.cluster_name)],
            ),
            Filter::new("tag-key", [labels::NODE_POOL]),
            Filter::new(
                "instance-state-name",
                ["pending", "running", "stopping", "stopped"],
            ),
        ]
    }

    /// Tags every launched instance, volume and launch template carries (a template only
    /// the cluster's, the node class's and the NodePool's; a launch also the claim's).
    fn launch_tags(
        &self,
        node_class: &EC2NodeClass,
        pool: &str,
        claim: Option<&NodeClaim>,
    ) -> BTreeMap<String, String> {
        let cluster = &self.settings.cluster_name;
        let mut tags = node_class.spec.tags.clone();
        tags.insert(labels::cluster_owned_tag(cluster), "owned".to_owned());
        tags.insert(labels::EKS_CLUSTER_NAME_TAG.to_owned(), cluster.clone());
        tags.insert(
            labels::EC2_NODE_CLASS.to_owned(),
            node_class.metadata.name.clone().unwrap_or_default(),
        );
        tags.insert(labels::NODE_POOL.to_owned(), pool.to_owned());
        if let Some(claim) = claim {
            let name = claim.metadata.name.clone().unwrap_or_default();
            tags.insert(labels::NODECLAIM_TAG.to_owned(), name.clone());
            tags.insert("Name".to_owned(), format!("{pool}/{name}"));
        }
        tags
    }

    /// The launch template for this NodePool's configuration on `image_id`, created if new:
    /// one per pool and configuration, as upstream (the pool's tag is part of the name's hash).
    async fn ensure_launch_template(
        &self,
        node_class: &EC2NodeClass,
        status: &EC2NodeClassStatus,
        pool: &str,
        capacity_type: CapacityType,
        image_id: &str,
        node: &Bootstrap,
    ) -> CloudResult<String> {
        let family = node_class.spec.effective_ami_family();
        let user_data = userdata::render(family, &self.cluster, node);
        let mut request =
            LaunchTemplateRequest {
                name: String::new(),
                image_id: image_id.to_owned(),
                security_group_ids: status
                    .security_groups
                    .iter()
                    .map(|g| g.id.clone())
                    .collect(),
                user_data: base64::engine::general_purpose::STANDARD.encode(user_data),
                instance_profile: status.instance_profile.clone().unwrap_or_default(),
                block_device_mappings: if node_class.spec.block_device_mappings.is_empty() {
                    default_block_devices(family)
                } else {
                    node_class.spec.block_device_mappings.clone()
                },
                metadata_options: node_class.spec.metadata_options.clone().unwrap_or(
                    MetadataOptions {
                        http_endpoint: Some("enabled".into()),
                        http_protocol_ipv6: Some("disabled".into()),
                        http_put_response_hop_limit: Some(1),
                        http_tokens: Some("required".into()),
                    },
                ),
                detailed_monitoring: node_class.spec.detailed_monitoring.unwrap_or(false),
                associate_public_ip_address: node_class.spec.associate_public_ip_address,
                capacity_type,
                tags: self.launch_tags(node_class, pool, None),
            };
        request.name = launch_template_name(&request);
        let name = request.name.clone();
        if self.launch_templates.get(&name).is_some() {
            return Ok(name);
        }
        let existing = self
            .api
            .describe_launch_templates(vec![crate::api::Filter::new(
                "launch-template-name",
                [name.as_str()],
            )])
            .await?;
        if existing.is_empty() {
            self.api.create_launch_template(request).await?;
        }
        self.launch_templates.put(name.clone(), ());
        Ok(name)
    }

    pub(crate) async fn launch(
        &self,
        claim: &NodeClaim,
        node_class: &EC2NodeClass,
    ) -> CloudResult<Launched> {
        let name = claim.metadata.name.clone().unwrap_or_default();
        // Idempotency: a live instance already launched for this claim is the answer.
        let mut filters = self.cluster_filters();
        filters.push(crate::api::Filter::new(
            format!("tag:{}", labels::NODECLAIM_TAG),
            [name.as_str()],
        ));
        if let Some(existing) = self
            .api
            .describe_instances(Vec::new(), filters)
            .await?
            .into_iter()
            .find(|i| !i.state.is_gone())
        {
            let types = self
                .cached_instance_types(node_class)
                .await
                .unwrap_or_default();
            let it = types.iter().find(|t| t.name == existing.instance_type);
            return Ok(launched(&existing, it));
        }

        let nc_name = node_class.metadata.name.clone().unwrap_or_default();
        let not_ready = |reason: &str| CloudError::NodeClassNotReady {
            name: nc_name.clone(),
            reason: reason.to_owned(),
        };
        let status = node_class
            .status
            .clone()
            .ok_or_else(|| not_ready("the node class has not been resolved yet"))?;
        if status.subnets.is_empty() {
            return Err(not_ready("SubnetsReady: no subnets resolved"));
        }
        if status.security_groups.is_empty() {
            return Err(not_ready(
                "SecurityGroupsReady: no security groups resolved",
            ));
        }
        if status.amis.is_empty() {
            return Err(not_ready("AMIsReady: no AMIs resolved"));
        }
        if status.instance_profile.is_none() {
            return Err(not_ready(
                "InstanceProfileReady: no instance profile resolved",
            ));
        }
        let requirements = parse_requirements(&claim.spec.requirements, "spec.requirements")
            .map_err(|e| CloudError::other(format!("nodeclaim {name}"), e))?;
        let types = self.cached_instance_types(node_class).await?;
        let by_name: BTreeMap<&str, &InstanceType> =
            types.iter().map(|t| (t.name.as_str(), t)).collect();
        let kubelet = node_class.spec.kubelet.clone();
        let pool = claim
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::NODE_POOL))
            .cloned()
            .unwrap_or_default();
        let tags = self.launch_tags(node_class, &pool, Some(claim));
        let mut refused: Vec<OfferingKey> = Vec::new();
        let mut recreated_templates = false;

        for _ in 0..MAX_ATTEMPTS {
            let candidates = candidates(&requirements, &types, |k| self.is_unavailable(k));
            let Some(capacity_type) = candidates.first().map(|c| c.capacity_type) else {
                break;
            };
            // Each override goes with the newest AMI that suits its instance type.
            let mut by_image: BTreeMap<String, Vec<FleetOverride>> = BTreeMap::new();
            for o in overrides(&candidates, &status) {
                let Some(it) = by_name.get(o.instance_type.as_str()) else {
                    continue;
                };
                let ami = status.amis.iter().find(|a| {
                    a.requirements.iter().all(|r| {
                        let value = it.labels.get(&r.key).map(String::as_str);
                        match r.operator.as_str() {
                            "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                            "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                            "Exists" => value.is_some(),
                            "DoesNotExist" => value.is_none(),
                            _ => true,
                        }
                    })
                });
                if let Some(ami) = ami {
                    by_image.entry(ami.id.clone()).or_default().push(o);
                }
            }
            if by_image.is_empty() {
                return Err(not_ready(&format!(
                    "AMIsReady: no resolved AMI suits the instance types nodeclaim {name} allows"
                )));
            }
            let node = Bootstrap {
                labels: node_labels(claim, &requirements, capacity_type),
                taints: node_taints(claim),
                kubelet: kubelet.clone(),
                custom: node_class.spec.user_data.clone(),
            };
            let mut configs = Vec::new();
            for (image, overrides) in by_image {
                let template = self
                    .ensure_launch_template(
                        node_class,
                        &status,
                        &pool,
                        capacity_type,
                        &image,
                        &node,
                    )
                    .await?;
                configs.push((template, overrides));
            }
            // Cheapest configuration first: moto (and ties in EC2) take the first override.
            configs.sort_by(|a, b| a.1[0].price.total_cmp(&b.1[0].price));
            let result = match self
                .api
                .create_fleet(FleetRequest {
                    capacity_type,
                    configs,
                    tags: tags.clone(),
                    context: node_class.spec.context.clone(),
                })
                .await
            {
                Ok(result) => result,
                // A template this process created was deleted behind its back (a node class
                // finalized elsewhere): forget what it knew and create them again, once.
                Err(CloudError::Other { message, .. })
                    if is_missing_launch_template(&message) && !recreated_templates =>
                {
                    recreated_templates = true;
                    self.launch_templates.clear();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut other_errors = Vec::new();
            for e in &result.errors {
                match (&e.instance_type, &e.zone) {
                    (Some(t), Some(z)) if is_insufficient_capacity(&e.code) => {
                        let key = OfferingKey {
                            instance_type: t.clone(),
                            zone: z.clone(),
                            capacity_type,
                        };
                        self.mark_unavailable(key.clone());
                        refused.push(key);
                    }
                    _ => other_errors.push(format!("{}: {}", e.code, e.message)),
                }
            }
            if let Some(id) = result.instance_ids.first() {
                let record = self
                    .api
                    .describe_instances(vec![id.clone()], Vec::new())
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        CloudError::other(
                            "CreateFleet",
                            format!("launched {id} but cannot describe it"),
                        )
                    })?;
                tracing::info!(nodeclaim = %name, instance = %record.id, instance_type = %record.instance_type, zone = %record.zone, capacity_type = %record.capacity_type, "launched instance");
                return Ok(launched(
                    &record,
                    by_name.get(record.instance_type.as_str()).copied(),
                ));
            }
            if !other_errors.is_empty() {
                return Err(CloudError::other(
                    format!("launching nodeclaim {name}"),
                    other_errors.join("; "),
                ));
            }
        }
        Err(CloudError::InsufficientCapacity {
            message: format!(
                "no offering nodeclaim {name} allows has capacity ({} refused)",
                refused.len()
            ),
            offerings: refused,
        })
    }

    pub(crate) async fn instance_record(&self, provider_id: &str) -> CloudResult<InstanceRecord> {
        let id = instance_id(provider_id)
            .ok_or_else(|| CloudError::NodeClaimNotFound(provider_id.to_owned()))?;
        self.api
            .describe_instances(vec![id.to_owned()], Vec::new())
            .await?
            .into_iter()
            .find(|i| !i.state.is_gone())
            .ok_or_else(|| CloudError::NodeClaimNotFound(provider_id.to_owned()))
    }

    pub(crate) async fn instance(&self, provider_id: &str) -> CloudResult<Instance> {
        Ok(instance(&self.instance_record(provider_id).await?))
    }

    pub(crate) async fn instances(&self) -> CloudResult<Vec<Instance>> {
        Ok(self
            .api
            .describe_instances(Vec::new(), self.cluster_filters())
            .await?
            .iter()
            .filter(|i| !i.state.is_gone())
            .map(instance)
            .collect())
    }

    pub(crate) async fn terminate(&self, provider_id: &str) -> CloudResult<()> {
        let record = self.instance_record(provider_id).await?;
        self.api.terminate_instances(vec![record.id]).await
    }
}

#[cfg(test)]
mod tests {
    use karpctl_api::v1::{
        NodeClaimSpec, NodeClassReference, NodeSelectorRequirementWithMinValues, Subnet,
    };
    use karpctl_cloud::{Offering, Resources};

    use super::*;

    fn it(name: &str, arch: &str, prices: &[(&str, CapacityType, f64)]) -> InstanceType {
        InstanceType {
            name: name.to_owned(),
            labels: BTreeMap::from([
                (labels::INSTANCE_TYPE.to_owned(), name.to_owned()),
                (labels::ARCH.to_owned(), arch.to_owned()),
                (labels::INSTANCE_CPU.to_owned(), "2".to_owned()),
            ]),
            capacity: Resources::default(),
            overhead: Default::default(),
            allocatable: Resources::default(),
            offerings: prices
                .iter()
                .map(|(zone, ct, price)| Offering {
                    zone: zone.to_string(),
                    capacity_type: *ct,
                    price: *price,
                    available: true,
                })
                .collect(),
        }
    }

    fn reqs(raw: &[(&str, &str, &[&str])]) -> Vec<Requirement> {
        let raw: Vec<_> = raw
            .iter()
            .map(|(k, op, v)| {
                NodeSelectorRequirementWithMinValues::new(*k, *op).values(v.iter().copied())
            })
            .collect();
        parse_requirements(&raw, "r").unwrap()
    }

    fn claim(labels_: &[(&str, &str)], raw: &[(&str, &str, &[&str])]) -> NodeClaim {
        let mut claim = NodeClaim::new(
            "c1",
            NodeClaimSpec {
                taints: vec![Taint::new("dedicated", TaintEffect::NoSchedule).value("x")],
                startup_taints: vec![Taint::new("startup", TaintEffect::NoSchedule)],
                requirements: raw
                    .iter()
                    .map(|(k, op, v)| {
                        NodeSelectorRequirementWithMinValues::new(*k, *op).values(v.iter().copied())
                    })
                    .collect(),
                resources: Default::default(),
                node_class_ref: NodeClassReference::ec2_node_class("default"),
                termination_grace_period: None,
                expire_after: None,
            },
        );
        claim.metadata.labels = Some(
            labels_
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        claim
    }

    use CapacityType::{OnDemand, Spot};

    /// (key, operator, values), as written in a claim.
    type RawRequirement<'a> = (&'a str, &'a str, &'a [&'a str]);

    #[test]
    fn candidates_follow_requirements_and_prefer_spot_cheapest_first() {
        let types = vec![
            it(
                "m5.large",
                "amd64",
                &[("a", OnDemand, 0.096), ("a", Spot, 0.04), ("b", Spot, 0.03)],
            ),
            it(
                "c5.large",
                "amd64",
                &[("a", OnDemand, 0.085), ("b", Spot, 0.02)],
            ),
            it("m6g.large", "arm64", &[("a", Spot, 0.01)]),
        ];
        let amd = reqs(&[(labels::ARCH, "In", &["amd64"])]);
        let got = candidates(&amd, &types, |_| false);
        let names: Vec<_> = got
            .iter()
            .map(|c| (c.instance_type.as_str(), c.zone.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![("c5.large", "b"), ("m5.large", "b"), ("m5.large", "a")]
        );
        assert!(got.iter().all(|c| c.capacity_type == Spot));

        let on_demand = reqs(&[
            (labels::ARCH, "In", &["amd64"]),
            (labels::CAPACITY_TYPE, "In", &["on-demand"]),
        ]);
        let got = candidates(&on_demand, &types, |_| false);
        let names: Vec<_> = got.iter().map(|c| c.instance_type.as_str()).collect();
        assert_eq!(names, vec!["c5.large", "m5.large"]);

        let zone_b = reqs(&[
            (labels::TOPOLOGY_ZONE, "NotIn", &["a"]),
            ("team", "In", &["x"]),
        ]);
        let got = candidates(&zone_b, &types, |k| k.instance_type == "c5.large");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].instance_type, "m5.large");
    }

    #[test]
    fn numeric_and_existence_requirements() {
        let types = vec![it("m5.large", "amd64", &[("a", OnDemand, 0.1)])];
        let cases: &[(&[RawRequirement], usize)] = &[
            (&[(labels::INSTANCE_CPU, "Gt", &["1"])], 1),
            (&[(labels::INSTANCE_CPU, "Lt", &["2"])], 0),
            (&[(labels::INSTANCE_GPU_COUNT, "Exists", &[])], 0),
            (&[(labels::INSTANCE_GPU_COUNT, "DoesNotExist", &[])], 1),
            (&[(labels::INSTANCE_TYPE, "In", &["c5.large"])], 0),
        ];
        for (raw, want) in cases {
            assert_eq!(
                candidates(&reqs(raw), &types, |_| false).len(),
                *want,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn overrides_use_a_subnet_of_the_zone_and_stop_at_sixty() {
        let status = EC2NodeClassStatus {
            subnets: vec![
                Subnet {
                    id: "subnet-a".into(),
                    zone: "a".into(),
                    zone_id: None,
                },
                Subnet {
                    id: "subnet-b".into(),
                    zone: "b".into(),
                    zone_id: None,
                },
            ],
            ..Default::default()
        };
        let many: Vec<Candidate> = (0..100)
            .map(|i| Candidate {
                instance_type: format!("t{i}"),
                zone: if i % 3 == 0 {
                    "c"
                } else if i % 2 == 0 {
                    "a"
                } else {
                    "b"
                }
                .to_owned(),
                capacity_type: OnDemand,
                price: f64::from(i),
            })
            .collect();
        let got = overrides(&many, &status);
        assert_eq!(got.len(), MAX_OVERRIDES);
        assert!(got.iter().all(|o| o.zone != "c"));
        assert!(
            got.iter()
                .all(|o| o.subnet_id == format!("subnet-{}", o.zone))
        );
        assert!(got.windows(2).all(|w| w[0].price <= w[1].price));
        assert_eq!(got[0].instance_type, "t1");
    }

    #[test]
    fn node_labels_and_taints() {
        let claim = claim(
            &[
                (labels::NODE_POOL, "default"),
                ("team", "a"),
                ("kubernetes.io/secret", "x"),
            ],
            &[
                (labels::ARCH, "In", &["amd64"]),
                (labels::INSTANCE_TYPE, "In", &["m5.large", "c5.large"]),
                ("node.kubernetes.io/lifecycle", "In", &["normal"]),
                ("node-restriction.kubernetes.io/x", "In", &["y"]),
            ],
        );
        let r = parse_requirements(&claim.spec.requirements, "r").unwrap();
        let got = node_labels(&claim, &r, Spot);
        let want = BTreeMap::from([
            (labels::NODE_POOL.to_owned(), "default".to_owned()),
            ("team".to_owned(), "a".to_owned()),
            (labels::ARCH.to_owned(), "amd64".to_owned()),
            (
                "node.kubernetes.io/lifecycle".to_owned(),
                "normal".to_owned(),
            ),
            (labels::CAPACITY_TYPE.to_owned(), "spot".to_owned()),
        ]);
        assert_eq!(got, want);
        let taints: Vec<_> = node_taints(&claim).into_iter().map(|t| t.key).collect();
        assert_eq!(
            taints,
            vec!["dedicated", "startup", labels::UNREGISTERED_TAINT]
        );
    }

    #[test]
    fn launch_template_names_follow_the_configuration() {
        let request = LaunchTemplateRequest {
            name: String::new(),
            image_id: "ami-1".into(),
            security_group_ids: vec!["sg-1".into()],
            user_data: "ud".into(),
            instance_profile: "p".into(),
            block_device_mappings: default_block_devices(AmiFamily::Al2023),
            metadata_options: MetadataOptions::default(),
            detailed_monitoring: false,
            associate_public_ip_address: None,
            capacity_type: CapacityType::OnDemand,
            tags: BTreeMap::new(),
        };
        let a = launch_template_name(&request);
        assert!(a.starts_with("karpenter.k8s.aws/"), "{a}");
        assert_eq!(a, launch_template_name(&request.clone()));
        let other = LaunchTemplateRequest {
            user_data: "ud2".into(),
            ..request.clone()
        };
        assert_ne!(a, launch_template_name(&other));
        let other = LaunchTemplateRequest {
            image_id: "ami-2".into(),
            ..request.clone()
        };
        assert_ne!(a, launch_template_name(&other));
        // One template per NodePool and configuration, as upstream: the pool's tag is hashed.
        let other = LaunchTemplateRequest {
            tags: BTreeMap::from([(labels::NODE_POOL.to_owned(), "gpu".to_owned())]),
            ..request.clone()
        };
        assert_ne!(a, launch_template_name(&other));
        let other = LaunchTemplateRequest {
            capacity_type: CapacityType::Spot,
            ..request
        };
        assert_ne!(a, launch_template_name(&other));
    }

    #[test]
    fn provider_ids_name_the_instance() {
        assert_eq!(instance_id("aws:///us-west-2a/i-0abc"), Some("i-0abc"));
        assert_eq!(instance_id("kwok://node-1"), None);
    }
}

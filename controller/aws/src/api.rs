//! The AWS calls this crate makes, behind narrow traits in plain Rust types, and the one
//! implementation of them over the SDK ([`Sdk`]).
//!
//! This is the only module that names SDK types. Every SDK error is sorted here into the
//! core's [`CloudError`] kinds (see [`classify`]), so capacity shortages, throttling and
//! vanished instances reach the reconcilers typed, never as SDK error strings.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types as ec2;
use karpctl_api::v1::{BlockDeviceMapping, MetadataOptions};
use karpctl_cloud::{CapacityType, CloudError, CloudResult, InstanceState, InstanceTypeInfo};

// --- Records: what the calls answer, in this crate's words ----------------------------------

/// A `Name=<name>, Values=[...]` filter of an EC2 Describe call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    pub fn new(
        name: impl Into<String>,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SubnetRecord {
    pub id: String,
    pub zone: String,
    pub zone_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SecurityGroupRecord {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImageRecord {
    pub id: String,
    pub name: Option<String>,
    /// EC2's architecture name (`x86_64`, `arm64`).
    pub architecture: String,
    pub creation_date: Option<String>,
    pub deprecated: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRecord {
    pub id: String,
    pub instance_type: String,
    pub zone: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub image_id: String,
    pub state: InstanceState,
    pub capacity_type: CapacityType,
    pub launch_time: Option<SystemTime>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTemplateRecord {
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

/// Everything a launch template carries; its name is a hash of the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTemplateRequest {
    pub name: String,
    pub image_id: String,
    pub security_group_ids: Vec<String>,
    pub user_data: String,
    pub instance_profile: String,
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    pub metadata_options: MetadataOptions,
    pub detailed_monitoring: bool,
    pub associate_public_ip_address: Option<bool>,
    /// Spot templates also tag the spot request their launches create.
    pub capacity_type: CapacityType,
    /// The template's own tags, and (as upstream) those of the network interfaces and spot
    /// requests launched through it: the controller policy's conditions need the cluster,
    /// `eks:eks-cluster-name` and `karpenter.sh/nodepool` on every resource a launch creates.
    pub tags: BTreeMap<String, String>,
}

/// What CreateFleet tags itself (upstream's set): EC2 authorizes each resource a launch
/// creates against the request tags meant for it, so an untagged one fails the policy.
pub const FLEET_TAGGED: [ec2::ResourceType; 3] = [
    ec2::ResourceType::Instance,
    ec2::ResourceType::Volume,
    ec2::ResourceType::Fleet,
];

/// What a launch template tags through its data: the network interfaces, and for spot the
/// spot requests (CreateFleet cannot tag either itself).
pub fn launch_template_data_tagged(capacity_type: CapacityType) -> Vec<ec2::ResourceType> {
    let mut kinds = vec![ec2::ResourceType::NetworkInterface];
    if capacity_type == CapacityType::Spot {
        kinds.push(ec2::ResourceType::SpotInstancesRequest);
    }
    kinds
}

/// One (instance type, subnet) CreateFleet may launch into.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetOverride {
    pub instance_type: String,
    pub subnet_id: String,
    pub zone: String,
    pub price: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FleetRequest {
    pub capacity_type: CapacityType,
    /// Launch template name and the overrides that use it.
    pub configs: Vec<(String, Vec<FleetOverride>)>,
    /// Tags for the fleet, its instance and the instance's volumes.
    pub tags: BTreeMap<String, String>,
    pub context: Option<String>,
}

/// One override CreateFleet refused, with EC2's error code.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetError {
    pub code: String,
    pub message: String,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetResult {
    pub instance_ids: Vec<String>,
    pub errors: Vec<FleetError>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterRecord {
    pub endpoint: String,
    /// Base64 PEM, as DescribeCluster gives it.
    pub certificate_authority: String,
    pub version: String,
    pub service_cidr: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InstanceProfileRecord {
    pub name: String,
    pub arn: String,
    /// Role names.
    pub roles: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

// --- The calls ------------------------------------------------------------------------------

pub trait Ec2Api: Send + Sync + 'static {
    fn describe_subnets(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = CloudResult<Vec<SubnetRecord>>> + Send;
    fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = CloudResult<Vec<SecurityGroupRecord>>> + Send;
    fn describe_images(
        &self,
        image_ids: Vec<String>,
        owners: Vec<String>,
        filters: Vec<Filter>,
    ) -> impl Future<Output = CloudResult<Vec<ImageRecord>>> + Send;
    /// Every instance type of the region, as facts in the shipped data's shape.
    fn describe_instance_types(
        &self,
    ) -> impl Future<Output = CloudResult<Vec<(String, InstanceTypeInfo)>>> + Send;
    /// (instance type, zone) pairs the region offers.
    fn describe_instance_type_offerings(
        &self,
    ) -> impl Future<Output = CloudResult<Vec<(String, String)>>> + Send;
    /// The latest Linux spot price per (instance type, zone).
    fn describe_spot_price_history(
        &self,
    ) -> impl Future<Output = CloudResult<BTreeMap<(String, String), f64>>> + Send;
    fn describe_launch_templates(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = CloudResult<Vec<LaunchTemplateRecord>>> + Send;
    fn create_launch_template(
        &self,
        request: LaunchTemplateRequest,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    fn delete_launch_template(&self, name: String) -> impl Future<Output = CloudResult<()>> + Send;
    fn create_fleet(
        &self,
        request: FleetRequest,
    ) -> impl Future<Output = CloudResult<FleetResult>> + Send;
    fn describe_instances(
        &self,
        instance_ids: Vec<String>,
        filters: Vec<Filter>,
    ) -> impl Future<Output = CloudResult<Vec<InstanceRecord>>> + Send;
    fn terminate_instances(
        &self,
        instance_ids: Vec<String>,
    ) -> impl Future<Output = CloudResult<()>> + Send;
}

pub trait SsmApi: Send + Sync + 'static {
    /// The parameter's value, or `None` when it does not exist.
    fn get_parameter(
        &self,
        name: String,
    ) -> impl Future<Output = CloudResult<Option<String>>> + Send;
}

pub trait IamApi: Send + Sync + 'static {
    fn get_instance_profile(
        &self,
        name: String,
    ) -> impl Future<Output = CloudResult<Option<InstanceProfileRecord>>> + Send;
    fn create_instance_profile(
        &self,
        name: String,
        tags: BTreeMap<String, String>,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    fn add_role_to_instance_profile(
        &self,
        profile: String,
        role: String,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    fn remove_role_from_instance_profile(
        &self,
        profile: String,
        role: String,
    ) -> impl Future<Output = CloudResult<()>> + Send;
    fn delete_instance_profile(&self, name: String)
    -> impl Future<Output = CloudResult<()>> + Send;
}

pub trait PricingApi: Send + Sync + 'static {
    /// Linux shared-tenancy on-demand USD/hour per instance type in `region`.
    fn on_demand_prices(
        &self,
        region: String,
    ) -> impl Future<Output = CloudResult<BTreeMap<String, f64>>> + Send;
}

pub trait EksApi: Send + Sync + 'static {
    fn describe_cluster(
        &self,
        name: String,
    ) -> impl Future<Output = CloudResult<ClusterRecord>> + Send;
}

/// Everything [`crate::AwsCloud`] calls.
pub trait AwsApi: Ec2Api + SsmApi + IamApi + PricingApi + EksApi {}
impl<T: Ec2Api + SsmApi + IamApi + PricingApi + EksApi> AwsApi for T {}

// --- Error sorting --------------------------------------------------------------------------

/// EC2 error codes that mean "no capacity for this offering right now".
pub const INSUFFICIENT_CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "UnfulfillableCapacity",
    "MaxSpotInstanceCountExceeded",
    "SpotMaxPriceTooLow",
    "Unsupported",
    "VcpuLimitExceeded",
];

const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
];

const NOT_FOUND_CODES: &[&str] = &["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"];

pub fn is_insufficient_capacity(code: &str) -> bool {
    INSUFFICIENT_CAPACITY_CODES.contains(&code)
}

/// Sort one AWS error (its code and message) into the core's error kinds.
pub fn classify(context: &str, code: Option<&str>, message: &str) -> CloudError {
    let code = code.unwrap_or_default();
    let text = if code.is_empty() {
        message.to_owned()
    } else {
        format!("{code}: {message}")
    };
    if is_insufficient_capacity(code) {
        CloudError::InsufficientCapacity {
            message: format!("{context}: {text}"),
            offerings: Vec::new(),
        }
    } else if THROTTLING_CODES.contains(&code) {
        CloudError::Throttled(format!("{context}: {text}"))
    } else if NOT_FOUND_CODES.contains(&code) {
        CloudError::NodeClaimNotFound(text)
    } else {
        CloudError::other(context, text)
    }
}

fn sdk_error<E, R>(context: &str, err: aws_sdk_ec2::error::SdkError<E, R>) -> CloudError
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = err.code().map(str::to_owned);
    let message = match err.message() {
        Some(m) => m.to_owned(),
        None => aws_sdk_ec2::error::DisplayErrorContext(&err).to_string(),
    };
    classify(context, code.as_deref(), &message)
}

/// Whether an SDK error carries this code (for "not found is fine" cases).
fn has_code<E, R>(err: &aws_sdk_ec2::error::SdkError<E, R>, codes: &[&str]) -> bool
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    err.code().is_some_and(|c| codes.contains(&c))
}

// --- The SDK implementation -----------------------------------------------------------------

/// The SDK clients, built from one `SdkConfig`. Pricing is only served in a few regions, so
/// its client always talks to us-east-1 (the endpoint override, if any, still applies).
#[derive(Clone, Debug)]
pub struct Sdk {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
    pricing: aws_sdk_pricing::Client,
    eks: aws_sdk_eks::Client,
}

impl Sdk {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let pricing = aws_sdk_pricing::config::Builder::from(config)
            .region(aws_config::Region::new("us-east-1"))
            .build();
        Self {
            ec2: aws_sdk_ec2::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            pricing: aws_sdk_pricing::Client::from_conf(pricing),
            eks: aws_sdk_eks::Client::new(config),
        }
    }
}

fn ec2_filters(filters: Vec<Filter>) -> Option<Vec<ec2::Filter>> {
    if filters.is_empty() {
        return None;
    }
    Some(
        filters
            .into_iter()
            .map(|f| {
                ec2::Filter::builder()
                    .name(f.name)
                    .set_values(Some(f.values))
                    .build()
            })
            .collect(),
    )
}

fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<ec2::Tag> {
    tags.iter()
        .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_map(tags: &[ec2::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn instance_state(state: Option<&ec2::InstanceStateName>) -> InstanceState {
    match state {
        Some(ec2::InstanceStateName::Running) => InstanceState::Running,
        Some(ec2::InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(ec2::InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(ec2::InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(ec2::InstanceStateName::Terminated) => InstanceState::Terminated,
        _ => InstanceState::Pending,
    }
}

/// Whether an EC2 timestamp (`2026-01-01T00:00:00.000Z`) lies in the past.
fn is_past(timestamp: &str) -> bool {
    use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
    DateTime::from_str(timestamp, DateTimeFormat::DateTimeWithOffset)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .is_some_and(|t| t < SystemTime::now())
}

/// Gibibytes from a block device's `volumeSize` (`20Gi`, `100G`, `1Ti`, `1T`).
pub fn volume_size_gib(size: &str) -> Option<i32> {
    let (number, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let n: f64 = number.parse().ok()?;
    let gib = match unit {
        "Gi" => n,
        "G" => n * 1e9 / f64::from(1u32 << 30),
        "Ti" => n * 1024.0,
        "T" => n * 1e12 / f64::from(1u32 << 30),
        _ => return None,
    };
    Some(gib.ceil() as i32)
}

/// Facts about one EC2 type in the shipped data's shape, so the catalogue's label and
/// capacity code applies unchanged.
fn instance_type_info(t: &ec2::InstanceTypeInfo) -> Option<(String, InstanceTypeInfo)> {
    let name = t.instance_type()?.as_str().to_owned();
    let mut info = InstanceTypeInfo {
        name: Some(name.clone()),
        ..InstanceTypeInfo::default()
    };
    info.vcpu = t
        .v_cpu_info()
        .and_then(|v| v.default_v_cpus())
        .map(i64::from);
    info.memory_mib = t.memory_info().and_then(|m| m.size_in_mib());
    let archs = t
        .processor_info()
        .map(|p| p.supported_architectures())
        .unwrap_or_default();
    info.arch = archs.iter().find_map(|a| match a.as_str() {
        "x86_64" => Some("amd64".to_owned()),
        "arm64" => Some("arm64".to_owned()),
        _ => None,
    });
    info.os = Some("linux".to_owned());
    info.hypervisor = t.hypervisor().map(|h| h.as_str().to_owned());
    info.bare_metal = t.bare_metal();
    info.cpu_manufacturer = t
        .processor_info()
        .and_then(|p| p.manufacturer())
        .map(|m| m.to_lowercase());
    info.cpu_sustained_clock_mhz = t
        .processor_info()
        .and_then(|p| p.sustained_clock_speed_in_ghz())
        .map(|g| (g * 1000.0).round() as i64);
    if let Some(net) = t.network_info() {
        info.max_enis = net.maximum_network_interfaces().map(i64::from);
        info.ipv4_per_eni = net.ipv4_addresses_per_interface().map(i64::from);
        if let (Some(enis), Some(ips)) = (info.max_enis, info.ipv4_per_eni) {
            info.eni_limited_max_pods = Some(enis * (ips - 1) + 2);
        }
        info.encryption_in_transit = net.encryption_in_transit_supported().map(|b| b.to_string());
        info.network_bandwidth_mbps = net
            .network_cards()
            .first()
            .and_then(|c| c.baseline_bandwidth_in_gbps())
            .map(|g| (g * 1000.0).round() as i64);
    }
    info.ebs_bandwidth_mbps = t
        .ebs_info()
        .and_then(|e| e.ebs_optimized_info())
        .and_then(|o| o.baseline_bandwidth_in_mbps())
        .map(i64::from);
    if let Some(gpu) = t.gpu_info().and_then(|g| g.gpus().first()) {
        info.gpu_count = gpu.count().map(i64::from);
        info.gpu_manufacturer = gpu.manufacturer().map(str::to_lowercase);
        info.gpu_name = gpu.name().map(str::to_lowercase);
        info.gpu_memory_mib = gpu
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .map(i64::from);
    }
    if let Some(acc) = t
        .inference_accelerator_info()
        .and_then(|a| a.accelerators().first())
    {
        info.accelerator_count = acc.count().map(i64::from);
        info.accelerator_manufacturer = acc.manufacturer().map(str::to_lowercase);
        info.accelerator_name = acc.name().map(str::to_lowercase);
    }
    info.local_nvme_gib = t
        .instance_storage_info()
        .filter(|s| s.nvme_support() != Some(&ec2::EphemeralNvmeSupport::Unsupported))
        .and_then(|s| s.total_size_in_gb());
    Some((name, info))
}

impl Ec2Api for Sdk {
    async fn describe_subnets(&self, filters: Vec<Filter>) -> CloudResult<Vec<SubnetRecord>> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_subnets()
            .set_filters(ec2_filters(filters))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("DescribeSubnets", e))?;
            for s in page.subnets() {
                out.push(SubnetRecord {
                    id: s.subnet_id().unwrap_or_default().to_owned(),
                    zone: s.availability_zone().unwrap_or_default().to_owned(),
                    zone_id: s.availability_zone_id().map(str::to_owned),
                });
            }
        }
        Ok(out)
    }

    async fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> CloudResult<Vec<SecurityGroupRecord>> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_security_groups()
            .set_filters(ec2_filters(filters))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("DescribeSecurityGroups", e))?;
            for g in page.security_groups() {
                out.push(SecurityGroupRecord {
                    id: g.group_id().unwrap_or_default().to_owned(),
                    name: g.group_name().unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(out)
    }

    async fn describe_images(
        &self,
        image_ids: Vec<String>,
        owners: Vec<String>,
        filters: Vec<Filter>,
    ) -> CloudResult<Vec<ImageRecord>> {
        let mut request = self.ec2.describe_images().set_filters(ec2_filters(filters));
        if !image_ids.is_empty() {
            request = request.set_image_ids(Some(image_ids));
        }
        if !owners.is_empty() {
            request = request.set_owners(Some(owners));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if has_code(&e, &["InvalidAMIID.NotFound", "InvalidAMIID.Malformed"]) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(sdk_error("DescribeImages", e)),
        };
        Ok(response
            .images()
            .iter()
            .map(|i| ImageRecord {
                id: i.image_id().unwrap_or_default().to_owned(),
                name: i.name().map(str::to_owned),
                architecture: i
                    .architecture()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default(),
                creation_date: i.creation_date().map(str::to_owned),
                deprecated: i.deprecation_time().is_some_and(is_past),
            })
            .collect())
    }

    async fn describe_instance_types(&self) -> CloudResult<Vec<(String, InstanceTypeInfo)>> {
        let mut out = Vec::new();
        let mut pages = self.ec2.describe_instance_types().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("DescribeInstanceTypes", e))?;
            out.extend(page.instance_types().iter().filter_map(instance_type_info));
        }
        Ok(out)
    }

    async fn describe_instance_type_offerings(&self) -> CloudResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_instance_type_offerings()
            .location_type(ec2::LocationType::AvailabilityZone)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("DescribeInstanceTypeOfferings", e))?;
            for o in page.instance_type_offerings() {
                if let (Some(t), Some(zone)) = (o.instance_type(), o.location()) {
                    out.push((t.as_str().to_owned(), zone.to_owned()));
                }
            }
        }
        Ok(out)
    }

    async fn describe_spot_price_history(&self) -> CloudResult<BTreeMap<(String, String), f64>> {
        let mut latest: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
        let mut pages = self
            .ec2
            .describe_spot_price_history()
            .product_descriptions("Linux/UNIX")
            .product_descriptions("Linux/UNIX (Amazon VPC)")
            .start_time(aws_sdk_ec2::primitives::DateTime::from(SystemTime::now()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("DescribeSpotPriceHistory", e))?;
            for p in page.spot_price_history() {
                let (Some(t), Some(zone), Some(price)) = (
                    p.instance_type(),
                    p.availability_zone(),
                    p.spot_price().and_then(|s| s.parse::<f64>().ok()),
                ) else {
                    continue;
                };
                let at = p.timestamp().map(|t| t.secs()).unwrap_or_default();
                let key = (t.as_str().to_owned(), zone.to_owned());
                if latest.get(&key).is_none_or(|(seen, _)| *seen <= at) {
                    latest.insert(key, (at, price));
                }
            }
        }
        Ok(latest.into_iter().map(|(k, (_, p))| (k, p)).collect())
    }

    async fn describe_launch_templates(
        &self,
        filters: Vec<Filter>,
    ) -> CloudResult<Vec<LaunchTemplateRecord>> {
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_launch_templates()
            .set_filters(ec2_filters(filters))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) if has_code(&e, &["InvalidLaunchTemplateName.NotFoundException"]) => {
                    break;
                }
                Err(e) => return Err(sdk_error("DescribeLaunchTemplates", e)),
            };
            for t in page.launch_templates() {
                out.push(LaunchTemplateRecord {
                    name: t.launch_template_name().unwrap_or_default().to_owned(),
                    tags: tag_map(t.tags()),
                });
            }
        }
        Ok(out)
    }

    async fn create_launch_template(&self, r: LaunchTemplateRequest) -> CloudResult<()> {
        let metadata = ec2::LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .http_endpoint(ec2::LaunchTemplateInstanceMetadataEndpointState::from(
                r.metadata_options
                    .http_endpoint
                    .as_deref()
                    .unwrap_or("enabled"),
            ))
            .http_protocol_ipv6(ec2::LaunchTemplateInstanceMetadataProtocolIpv6::from(
                r.metadata_options
                    .http_protocol_ipv6
                    .as_deref()
                    .unwrap_or("disabled"),
            ))
            .http_put_response_hop_limit(
                r.metadata_options.http_put_response_hop_limit.unwrap_or(1) as i32,
            )
            .http_tokens(ec2::LaunchTemplateHttpTokensState::from(
                r.metadata_options
                    .http_tokens
                    .as_deref()
                    .unwrap_or("required"),
            ))
            .build();
        let devices = r
            .block_device_mappings
            .iter()
            .map(|d| {
                let ebs = d.ebs.as_ref().map(|e| {
                    ec2::LaunchTemplateEbsBlockDeviceRequest::builder()
                        .set_delete_on_termination(e.delete_on_termination)
                        .set_encrypted(e.encrypted)
                        .set_iops(e.iops.map(|v| v as i32))
                        .set_kms_key_id(e.kms_key_id.clone())
                        .set_snapshot_id(e.snapshot_id.clone())
                        .set_throughput(e.throughput.map(|v| v as i32))
                        .set_volume_size(e.volume_size.as_deref().and_then(volume_size_gib))
                        .set_volume_type(e.volume_type.as_deref().map(ec2::VolumeType::from))
                        .build()
                });
                ec2::LaunchTemplateBlockDeviceMappingRequest::builder()
                    .set_device_name(d.device_name.clone())
                    .set_ebs(ebs)
                    .build()
            })
            .collect::<Vec<_>>();
        let mut data = ec2::RequestLaunchTemplateData::builder()
            .image_id(&r.image_id)
            .user_data(&r.user_data)
            .iam_instance_profile(
                ec2::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(&r.instance_profile)
                    .build(),
            )
            .metadata_options(metadata)
            .set_block_device_mappings((!devices.is_empty()).then_some(devices))
            .monitoring(
                ec2::LaunchTemplatesMonitoringRequest::builder()
                    .enabled(r.detailed_monitoring)
                    .build(),
            )
            .set_tag_specifications(Some(
                launch_template_data_tagged(r.capacity_type)
                    .into_iter()
                    .map(|kind| {
                        ec2::LaunchTemplateTagSpecificationRequest::builder()
                            .resource_type(kind)
                            .set_tags(Some(ec2_tags(&r.tags)))
                            .build()
                    })
                    .collect(),
            ));
        if let Some(public) = r.associate_public_ip_address {
            data = data.network_interfaces(
                ec2::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .associate_public_ip_address(public)
                    .device_index(0)
                    .set_groups(Some(r.security_group_ids.clone()))
                    .build(),
            );
        } else {
            data = data.set_security_group_ids(Some(r.security_group_ids.clone()));
        }
        match self
            .ec2
            .create_launch_template()
            .launch_template_name(&r.name)
            .launch_template_data(data.build())
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::LaunchTemplate)
                    .set_tags(Some(ec2_tags(&r.tags)))
                    .build(),
            )
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Another launch raced us to the same configuration: the template is there.
            Err(e) if has_code(&e, &["InvalidLaunchTemplateName.AlreadyExistsException"]) => Ok(()),
            Err(e) => Err(sdk_error("CreateLaunchTemplate", e)),
        }
    }

    async fn delete_launch_template(&self, name: String) -> CloudResult<()> {
        match self
            .ec2
            .delete_launch_template()
            .launch_template_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, &["InvalidLaunchTemplateName.NotFoundException"]) => Ok(()),
            Err(e) => Err(sdk_error("DeleteLaunchTemplate", e)),
        }
    }

    async fn create_fleet(&self, r: FleetRequest) -> CloudResult<FleetResult> {
        let configs = r
            .configs
            .iter()
            .map(|(template, overrides)| {
                ec2::FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        ec2::FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_name(template)
                            .version("$Latest")
                            .build(),
                    )
                    .set_overrides(Some(
                        overrides
                            .iter()
                            .enumerate()
                            .map(|(i, o)| {
                                ec2::FleetLaunchTemplateOverridesRequest::builder()
                                    .instance_type(ec2::InstanceType::from(
                                        o.instance_type.as_str(),
                                    ))
                                    .subnet_id(&o.subnet_id)
                                    .availability_zone(&o.zone)
                                    .priority(i as f64)
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            })
            .collect::<Vec<_>>();
        let capacity_type = match r.capacity_type {
            CapacityType::Spot => ec2::DefaultTargetCapacityType::Spot,
            CapacityType::OnDemand => ec2::DefaultTargetCapacityType::OnDemand,
        };
        let tags = |kind| {
            ec2::TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(ec2_tags(&r.tags)))
                .build()
        };
        let mut request = self
            .ec2
            .create_fleet()
            .r#type(ec2::FleetType::Instant)
            .target_capacity_specification(
                ec2::TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(capacity_type)
                    .build(),
            )
            .set_launch_template_configs(Some(configs))
            .set_tag_specifications(Some(FLEET_TAGGED.into_iter().map(tags).collect()))
            .set_context(r.context.clone());
        request = match r.capacity_type {
            CapacityType::Spot => request.spot_options(
                ec2::SpotOptionsRequest::builder()
                    .allocation_strategy(ec2::SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            ),
            CapacityType::OnDemand => request.on_demand_options(
                ec2::OnDemandOptionsRequest::builder()
                    .allocation_strategy(ec2::FleetOnDemandAllocationStrategy::LowestPrice)
                    .build(),
            ),
        };
        let response = request
            .send()
            .await
            .map_err(|e| sdk_error("CreateFleet", e))?;
        Ok(FleetResult {
            instance_ids: response
                .instances()
                .iter()
                .flat_map(|i| i.instance_ids().iter().cloned())
                .collect(),
            errors: response
                .errors()
                .iter()
                .map(|e| {
                    let overrides = e
                        .launch_template_and_overrides()
                        .and_then(|l| l.overrides());
                    FleetError {
                        code: e.error_code().unwrap_or_default().to_owned(),
                        message: e.error_message().unwrap_or_default().to_owned(),
                        instance_type: overrides
                            .and_then(|o| o.instance_type())
                            .map(|t| t.as_str().to_owned()),
                        zone: overrides
                            .and_then(|o| o.availability_zone())
                            .map(str::to_owned),
                    }
                })
                .collect(),
        })
    }

    async fn describe_instances(
        &self,
        instance_ids: Vec<String>,
        filters: Vec<Filter>,
    ) -> CloudResult<Vec<InstanceRecord>> {
        let mut out = Vec::new();
        let mut request = self
            .ec2
            .describe_instances()
            .set_filters(ec2_filters(filters));
        if !instance_ids.is_empty() {
            request = request.set_instance_ids(Some(instance_ids));
        }
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("DescribeInstances", e))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                out.push(InstanceRecord {
                    id: i.instance_id().unwrap_or_default().to_owned(),
                    instance_type: i
                        .instance_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    zone: i
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_owned(),
                    subnet_id: i.subnet_id().map(str::to_owned),
                    security_group_ids: i
                        .security_groups()
                        .iter()
                        .filter_map(|g| g.group_id().map(str::to_owned))
                        .collect(),
                    image_id: i.image_id().unwrap_or_default().to_owned(),
                    state: instance_state(i.state().and_then(|s| s.name())),
                    capacity_type: if i.instance_lifecycle()
                        == Some(&ec2::InstanceLifecycleType::Spot)
                    {
                        CapacityType::Spot
                    } else {
                        CapacityType::OnDemand
                    },
                    launch_time: i.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
                    tags: tag_map(i.tags()),
                });
            }
        }
        Ok(out)
    }

    async fn terminate_instances(&self, instance_ids: Vec<String>) -> CloudResult<()> {
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(instance_ids))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("TerminateInstances", e))
    }
}

impl SsmApi for Sdk {
    async fn get_parameter(&self, name: String) -> CloudResult<Option<String>> {
        match self.ssm.get_parameter().name(&name).send().await {
            Ok(r) => Ok(r.parameter().and_then(|p| p.value()).map(str::to_owned)),
            Err(e) if has_code(&e, &["ParameterNotFound"]) => Ok(None),
            Err(e) => Err(sdk_error(&format!("GetParameter {name}"), e)),
        }
    }
}

impl IamApi for Sdk {
    async fn get_instance_profile(
        &self,
        name: String,
    ) -> CloudResult<Option<InstanceProfileRecord>> {
        match self
            .iam
            .get_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
        {
            Ok(r) => Ok(r.instance_profile().map(|p| InstanceProfileRecord {
                name: p.instance_profile_name().to_owned(),
                arn: p.arn().to_owned(),
                roles: p.roles().iter().map(|r| r.role_name().to_owned()).collect(),
                tags: p
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect(),
            })),
            Err(e) if has_code(&e, &["NoSuchEntity"]) => Ok(None),
            Err(e) => Err(sdk_error("GetInstanceProfile", e)),
        }
    }

    async fn create_instance_profile(
        &self,
        name: String,
        tags: BTreeMap<String, String>,
    ) -> CloudResult<()> {
        let tags = tags
            .iter()
            .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CloudError::other("CreateInstanceProfile", e))?;
        match self
            .iam
            .create_instance_profile()
            .instance_profile_name(name)
            .set_tags(Some(tags))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, &["EntityAlreadyExists"]) => Ok(()),
            Err(e) => Err(sdk_error("CreateInstanceProfile", e)),
        }
    }

    async fn add_role_to_instance_profile(&self, profile: String, role: String) -> CloudResult<()> {
        match self
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, &["LimitExceeded"]) => Ok(()),
            Err(e) => Err(sdk_error("AddRoleToInstanceProfile", e)),
        }
    }

    async fn remove_role_from_instance_profile(
        &self,
        profile: String,
        role: String,
    ) -> CloudResult<()> {
        match self
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, &["NoSuchEntity"]) => Ok(()),
            Err(e) => Err(sdk_error("RemoveRoleFromInstanceProfile", e)),
        }
    }

    async fn delete_instance_profile(&self, name: String) -> CloudResult<()> {
        match self
            .iam
            .delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if has_code(&e, &["NoSuchEntity"]) => Ok(()),
            Err(e) => Err(sdk_error("DeleteInstanceProfile", e)),
        }
    }
}

impl PricingApi for Sdk {
    async fn on_demand_prices(&self, region: String) -> CloudResult<BTreeMap<String, f64>> {
        use aws_sdk_pricing::types::{Filter as PriceFilter, FilterType};
        let filter = |field: &str, value: &str| {
            PriceFilter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
                .map_err(|e| CloudError::other("GetProducts", e))
        };
        let filters = vec![
            filter("regionCode", &region)?,
            filter("operatingSystem", "Linux")?,
            filter("tenancy", "Shared")?,
            filter("preInstalledSw", "NA")?,
            filter("capacitystatus", "Used")?,
            filter("marketoption", "OnDemand")?,
        ];
        let mut prices = BTreeMap::new();
        let mut pages = self
            .pricing
            .get_products()
            .service_code("AmazonEC2")
            .set_filters(Some(filters))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("GetProducts", e))?;
            for item in page.price_list() {
                if let Some((name, price)) = parse_price_item(item) {
                    prices.insert(name, price);
                }
            }
        }
        Ok(prices)
    }
}

/// One Price List entry (a JSON document in a string): its instance type and USD/hour.
pub fn parse_price_item(item: &str) -> Option<(String, f64)> {
    let doc: serde_json::Value = serde_json::from_str(item).ok()?;
    let name = doc["product"]["attributes"]["instanceType"]
        .as_str()?
        .to_owned();
    let on_demand = doc["terms"]["OnDemand"].as_object()?;
    let price = on_demand.values().find_map(|term| {
        term["priceDimensions"]
            .as_object()?
            .values()
            .find_map(|d| d["pricePerUnit"]["USD"].as_str()?.parse::<f64>().ok())
    })?;
    (price > 0.0).then_some((name, price))
}

impl EksApi for Sdk {
    async fn describe_cluster(&self, name: String) -> CloudResult<ClusterRecord> {
        let response = self
            .eks
            .describe_cluster()
            .name(&name)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("DescribeCluster {name}"), e))?;
        let cluster = response
            .cluster()
            .ok_or_else(|| CloudError::other("DescribeCluster", format!("no cluster {name}")))?;
        Ok(ClusterRecord {
            endpoint: cluster.endpoint().unwrap_or_default().to_owned(),
            certificate_authority: cluster
                .certificate_authority()
                .and_then(|c| c.data())
                .unwrap_or_default()
                .to_owned(),
            version: cluster.version().unwrap_or_default().to_owned(),
            service_cidr: cluster
                .kubernetes_network_config()
                .and_then(|n| n.service_ipv4_cidr())
                .map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_into_the_core_kinds() {
        let cases: &[(&str, &str)] = &[
            ("InsufficientInstanceCapacity", "InsufficientCapacity"),
            ("UnfulfillableCapacity", "InsufficientCapacity"),
            ("MaxSpotInstanceCountExceeded", "InsufficientCapacity"),
            ("RequestLimitExceeded", "Throttled"),
            ("Throttling", "Throttled"),
            ("InvalidInstanceID.NotFound", "NodeClaimNotFound"),
            ("UnauthorizedOperation", "CloudProviderError"),
            ("", "CloudProviderError"),
        ];
        for (code, want) in cases {
            let err = classify("CreateFleet", Some(code), "boom");
            assert_eq!(err.reason(), *want, "{code}");
            assert!(err.to_string().contains("boom"), "{err}");
        }
    }

    #[test]
    fn volume_sizes_in_gib() {
        let cases = [
            ("20Gi", Some(20)),
            ("1Ti", Some(1024)),
            ("100G", Some(94)),
            ("1T", Some(932)),
            ("20", None),
            ("x", None),
        ];
        for (size, want) in cases {
            assert_eq!(volume_size_gib(size), want, "{size}");
        }
    }

    #[test]
    fn price_list_entries_give_type_and_price() {
        let item = r#"{"product":{"attributes":{"instanceType":"m5.large"}},"terms":{"OnDemand":{"X.Y":{"priceDimensions":{"X.Y.Z":{"pricePerUnit":{"USD":"0.0960000000"}}}}}}}"#;
        assert_eq!(parse_price_item(item), Some(("m5.large".to_owned(), 0.096)));
        assert_eq!(parse_price_item("{}"), None);
        let free = item.replace("0.0960000000", "0.0000000000");
        assert_eq!(parse_price_item(&free), None);
    }
}

//! The AWS [`CloudProvider`]: EC2NodeClass resolution (subnets, security groups, AMIs,
//! instance profile), instance types with offerings and prices, launch templates and
//! CreateFleet, and finding and terminating what was launched. Upstream
//! aws/karpenter-provider-aws is the reference design.
//!
//! Every AWS call goes through the narrow traits in [`api`]; their SDK implementation is the
//! only place SDK types appear, and it sorts SDK errors into the core's [`CloudError`]
//! kinds. The rest is this crate's decisions: [`nodeclass`] resolves a node class,
//! [`instancetypes`] builds what the scheduler chooses from, [`launch`] turns a NodeClaim
//! into one instance, [`userdata`] renders what the node boots with.

pub mod api;
pub mod cache;
pub mod instancetypes;
pub mod interruption;
pub mod launch;
pub mod nodeclass;
pub mod userdata;

use std::sync::Arc;
use std::time::Duration;

use karpctl_api::v1::{EC2NodeClass, EC2NodeClassStatus, NodeClaim, NodePool};
use karpctl_cloud::{
    CloudError, CloudProvider, CloudResult, DriftReason, Instance, InstanceType, Launched,
    OfferingKey,
};

use crate::api::{AwsApi, Sdk};
use crate::cache::{Clock, SystemClock, TtlCache, UnavailableOfferings};
use crate::userdata::ClusterInfo;

/// How the provider is configured (upstream's controller settings of the same names).
#[derive(Clone, Debug, PartialEq)]
pub struct AwsSettings {
    pub cluster_name: String,
    /// When None, taken from eks:DescribeCluster.
    pub cluster_endpoint: Option<String>,
    /// Fraction of memory the hypervisor takes (upstream VM_MEMORY_OVERHEAD_PERCENT, default 0.075).
    pub vm_memory_overhead_percent: f64,
    /// ENIs kept away from pods (upstream `RESERVED_ENIS`).
    pub reserved_enis: i64,
    /// Skip the Pricing API and use the shipped prices (upstream `ISOLATED_VPC`).
    pub isolated_vpc: bool,
    /// How long instance types, offerings and prices read from AWS are reused.
    pub instance_types_ttl: Duration,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            cluster_name: String::new(),
            cluster_endpoint: None,
            vm_memory_overhead_percent: 0.075,
            reserved_enis: 0,
            isolated_vpc: false,
            instance_types_ttl: Duration::from_secs(5 * 60),
        }
    }
}

/// The AWS CloudProvider over the calls of `A` (the SDK unless a test says otherwise).
pub struct AwsCloud<A = Sdk> {
    api: A,
    settings: AwsSettings,
    region: String,
    cluster: ClusterInfo,
    kubernetes_version: String,
    unavailable: UnavailableOfferings,
    instance_types: TtlCache<String, Arc<Vec<InstanceType>>>,
    raw: instancetypes::RawCache,
    launch_templates: TtlCache<String, ()>,
    /// SSM parameter values (alias AMI ids): they change with AMI releases, not per reconcile.
    parameters: TtlCache<String, Option<String>>,
}

impl AwsCloud<Sdk> {
    /// Reads DescribeCluster once for what nodes need to join (endpoint, CA, version, service
    /// CIDR).
    pub async fn new(
        sdk: &aws_config::SdkConfig,
        settings: AwsSettings,
    ) -> Result<AwsCloud, CloudError> {
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            CloudError::other("configuring the AWS provider", "no AWS region configured")
        })?;
        Self::with_api(Sdk::new(sdk), region, settings, Arc::new(SystemClock)).await
    }
}

impl<A: AwsApi> AwsCloud<A> {
    /// The provider over any implementation of the calls, with an injected clock.
    pub async fn with_api(
        api: A,
        region: String,
        settings: AwsSettings,
        clock: Arc<dyn Clock>,
    ) -> CloudResult<Self> {
        let described = api.describe_cluster(settings.cluster_name.clone()).await?;
        let cluster = ClusterInfo {
            name: settings.cluster_name.clone(),
            endpoint: settings
                .cluster_endpoint
                .clone()
                .unwrap_or(described.endpoint),
            certificate_authority: described.certificate_authority,
            service_cidr: described.service_cidr,
        };
        let ttl = settings.instance_types_ttl;
        Ok(Self {
            api,
            region,
            cluster,
            kubernetes_version: described.version,
            unavailable: UnavailableOfferings::new(clock.clone()),
            instance_types: TtlCache::new(ttl, clock.clone()),
            raw: instancetypes::RawCache::new(ttl, clock.clone()),
            launch_templates: TtlCache::new(Duration::from_secs(3600), clock.clone()),
            parameters: TtlCache::new(ttl, clock),
            settings,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn cluster(&self) -> &ClusterInfo {
        &self.cluster
    }

    pub fn kubernetes_version(&self) -> &str {
        &self.kubernetes_version
    }
}

impl<A: AwsApi> CloudProvider for AwsCloud<A> {
    async fn create(&self, claim: &NodeClaim, node_class: &EC2NodeClass) -> CloudResult<Launched> {
        self.launch(claim, node_class).await
    }

    async fn delete(&self, provider_id: &str) -> CloudResult<()> {
        self.terminate(provider_id).await
    }

    async fn get(&self, provider_id: &str) -> CloudResult<Instance> {
        self.instance(provider_id).await
    }

    async fn list(&self) -> CloudResult<Vec<Instance>> {
        self.instances().await
    }

    async fn instance_types(
        &self,
        _node_pool: &NodePool,
        node_class: &EC2NodeClass,
    ) -> CloudResult<Vec<InstanceType>> {
        self.instance_types_for(node_class).await
    }

    async fn is_drifted(
        &self,
        claim: &NodeClaim,
        node_class: &EC2NodeClass,
    ) -> CloudResult<Option<DriftReason>> {
        self.drift(claim, node_class).await
    }

    async fn reconcile_node_class(
        &self,
        node_class: &EC2NodeClass,
    ) -> CloudResult<EC2NodeClassStatus> {
        self.resolve_node_class(node_class).await
    }

    async fn finalize_node_class(&self, node_class: &EC2NodeClass) -> CloudResult<()> {
        self.clean_up_node_class(node_class).await
    }

    fn mark_unavailable(&self, offering: OfferingKey, reason: &str) {
        self.unavailable.mark_because(offering, reason);
    }
}

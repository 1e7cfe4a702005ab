//! `karpenter.k8s.aws/v1` EC2NodeClass: how nodes are launched on EC2 (subnets, security groups,
//! AMIs, IAM role, disks, kubelet settings), shared by every NodePool that references it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::{Condition, Conditions};
use super::kubelet::KubeletConfiguration;
use super::requirement::NodeSelectorRequirement;

/// Condition types an EC2NodeClass reports; `Ready` rolls them up.
pub mod condition_types {
    pub const SUBNETS_READY: &str = "SubnetsReady";
    pub const SECURITY_GROUPS_READY: &str = "SecurityGroupsReady";
    pub const AMIS_READY: &str = "AMIsReady";
    pub const INSTANCE_PROFILE_READY: &str = "InstanceProfileReady";
    pub const CAPACITY_RESERVATIONS_READY: &str = "CapacityReservationsReady";
    pub const VALIDATION_SUCCEEDED: &str = "ValidationSucceeded";
}

/// Bumped when a schema change alters the hash of unchanged EC2NodeClasses (upstream's `v4`).
pub const EC2_NODE_CLASS_HASH_VERSION: &str = "v4";

/// EC2NodeClassSpec is the configuration necessary to launch instances in AWS.
// Clippy reads repeated `printcolumn(type_ = ...)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "karpenter.k8s.aws",
    version = "v1",
    kind = "EC2NodeClass",
    plural = "ec2nodeclasses",
    status = "EC2NodeClassStatus",
    category = "karpenter",
    shortname = "ec2nc",
    shortname = "ec2ncs",
    crates(kube_core = "::kube_core"),
    derive = "PartialEq",
    doc = "EC2NodeClass is the Schema for the EC2NodeClass API",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.role",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = ami_family_rules)]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "must specify exactly one of ['role', 'instanceProfile']", "rule": "(has(self.role) && !has(self.instanceProfile)) || (!has(self.role) && has(self.instanceProfile))"},
    {"message": "must specify amiFamily if amiSelectorTerms does not contain an alias", "rule": "self.amiSelectorTerms.exists(x, has(x.alias)) ? true : has(self.amiFamily)"}
]))]
pub struct EC2NodeClassSpec {
    /// Subnet selector terms; a subnet matching any term is used.
    #[schemars(length(max = 30), extend("x-kubernetes-validations" = [
        {"message": "subnetSelectorTerms cannot be empty", "rule": "self.size() != 0"},
        {"message": "expected at least one, got none, ['tags', 'id']", "rule": "self.all(x, has(x.tags) || has(x.id))"},
        {"message": "'id' is mutually exclusive, cannot be set with a combination of other fields in a subnet selector term", "rule": "!self.all(x, has(x.id) && has(x.tags))"}
    ]))]
    pub subnet_selector_terms: Vec<SubnetSelectorTerm>,
    /// Security group selector terms; groups matching any term are attached.
    #[schemars(length(max = 30), extend("x-kubernetes-validations" = [
        {"message": "securityGroupSelectorTerms cannot be empty", "rule": "self.size() != 0"},
        {"message": "expected at least one, got none, ['tags', 'id', 'name']", "rule": "self.all(x, has(x.tags) || has(x.id) || has(x.name))"},
        {"message": "'id' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term", "rule": "!self.all(x, has(x.id) && (has(x.tags) || has(x.name)))"},
        {"message": "'name' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term", "rule": "!self.all(x, has(x.name) && (has(x.tags) || has(x.id)))"}
    ]))]
    pub security_group_selector_terms: Vec<SecurityGroupSelectorTerm>,
    /// Capacity reservation selector terms; reservations matching any term may be used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 30), extend("x-kubernetes-validations" = [
        {"message": "expected at least one, got none, ['tags', 'id', 'instanceMatchCriteria']", "rule": "self.all(x, has(x.tags) || has(x.id) || has(x.instanceMatchCriteria))"},
        {"message": "'id' is mutually exclusive, cannot be set along with other fields in a capacity reservation selector term", "rule": "!self.all(x, has(x.id) && (has(x.tags) || has(x.ownerID) || has(x.instanceMatchCriteria)))"}
    ]))]
    pub capacity_reservation_selector_terms: Vec<CapacityReservationSelectorTerm>,
    /// Whether instances get a public IP address.
    #[serde(
        rename = "associatePublicIPAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub associate_public_ip_address: Option<bool>,
    /// Number of IPv4 prefixes to assign to the primary network interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ip_prefix_count: Option<i32>,
    /// AMI selector terms; an AMI matching any term is used. An `alias` term stands alone.
    #[schemars(length(min = 1, max = 30), extend("x-kubernetes-validations" = [
        {"message": "expected at least one, got none, ['tags', 'id', 'name', 'alias', 'ssmParameter']", "rule": "self.all(x, has(x.tags) || has(x.id) || has(x.name) || has(x.alias) || has(x.ssmParameter))"},
        {"message": "'id' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms", "rule": "!self.exists(x, has(x.id) && (has(x.alias) || has(x.tags) || has(x.name) || has(x.owner)))"},
        {"message": "'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms", "rule": "!self.exists(x, has(x.alias) && (has(x.id) || has(x.tags) || has(x.name) || has(x.owner)))"},
        {"message": "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms", "rule": "!(self.exists(x, has(x.alias)) && self.size() != 1)"}
    ]))]
    pub ami_selector_terms: Vec<AmiSelectorTerm>,
    /// The UserData format and default block devices; inferred from an `alias` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_family: Option<AmiFamily>,
    /// UserData merged with what Karpenter generates, in the AMI family's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// IAM role nodes use; Karpenter manages the instance profile. Exclusive with instanceProfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "role cannot be empty", "rule": "self != ''"}]))]
    pub role: Option<String>,
    /// An existing instance profile for nodes. Exclusive with role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"message": "instanceProfile cannot be empty", "rule": "self != ''"}]))]
    pub instance_profile: Option<String>,
    /// Tags applied to instances, volumes and launch templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"message": "empty tag keys aren't supported", "rule": "self.all(k, k != '')"},
        {"message": "tag contains a restricted tag matching eks:eks-cluster-name", "rule": "self.all(k, k !='eks:eks-cluster-name')"},
        {"message": "tag contains a restricted tag matching kubernetes.io/cluster/", "rule": "self.all(k, !k.startsWith('kubernetes.io/cluster') )"},
        {"message": "tag contains a restricted tag matching karpenter.sh/nodepool", "rule": "self.all(k, k != 'karpenter.sh/nodepool')"},
        {"message": "tag contains a restricted tag matching karpenter.sh/nodeclaim", "rule": "self.all(k, k !='karpenter.sh/nodeclaim')"},
        {"message": "tag contains a restricted tag matching karpenter.k8s.aws/ec2nodeclass", "rule": "self.all(k, k !='karpenter.k8s.aws/ec2nodeclass')"}
    ]))]
    pub tags: BTreeMap<String, String>,
    /// Kubelet settings for the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfiguration>,
    /// Block devices attached to nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-validations" = [
        {"message": "must have only one blockDeviceMappings with rootVolume", "rule": "self.filter(x, has(x.rootVolume)?x.rootVolume==true:false).size() <= 1"}
    ]))]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// How instance-store NVMe disks are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_store_policy: Option<InstanceStorePolicy>,
    /// Whether detailed (1-minute) CloudWatch monitoring is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_monitoring: Option<bool>,
    /// Instance Metadata Service exposure. Defaults to IMDSv2 required with a hop limit of 1,
    /// which keeps pods from reaching the node's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 1, "httpTokens": "required"}))]
    pub metadata_options: Option<MetadataOptions>,
    /// Nitro Enclaves support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave_options: Option<EnclaveOptions>,
    /// Reserved EC2 `Context` field for CreateFleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// An alias family must agree with `amiFamily` when both are set (or `amiFamily` is Custom).
fn ami_family_rules(schema: &mut schemars::Schema) {
    let rules = AmiFamily::ALIASED.iter().map(|family| {
        let name = family.as_str();
        let alias = family.alias_name().unwrap_or_default();
        let article = if name.starts_with('A') { "an" } else { "a" };
        serde_json::json!({
            "message": format!("if set, amiFamily must be '{name}' or 'Custom' when using {article} {name} alias"),
            "rule": format!("!has(self.amiFamily) || (self.amiSelectorTerms.exists(x, has(x.alias) && x.alias.find('^[^@]+') == '{alias}') ? (self.amiFamily == 'Custom' || self.amiFamily == '{name}') : true)"),
        })
    });
    super::cel::push_rules(schema, rules);
}

impl EC2NodeClassSpec {
    /// The `alias` AMI selector term, if one is used.
    pub fn alias(&self) -> Option<&str> {
        self.ami_selector_terms
            .iter()
            .find_map(|t| t.alias.as_deref())
    }

    /// The effective AMI family: `amiFamily`, else the alias family, else Custom.
    pub fn effective_ami_family(&self) -> AmiFamily {
        self.ami_family
            .or_else(|| {
                self.alias()
                    .and_then(|a| AmiFamily::from_alias(a.split('@').next().unwrap_or_default()))
            })
            .unwrap_or(AmiFamily::Custom)
    }
}

/// SubnetSelectorTerm selects subnets by tags or id; fields within a term are ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubnetSelectorTerm {
    /// Tags to match; `*` matches any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20), transform = non_empty_tags)]
    pub tags: BTreeMap<String, String>,
    /// The subnet id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "subnet-[0-9a-z]+"))]
    pub id: Option<String>,
}

/// SecurityGroupSelectorTerm selects security groups by tags, id or name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityGroupSelectorTerm {
    /// Tags to match; `*` matches any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20), transform = non_empty_tags)]
    pub tags: BTreeMap<String, String>,
    /// The security group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "sg-[0-9a-z]+"))]
    pub id: Option<String>,
    /// The security group name (not its Name tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// CapacityReservationSelectorTerm selects On-Demand Capacity Reservations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapacityReservationSelectorTerm {
    /// Tags to match; `*` matches any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20), transform = non_empty_tags)]
    pub tags: BTreeMap<String, String>,
    /// The capacity reservation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^cr-[0-9a-z]+$"))]
    pub id: Option<String>,
    /// The owning AWS account.
    #[serde(rename = "ownerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]{12}$"))]
    pub owner_id: Option<String>,
    /// `open` or `targeted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["open", "targeted"]))]
    pub instance_match_criteria: Option<String>,
}

/// AMISelectorTerm selects AMIs; fields within a term are ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmiSelectorTerm {
    /// An EKS-optimized AMI as `family@version`, e.g. `al2023@latest` or `al2023@v20240625`.
    /// Windows families only support `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 30), extend("x-kubernetes-validations" = [
        {"message": "'alias' is improperly formatted, must match the format 'family@version'", "rule": "self.matches('^[a-zA-Z0-9]+@.+$')"},
        {"message": "family is not supported, must be one of the following: 'al2', 'al2023', 'bottlerocket', 'windows2019', 'windows2022'", "rule": "self.split('@')[0] in ['al2','al2023','bottlerocket','windows2019','windows2022']"},
        {"message": "windows families may only specify version 'latest'", "rule": "self.split('@')[0] in ['windows2019','windows2022'] ? self.split('@')[1] == 'latest' : true"}
    ]))]
    pub alias: Option<String>,
    /// Tags to match; `*` matches any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20), transform = non_empty_tags)]
    pub tags: BTreeMap<String, String>,
    /// The AMI id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "ami-[0-9a-z]+"))]
    pub id: Option<String>,
    /// The AMI name (not its Name tag); wildcards allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owner account ids, `self`, `amazon` or `aws-marketplace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Name or ARN of an SSM parameter holding the AMI id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
}

impl AmiSelectorTerm {
    pub fn alias(alias: impl Into<String>) -> Self {
        Self {
            alias: Some(alias.into()),
            ..Self::default()
        }
    }
}

fn non_empty_tags(schema: &mut schemars::Schema) {
    super::cel::push_rules(
        schema,
        [
            serde_json::json!({"message": "empty tag keys or values aren't supported", "rule": "self.all(k, k != '' && self[k] != '')"}),
        ],
    );
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AmiFamily {
    #[serde(rename = "AL2")]
    Al2,
    #[serde(rename = "AL2023")]
    Al2023,
    Bottlerocket,
    Custom,
    Windows2019,
    Windows2022,
}

impl AmiFamily {
    /// Families with EKS-optimized AMIs reachable through an alias.
    pub const ALIASED: &[AmiFamily] = &[
        Self::Al2,
        Self::Al2023,
        Self::Bottlerocket,
        Self::Windows2019,
        Self::Windows2022,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Al2 => "AL2",
            Self::Al2023 => "AL2023",
            Self::Bottlerocket => "Bottlerocket",
            Self::Custom => "Custom",
            Self::Windows2019 => "Windows2019",
            Self::Windows2022 => "Windows2022",
        }
    }

    /// The alias family (`al2023`), or `None` for Custom.
    pub fn alias_name(self) -> Option<&'static str> {
        match self {
            Self::Al2 => Some("al2"),
            Self::Al2023 => Some("al2023"),
            Self::Bottlerocket => Some("bottlerocket"),
            Self::Windows2019 => Some("windows2019"),
            Self::Windows2022 => Some("windows2022"),
            Self::Custom => None,
        }
    }

    pub fn from_alias(alias_family: &str) -> Option<Self> {
        Self::ALIASED
            .iter()
            .copied()
            .find(|f| f.alias_name() == Some(alias_family))
    }
}

/// Instance Metadata Service options for launched nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataOptions {
    /// `enabled` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["enabled", "disabled"], "default" = "enabled"))]
    pub http_endpoint: Option<String>,
    /// `enabled` or `disabled`.
    #[serde(
        rename = "httpProtocolIPv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("enum" = ["enabled", "disabled"], "default" = "disabled"))]
    pub http_protocol_ipv6: Option<String>,
    /// How many network hops a metadata response may travel (1-64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64), extend("default" = 1))]
    pub http_put_response_hop_limit: Option<i64>,
    /// `required` (IMDSv2 only) or `optional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["required", "optional"], "default" = "required"))]
    pub http_tokens: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockDeviceMapping {
    /// The device name, e.g. `/dev/xvda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The EBS volume to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs: Option<BlockDevice>,
    /// Whether this device holds the kubelet root directory; at most one may.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_volume: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "snapshotID or volumeSize must be defined", "rule": "has(self.snapshotID) || has(self.volumeSize)"},
    {"message": "snapshotID must be set when volumeInitializationRate is set", "rule": "!has(self.volumeInitializationRate) || (has(self.snapshotID) && self.snapshotID != '')"}
]))]
pub struct BlockDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Provisioned IOPS (gp3, io1, io2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i64>,
    /// The KMS key used to encrypt the volume.
    #[serde(rename = "kmsKeyID", default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(
        rename = "snapshotID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// Throughput in MiB/s (gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i64>,
    /// Volume initialization rate in MiB/s when restoring from a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 300))]
    pub volume_initialization_rate: Option<i32>,
    /// Size in `Gi`, `G`, `Ti` or `T`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^((?:[1-9][0-9]{0,3}|[1-4][0-9]{4}|[5][0-8][0-9]{3}|59000)Gi|(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|[6][0-3][0-9]{3}|64000)G|([1-9]||[1-5][0-7]|58)Ti|([1-9]||[1-5][0-9]|6[0-3]|64)T)$"
    ))]
    pub volume_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]))]
    pub volume_type: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InstanceStorePolicy {
    /// RAID-0 all instance-store NVMe disks and put containerd and kubelet state on them.
    #[serde(rename = "RAID0")]
    Raid0,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnclaveOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// EC2NodeClassStatus is what the controller resolved the selectors to (lenient, see
/// `NodeClaimStatus`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<Subnet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<SecurityGroup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_reservations: Vec<CapacityReservation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<Ami>,
    /// The instance profile resolved for `role`, or `instanceProfile` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Conditions for EC2NodeClassStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    pub id: String,
    pub zone: String,
    #[serde(rename = "zoneID", default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ami {
    pub id: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The instance types this AMI suits (architecture, GPU...).
    pub requirements: Vec<NodeSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityReservation {
    pub availability_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    pub id: String,
    #[schemars(extend("enum" = ["open", "targeted"]))]
    pub instance_match_criteria: String,
    pub instance_type: String,
    #[serde(rename = "ownerID")]
    pub owner_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["default", "capacity-block"], "default" = "default"))]
    pub reservation_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["active", "expiring"], "default" = "active"))]
    pub state: Option<String>,
}

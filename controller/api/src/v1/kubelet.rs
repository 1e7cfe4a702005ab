//! The kubelet settings an EC2NodeClass passes to its nodes (`spec.kubelet`).
//!
//! In v1beta1 this block lived on the NodePool; `crate::convert` moves it here.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

const EVICTION_SIGNALS: &str = "['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available']";

/// A subset of the upstream KubeletConfiguration, with the same field names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"message": "imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent", "rule": "has(self.imageGCHighThresholdPercent) && has(self.imageGCLowThresholdPercent) ?  self.imageGCHighThresholdPercent > self.imageGCLowThresholdPercent  : true"},
    {"message": "evictionSoft OwnerKey does not have a matching evictionSoftGracePeriod", "rule": "has(self.evictionSoft) ? self.evictionSoft.all(e, (e in self.evictionSoftGracePeriod)):true"},
    {"message": "evictionSoftGracePeriod OwnerKey does not have a matching evictionSoft", "rule": "has(self.evictionSoftGracePeriod) ? self.evictionSoftGracePeriod.all(e, (e in self.evictionSoft)):true"}
]))]
pub struct KubeletConfiguration {
    /// IP addresses of the cluster DNS servers.
    #[serde(rename = "clusterDNS", default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
    /// Overrides the maximum number of pods per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_pods: Option<i32>,
    /// Pods per CPU core; never exceeds maxPods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub pods_per_core: Option<i32>,
    /// Resources reserved for OS system daemons and kernel memory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"message": "valid keys for systemReserved are ['cpu','memory','ephemeral-storage','pid']", "rule": "self.all(x, x=='cpu' || x=='memory' || x=='ephemeral-storage' || x=='pid')"},
        {"message": "systemReserved value cannot be a negative resource quantity", "rule": "self.all(x, !self[x].startsWith('-'))"}
    ]))]
    pub system_reserved: BTreeMap<String, String>,
    /// Resources reserved for Kubernetes system components.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"message": "valid keys for kubeReserved are ['cpu','memory','ephemeral-storage','pid']", "rule": "self.all(x, x=='cpu' || x=='memory' || x=='ephemeral-storage' || x=='pid')"},
        {"message": "kubeReserved value cannot be a negative resource quantity", "rule": "self.all(x, !self[x].startsWith('-'))"}
    ]))]
    pub kube_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds by signal name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = eviction_keys("evictionHard"))]
    pub eviction_hard: BTreeMap<String, String>,
    /// Soft eviction thresholds by signal name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = eviction_keys("evictionSoft"))]
    pub eviction_soft: BTreeMap<String, String>,
    /// Grace periods for each soft eviction signal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = eviction_keys("evictionSoftGracePeriod"))]
    pub eviction_soft_grace_period: BTreeMap<String, Duration>,
    /// Maximum pod grace period (seconds) when evicting for soft thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i32>,
    /// Disk usage percent above which image garbage collection always runs.
    #[serde(
        rename = "imageGCHighThresholdPercent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_high_threshold_percent: Option<i32>,
    /// Disk usage percent below which image garbage collection never runs.
    #[serde(
        rename = "imageGCLowThresholdPercent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_low_threshold_percent: Option<i32>,
    /// Enables CPU CFS quota enforcement for containers that specify CPU limits.
    #[serde(
        rename = "cpuCFSQuota",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_cfs_quota: Option<bool>,
}

/// Only the kubelet's eviction signals are valid keys.
fn eviction_keys(field: &'static str) -> impl Fn(&mut schemars::Schema) {
    move |schema| {
        super::cel::push_rules(
            schema,
            [serde_json::json!({
                "message": format!("valid keys for {field} are {EVICTION_SIGNALS}"),
                "rule": format!("self.all(x, x in {EVICTION_SIGNALS})"),
            })],
        );
    }
}

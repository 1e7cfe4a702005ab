//! Status conditions, shaped like `metav1.Condition` as upstream's operatorpkg writes them, so
//! `kubectl wait --for=condition=Ready` and the `Ready` printer column work unchanged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition every Karpenter object rolls its other conditions up into.
pub const READY: &str = "Ready";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase, e.g. `Ready`, `Launched`, `Drifted`.
    #[serde(rename = "type")]
    #[schemars(length(max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// The last time the condition transitioned from one status to another.
    pub last_transition_time: Time,
    /// A programmatic identifier for the last transition, in CamelCase.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// A human readable message about the transition.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// The `.metadata.generation` the condition was set from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Lookup helpers shared by every status with a `conditions` list.
pub trait Conditions {
    fn conditions(&self) -> &[Condition];

    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_)
    }

    fn is_true(&self, type_: &str) -> bool {
        self.condition(type_)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }
}

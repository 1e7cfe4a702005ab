//! `requirements` entries as written in NodePools and NodeClaims: a node selector requirement
//! plus `minValues`.
//!
//! This is the wire form. `operator` stays a string so an unknown operator reaches
//! [`crate::requirements`], which turns the whole list into validated [`crate::requirements::Requirement`]s
//! with errors that name the offending field.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label key syntax Kubernetes enforces (optional DNS prefix, `/`, name).
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(\/))?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorRequirementWithMinValues {
    /// The label key that the selector applies to.
    #[schemars(length(max = 316), regex(pattern = LABEL_KEY_PATTERN), transform = super::cel::requirement_key)]
    pub key: String,
    /// Represents a key's relationship to a set of values.
    /// Valid operators are In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte and Lte.
    #[schemars(extend("enum" = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt", "Gte", "Lte"]))]
    pub operator: String,
    /// An array of string values. If the operator is In or NotIn, the values array must be
    /// non-empty. If the operator is Exists or DoesNotExist, the values array must be empty.
    /// If the operator is Gt, Lt, Gte or Lte, the values array must have a single element,
    /// which will be interpreted as an integer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub values: Vec<String>,
    /// The minimum number of unique values required to define the flexibility of the
    /// specific requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub min_values: Option<i64>,
}

impl NodeSelectorRequirementWithMinValues {
    /// A builder start: `requirement("kubernetes.io/arch", "In").values(["amd64"])`.
    pub fn new(key: impl Into<String>, operator: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            operator: operator.into(),
            values: Vec::new(),
            min_values: None,
        }
    }

    pub fn values<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.values = values.into_iter().map(Into::into).collect();
        self
    }

    pub fn min_values(mut self, min_values: i64) -> Self {
        self.min_values = Some(min_values);
        self
    }
}

/// A plain node selector requirement (no `minValues`), as EC2NodeClass status reports for AMIs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

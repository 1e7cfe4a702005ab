//! Kubernetes resource quantities (`1`, `500m`, `16Gi`) as they appear in NodePool limits and
//! NodeClaim resources.
//!
//! YAML lets users write `cpu: 1000` as an integer, which the API server accepts
//! (`x-kubernetes-int-or-string`), so we must too; the text is kept verbatim and only its
//! syntax is checked here. Arithmetic belongs to the scheduler.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The quantity syntax the API server enforces, as upstream's CRDs spell it.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// A resource quantity such as `4`, `500m` or `16Gi`, syntax-checked, text preserved.
///
/// Equality is on the text; whether it was written as a YAML integer only decides how it is
/// written back, so `cpu: 1000` round-trips as `1000`, not `"1000"`.
#[derive(Clone, Debug)]
pub struct Quantity(String, Written);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    String,
    Integer,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Quantity {}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Resource name → quantity (`cpu: "4"`, `memory: 16Gi`), as in `limits` and `status.capacity`.
pub type ResourceList = BTreeMap<String, Quantity>;

impl Quantity {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid quantity {0:?}: expected a number with an optional suffix, e.g. \"4\", \"500m\", \"16Gi\""
)]
pub struct InvalidQuantity(pub String);

impl FromStr for Quantity {
    type Err = InvalidQuantity;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if is_quantity(text) {
            Ok(Self(text.to_owned(), Written::String))
        } else {
            Err(InvalidQuantity(text.to_owned()))
        }
    }
}

/// Hand-written equivalent of [`QUANTITY_PATTERN`], to avoid a regex dependency.
fn is_quantity(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    if !is_decimal(number) {
        return false;
    }
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        exponent => exponent
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(is_decimal),
    }
}

/// `1`, `1.`, `1.5` or `.5`.
fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty())
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.1, self.0.parse::<i64>()) {
            (Written::Integer, Ok(n)) => serializer.serialize_i64(n),
            _ => serializer.serialize_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 4, \"500m\" or \"16Gi\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string(), Written::Integer))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string(), Written::Integer))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [{ "type": "integer" }, { "type": "string" }],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_quantity_syntax() {
        let cases = [
            ("1", true),
            ("500m", true),
            ("16Gi", true),
            ("1.5", true),
            (".5", true),
            ("1e3", true),
            ("1E-3", true),
            ("+2k", true),
            ("", false),
            ("Gi", false),
            ("1GiB", false),
            ("1.2.3", false),
            ("1 Gi", false),
            ("one", false),
        ];
        for (text, ok) in cases {
            assert_eq!(text.parse::<Quantity>().is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn integers_in_yaml_are_quantities() {
        let list: ResourceList =
            serde_json::from_value(serde_json::json!({"cpu": 1000, "memory": "1000Gi"})).unwrap();
        assert_eq!(list["cpu"].as_str(), "1000");
        assert_eq!(list["memory"].as_str(), "1000Gi");
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            serde_json::json!({"cpu": 1000, "memory": "1000Gi"})
        );
    }
}

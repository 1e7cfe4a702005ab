//! Parse, don't validate: a NodePool's `requirements` become [`Requirement`]s whose operator is
//! an enum and whose values are already the right shape (`Gt` carries an integer, `In` a
//! non-empty set), so the scheduler's requirements algebra never re-checks them.
//!
//! The rules are upstream's webhook and CEL rules; errors name the offending field, e.g.
//! `spec.template.spec.requirements[2].values`.

use std::fmt;
use std::str::FromStr;

use crate::labels;
use crate::v1::NodeSelectorRequirementWithMinValues;
use crate::validation::{self, FieldError, FieldErrors};

/// A requirement operator. Pods may only use the first six; `Gte`/`Lte` are Karpenter's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    Gte,
    Lte,
}

impl Operator {
    pub const ALL: [Operator; 8] = [
        Self::In,
        Self::NotIn,
        Self::Exists,
        Self::DoesNotExist,
        Self::Gt,
        Self::Lt,
        Self::Gte,
        Self::Lte,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
            Self::Gt => "Gt",
            Self::Lt => "Lt",
            Self::Gte => "Gte",
            Self::Lte => "Lte",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown operator {0:?}; expected one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte"
)]
pub struct UnknownOperator(pub String);

impl FromStr for Operator {
    type Err = UnknownOperator;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == text)
            .ok_or_else(|| UnknownOperator(text.to_owned()))
    }
}

/// What a requirement allows for its key, with the values already parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// One of these values (never empty; sorted, deduplicated).
    In(Vec<String>),
    /// None of these values, or the label absent (may be empty, as upstream allows).
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
    Gte(i64),
    Lte(i64),
}

impl Constraint {
    pub fn operator(&self) -> Operator {
        match self {
            Self::In(_) => Operator::In,
            Self::NotIn(_) => Operator::NotIn,
            Self::Exists => Operator::Exists,
            Self::DoesNotExist => Operator::DoesNotExist,
            Self::Gt(_) => Operator::Gt,
            Self::Lt(_) => Operator::Lt,
            Self::Gte(_) => Operator::Gte,
            Self::Lte(_) => Operator::Lte,
        }
    }
}

/// A validated NodePool or NodeClaim requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The label key, with deprecated aliases normalized (`beta.kubernetes.io/arch` →
    /// `kubernetes.io/arch`).
    pub key: String,
    pub constraint: Constraint,
    /// At least this many distinct values must stay possible (instance-type flexibility).
    pub min_values: Option<u32>,
}

/// Errors are relative to the requirement (`values`, `operator`...); [`parse_requirements`]
/// prefixes the list path and index.
impl TryFrom<&NodeSelectorRequirementWithMinValues> for Requirement {
    type Error = FieldErrors;

    fn try_from(raw: &NodeSelectorRequirementWithMinValues) -> Result<Self, Self::Error> {
        let mut errors = FieldErrors::default();
        let key = labels::normalized(&raw.key).to_owned();
        if let Err(reason) = validation::qualified_name(&raw.key) {
            errors.push(FieldError::new(
                "key",
                format!("invalid label key {:?}: {reason}", raw.key),
            ));
        } else if let Some(restriction) = labels::restriction(&key) {
            errors.push(FieldError::new(
                "key",
                format!("{:?}: {restriction}", raw.key),
            ));
        }
        for (i, value) in raw.values.iter().enumerate() {
            if let Err(reason) = validation::label_value(value) {
                errors.push(FieldError::new(
                    format!("values[{i}]"),
                    format!("invalid label value {value:?}: {reason}"),
                ));
            }
        }
        let min_values = match raw.min_values {
            None => None,
            Some(n @ 1..=50) => Some(n as u32),
            Some(n) => {
                errors.push(FieldError::new(
                    "minValues",
                    format!("must be between 1 and 50, got {n}"),
                ));
                None
            }
        };
        let constraint = match raw.operator.parse::<Operator>() {
            Err(err) => {
                errors.push(FieldError::new("operator", err.to_string()));
                None
            }
            Ok(operator) => constraint(operator, &raw.values, min_values, &mut errors),
        };
        match constraint {
            Some(constraint) if errors.is_empty() => Ok(Self {
                key,
                constraint,
                min_values,
            }),
            _ => Err(errors),
        }
    }
}

fn constraint(
    operator: Operator,
    values: &[String],
    min_values: Option<u32>,
    errors: &mut FieldErrors,
) -> Option<Constraint> {
    let set = || {
        let mut values = values.to_vec();
        values.sort();
        values.dedup();
        values
    };
    match operator {
        Operator::In => {
            if values.is_empty() {
                errors.push(FieldError::new(
                    "values",
                    "operator In needs at least one value",
                ));
                return None;
            }
            let set = set();
            if let Some(min) = min_values.filter(|min| set.len() < *min as usize) {
                errors.push(FieldError::new(
                    "minValues",
                    format!(
                        "minValues is {min} but only {} distinct values are listed",
                        set.len()
                    ),
                ));
                return None;
            }
            Some(Constraint::In(set))
        }
        Operator::NotIn => Some(Constraint::NotIn(set())),
        // Upstream accepts (and ignores) values here; so do we, to take its manifests unchanged.
        Operator::Exists => Some(Constraint::Exists),
        Operator::DoesNotExist => Some(Constraint::DoesNotExist),
        Operator::Gt => integer(operator, values, errors).map(Constraint::Gt),
        Operator::Lt => integer(operator, values, errors).map(Constraint::Lt),
        Operator::Gte => integer(operator, values, errors).map(Constraint::Gte),
        Operator::Lte => integer(operator, values, errors).map(Constraint::Lte),
    }
}

/// The single non-negative integer the comparison operators take.
fn integer(operator: Operator, values: &[String], errors: &mut FieldErrors) -> Option<i64> {
    match values {
        [value] => match value.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                errors.push(FieldError::new(
                    "values",
                    format!("operator {operator} needs a single non-negative integer value, got {value:?}"),
                ));
                None
            }
        },
        _ => {
            errors.push(FieldError::new(
                "values",
                format!(
                    "operator {operator} needs exactly one integer value, got {}",
                    values.len()
                ),
            ));
            None
        }
    }
}

/// Parse a whole `requirements` list found at `path` (e.g. `spec.template.spec.requirements`),
/// reporting every invalid entry, not just the first.
pub fn parse_requirements(
    raw: &[NodeSelectorRequirementWithMinValues],
    path: &str,
) -> Result<Vec<Requirement>, FieldErrors> {
    let mut errors = FieldErrors::default();
    if raw.len() > 100 {
        errors.push(FieldError::new(
            path,
            format!("at most 100 requirements are allowed, got {}", raw.len()),
        ));
    }
    let mut requirements = Vec::with_capacity(raw.len());
    for (i, requirement) in raw.iter().enumerate() {
        match Requirement::try_from(requirement) {
            Ok(requirement) => requirements.push(requirement),
            Err(err) => errors.extend(err.under(&format!("{path}[{i}]"))),
        }
    }
    errors.into_result(requirements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirementWithMinValues {
        NodeSelectorRequirementWithMinValues::new(key, operator).values(values.iter().copied())
    }

    #[test]
    fn parses_valid_requirements() {
        let cases = [
            (
                req("kubernetes.io/arch", "In", &["arm64", "amd64", "amd64"]),
                Constraint::In(vec!["amd64".into(), "arm64".into()]),
            ),
            (
                req("karpenter.sh/capacity-type", "NotIn", &["spot"]),
                Constraint::NotIn(vec!["spot".into()]),
            ),
            (
                req("karpenter.sh/capacity-type", "NotIn", &[]),
                Constraint::NotIn(vec![]),
            ),
            (req("team", "Exists", &[]), Constraint::Exists),
            (
                req("example.com/gpu", "DoesNotExist", &[]),
                Constraint::DoesNotExist,
            ),
            (
                req("karpenter.k8s.aws/instance-generation", "Gt", &["5"]),
                Constraint::Gt(5),
            ),
            (
                req("karpenter.k8s.aws/instance-cpu", "Lt", &["33"]),
                Constraint::Lt(33),
            ),
            (
                req("karpenter.k8s.aws/instance-memory", "Gte", &["0"]),
                Constraint::Gte(0),
            ),
            (
                req("karpenter.k8s.aws/instance-cpu", "Lte", &["64"]),
                Constraint::Lte(64),
            ),
            (
                req(
                    "karpenter.k8s.aws/instance-category",
                    "In",
                    &["c", "m", "r"],
                )
                .min_values(3),
                Constraint::In(vec!["c".into(), "m".into(), "r".into()]),
            ),
        ];
        for (raw, want) in cases {
            let got = Requirement::try_from(&raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(got.constraint, want, "{raw:?}");
        }
    }

    #[test]
    fn normalizes_deprecated_keys() {
        let got = Requirement::try_from(&req("beta.kubernetes.io/arch", "In", &["amd64"])).unwrap();
        assert_eq!(got.key, "kubernetes.io/arch");
    }

    #[test]
    fn rejects_invalid_requirements_naming_the_field() {
        let cases = [
            (
                req("kubernetes.io/arch", "In", &[]),
                "[0].values: operator In needs at least one value",
            ),
            (
                req("kubernetes.io/arch", "Equals", &["amd64"]),
                "[0].operator: unknown operator \"Equals\"",
            ),
            (
                req("kubernetes.io/arch", "in", &["amd64"]),
                "[0].operator: unknown operator \"in\"",
            ),
            (
                req("karpenter.k8s.aws/instance-cpu", "Gt", &["four"]),
                "[0].values: operator Gt needs a single non-negative integer value, got \"four\"",
            ),
            (
                req("karpenter.k8s.aws/instance-cpu", "Lt", &["-1"]),
                "[0].values: operator Lt needs a single non-negative integer value",
            ),
            (
                req("karpenter.k8s.aws/instance-cpu", "Gte", &["1", "2"]),
                "[0].values: operator Gte needs exactly one integer value, got 2",
            ),
            (
                req("karpenter.k8s.aws/instance-cpu", "Lte", &[]),
                "[0].values: operator Lte needs exactly one integer value, got 0",
            ),
            (
                req("karpenter.k8s.aws/instance-family", "In", &["c5"]).min_values(2),
                "[0].minValues: minValues is 2 but only 1 distinct values are listed",
            ),
            (
                req("karpenter.k8s.aws/instance-family", "In", &["c5", "c5"]).min_values(2),
                "[0].minValues: minValues is 2 but only 1 distinct values",
            ),
            (
                req("karpenter.k8s.aws/instance-family", "Exists", &[]).min_values(51),
                "[0].minValues: must be between 1 and 50, got 51",
            ),
            (
                req("kubernetes.io/hostname", "In", &["a"]),
                "[0].key: \"kubernetes.io/hostname\": the label is restricted",
            ),
            (
                req("karpenter.sh/foo", "Exists", &[]),
                "[0].key: \"karpenter.sh/foo\": label domain \"karpenter.sh\" is restricted",
            ),
            (
                req("bad key", "Exists", &[]),
                "[0].key: invalid label key \"bad key\"",
            ),
            (
                req("team", "In", &["not a value"]),
                "[0].values[0]: invalid label value \"not a value\"",
            ),
        ];
        for (raw, want) in cases {
            let err = parse_requirements(
                std::slice::from_ref(&raw),
                "spec.template.spec.requirements",
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("spec.template.spec.requirements{want}")),
                "{raw:?}:\n{text}\nwant: {want}"
            );
        }
    }

    #[test]
    fn reports_every_invalid_entry_with_its_index() {
        let raw = [
            req("kubernetes.io/arch", "In", &["amd64"]),
            req("kubernetes.io/os", "In", &[]),
            req("karpenter.k8s.aws/instance-cpu", "Gt", &["x"]),
        ];
        let err = parse_requirements(&raw, "spec.requirements").unwrap_err();
        let paths: Vec<&str> = err.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.requirements[1].values", "spec.requirements[2].values"]
        );
    }
}

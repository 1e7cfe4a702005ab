//! The requirements algebra: sets of allowed label values per key, as NodePools, pods and
//! instance types express them. Scheduling is mostly asking "do these two sets intersect?",
//! so each [`Requirement`] is stored as a set or a complement of a set, with optional integer
//! bounds, which makes intersection closed and cheap (the representation upstream Karpenter's
//! `pkg/scheduling/requirement.go` uses).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The operators of a node selector requirement: Kubernetes' six plus Karpenter's Gte/Lte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl std::str::FromStr for Operator {
    type Err = RequirementError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            "Gte" => Operator::Gte,
            "Lte" => Operator::Lte,
            other => return Err(RequirementError::UnknownOperator(other.to_string())),
        })
    }
}

/// Why a requirement as written cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    #[error(
        "unknown operator {0:?} (expected In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte or Lte)"
    )]
    UnknownOperator(String),
    #[error("key {key:?}: operator {operator:?} needs at least one value")]
    NoValues { key: String, operator: Operator },
    #[error("key {key:?}: operator {operator:?} takes no values")]
    UnexpectedValues { key: String, operator: Operator },
    #[error("key {key:?}: operator {operator:?} takes exactly one integer value, got {values:?}")]
    NotAnInteger {
        key: String,
        operator: Operator,
        values: Vec<String>,
    },
    #[error("key {key:?}: minValues must be at least 1")]
    MinValues { key: String },
    #[error("empty key")]
    EmptyKey,
}

/// The values one key may take.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    /// When true, `values` are the excluded values and everything else is allowed.
    complement: bool,
    values: BTreeSet<String>,
    /// Allowed values are integers strictly greater than this.
    greater_than: Option<i64>,
    /// Allowed values are integers strictly less than this.
    less_than: Option<i64>,
    /// At least this many distinct values must remain available (across a NodeClaim's
    /// instance-type options) for the launch to be flexible enough.
    pub min_values: Option<usize>,
}

impl Requirement {
    pub fn new<S: AsRef<str>>(
        key: &str,
        operator: Operator,
        values: &[S],
    ) -> Result<Self, RequirementError> {
        if key.is_empty() {
            return Err(RequirementError::EmptyKey);
        }
        let vals: BTreeSet<String> = values.iter().map(|v| v.as_ref().to_string()).collect();
        let integer =
            || -> Result<i64, RequirementError> {
                match values {
                    [v] => v.as_ref().trim().parse::<i64>().map_err(|_| {
                        RequirementError::NotAnInteger {
                            key: key.to_string(),
                            operator,
                            values: vals.iter().cloned().collect(),
                        }
                    }),
                    _ => Err(RequirementError::NotAnInteger {
                        key: key.to_string(),
                        operator,
                        values: vals.iter().cloned().collect(),
                    }),
                }
            };
        let mut r = Requirement {
            key: key.to_string(),
            complement: true,
            values: BTreeSet::new(),
            greater_than: None,
            less_than: None,
            min_values: None,
        };
        match operator {
            Operator::In | Operator::NotIn if vals.is_empty() => {
                return Err(RequirementError::NoValues {
                    key: key.to_string(),
                    operator,
                });
            }
            Operator::Exists | Operator::DoesNotExist if !vals.is_empty() => {
                return Err(RequirementError::UnexpectedValues {
                    key: key.to_string(),
                    operator,
                });
            }
            Operator::In => {
                r.complement = false;
                r.values = vals;
            }
            Operator::NotIn => r.values = vals,
            Operator::Exists => {}
            Operator::DoesNotExist => r.complement = false,
            Operator::Gt => r.greater_than = Some(integer()?),
            Operator::Gte => r.greater_than = Some(integer()?.saturating_sub(1)),
            Operator::Lt => r.less_than = Some(integer()?),
            Operator::Lte => r.less_than = Some(integer()?.saturating_add(1)),
        }
        Ok(r)
    }

    /// `key In [value]`.
    pub fn exactly(key: &str, value: &str) -> Self {
        Requirement {
            key: key.to_string(),
            complement: false,
            values: BTreeSet::from([value.to_string()]),
            greater_than: None,
            less_than: None,
            min_values: None,
        }
    }

    pub fn with_min_values(mut self, min_values: Option<usize>) -> Result<Self, RequirementError> {
        if min_values == Some(0) {
            return Err(RequirementError::MinValues { key: self.key });
        }
        self.min_values = min_values;
        Ok(self)
    }

    /// The operator that best describes this set (bounded complements report Gt/Lt).
    pub fn operator(&self) -> Operator {
        if self.complement {
            match (self.greater_than, self.less_than, self.values.is_empty()) {
                (Some(_), _, _) => Operator::Gt,
                (None, Some(_), _) => Operator::Lt,
                (None, None, true) => Operator::Exists,
                (None, None, false) => Operator::NotIn,
            }
        } else if self.values.is_empty() {
            Operator::DoesNotExist
        } else {
            Operator::In
        }
    }

    /// The listed values: allowed ones for `In`, excluded ones for `NotIn`.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(String::as_str)
    }

    pub fn is_complement(&self) -> bool {
        self.complement
    }

    fn within_bounds(&self, value: &str) -> bool {
        if self.greater_than.is_none() && self.less_than.is_none() {
            return true;
        }
        let Ok(v) = value.parse::<i64>() else {
            return false;
        };
        self.greater_than.is_none_or(|gt| v > gt) && self.less_than.is_none_or(|lt| v < lt)
    }

    /// Whether a node labelled `key=value` satisfies this requirement.
    pub fn has(&self, value: &str) -> bool {
        if self.complement {
            !self.values.contains(value) && self.within_bounds(value)
        } else {
            self.values.contains(value) && self.within_bounds(value)
        }
    }

    /// Whether a node without the label satisfies it (only NotIn and DoesNotExist allow that).
    pub fn allows_absent(&self) -> bool {
        matches!(self.operator(), Operator::NotIn | Operator::DoesNotExist)
    }

    /// Number of allowed values; `usize::MAX` for an unbounded complement.
    pub fn len(&self) -> usize {
        if self.complement {
            match (self.greater_than, self.less_than) {
                (Some(gt), Some(lt)) => {
                    let span = (lt as i128 - gt as i128 - 1).max(0) as usize;
                    span.saturating_sub(self.values.len())
                }
                _ => usize::MAX - self.values.len(),
            }
        } else {
            self.values.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values both requirements allow.
    pub fn intersection(&self, other: &Requirement) -> Requirement {
        let complement = self.complement && other.complement;
        let greater_than = max_opt(self.greater_than, other.greater_than);
        let less_than = min_opt(self.less_than, other.less_than);
        let min_values = max_opt(self.min_values, other.min_values);
        if let (Some(gt), Some(lt)) = (greater_than, less_than)
            && gt.saturating_add(1) >= lt
        {
            return Requirement {
                key: self.key.clone(),
                complement: false,
                values: BTreeSet::new(),
                greater_than: None,
                less_than: None,
                min_values,
            };
        }
        let mut values: BTreeSet<String> = match (self.complement, other.complement) {
            (true, true) => self.values.union(&other.values).cloned().collect(),
            (true, false) => other.values.difference(&self.values).cloned().collect(),
            (false, true) => self.values.difference(&other.values).cloned().collect(),
            (false, false) => self.values.intersection(&other.values).cloned().collect(),
        };
        let bounds = Requirement {
            key: String::new(),
            complement: true,
            values: BTreeSet::new(),
            greater_than,
            less_than,
            min_values: None,
        };
        values.retain(|v| bounds.within_bounds(v));
        let (greater_than, less_than) = if complement {
            (greater_than, less_than)
        } else {
            (None, None)
        };
        Requirement {
            key: self.key.clone(),
            complement,
            values,
            greater_than,
            less_than,
            min_values,
        }
    }

    /// Some allowed value, for labelling a node from requirements.
    pub fn any(&self) -> Option<&str> {
        if self.complement {
            None
        } else {
            self.values.iter().next().map(String::as_str)
        }
    }
}

fn max_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vals = || self.values.iter().cloned().collect::<Vec<_>>().join(", ");
        match self.operator() {
            Operator::In => write!(f, "{} In [{}]", self.key, vals()),
            Operator::NotIn => write!(f, "{} NotIn [{}]", self.key, vals()),
            Operator::Exists => write!(f, "{} Exists", self.key),
            Operator::DoesNotExist => write!(f, "{} DoesNotExist", self.key),
            _ => {
                write!(f, "{}", self.key)?;
                if let Some(gt) = self.greater_than {
                    write!(f, " Gt {gt}")?;
                }
                if let Some(lt) = self.less_than {
                    write!(f, " Lt {lt}")?;
                }
                if !self.values.is_empty() {
                    write!(f, " NotIn [{}]", vals())?;
                }
                Ok(())
            }
        }
    }
}

/// Why two sets of requirements cannot be satisfied together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Incompatibility {
    #[error("{incoming} conflicts with {existing}")]
    Disjoint { existing: String, incoming: String },
    #[error("label {key:?} is not defined by the NodePool (requirements or labels)")]
    Undefined { key: String },
}

/// Requirements on several keys, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirements(BTreeMap<String, Requirement>);

impl Requirements {
    pub fn new() -> Self {
        Self::default()
    }

    /// `key In [value]` for every label.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut r = Self::new();
        for (k, v) in labels {
            r.add(Requirement::exactly(k, v));
        }
        r
    }

    /// Narrow by one more requirement (intersecting with any on the same key).
    pub fn add(&mut self, requirement: Requirement) {
        match self.0.get_mut(&requirement.key) {
            Some(existing) => *existing = existing.intersection(&requirement),
            None => {
                self.0.insert(requirement.key.clone(), requirement);
            }
        }
    }

    pub fn add_all(&mut self, other: &Requirements) {
        for r in other.0.values() {
            self.add(r.clone());
        }
    }

    pub fn intersection(&self, other: &Requirements) -> Requirements {
        let mut out = self.clone();
        out.add_all(other);
        out
    }

    pub fn get(&self, key: &str) -> Option<&Requirement> {
        self.0.get(key)
    }

    pub fn has_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Requirement> {
        self.0.values()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn remove(&mut self, key: &str) -> Option<Requirement> {
        self.0.remove(key)
    }

    /// Whether a value of `key` is allowed; keys without a requirement allow anything.
    pub fn allows(&self, key: &str, value: &str) -> bool {
        self.0.get(key).is_none_or(|r| r.has(value))
    }

    /// Every key shared by both must have a value both allow; two "absent"-style requirements
    /// (NotIn/DoesNotExist) never conflict since a node without the label satisfies both.
    pub fn intersects(&self, incoming: &Requirements) -> Result<(), Incompatibility> {
        let (small, large, flipped) = if self.0.len() <= incoming.0.len() {
            (self, incoming, false)
        } else {
            (incoming, self, true)
        };
        for (key, a) in &small.0 {
            let Some(b) = large.0.get(key) else { continue };
            let (existing, incoming) = if flipped { (b, a) } else { (a, b) };
            if existing.intersection(incoming).is_empty() {
                if incoming.allows_absent() && existing.allows_absent() {
                    continue;
                }
                return Err(Incompatibility::Disjoint {
                    existing: existing.to_string(),
                    incoming: incoming.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Upstream's `Compatible`: `incoming` (a pod's) must intersect `self` (a NodePool's or a
    /// NodeClaim's), and every key it requires positively must be defined by `self` unless
    /// the key is a well-known label every node carries.
    pub fn compatible(
        &self,
        incoming: &Requirements,
        well_known: impl Fn(&str) -> bool,
    ) -> Result<(), Incompatibility> {
        for (key, r) in &incoming.0 {
            if self.0.contains_key(key) || r.allows_absent() || well_known(key) {
                continue;
            }
            return Err(Incompatibility::Undefined { key: key.clone() });
        }
        self.intersects(incoming)
    }

    /// Whether a node with these labels satisfies every requirement (label selection).
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.first_unmatched_label(labels).is_none()
    }

    /// The first requirement a node with these labels does not satisfy.
    pub fn first_unmatched_label(&self, labels: &BTreeMap<String, String>) -> Option<&Requirement> {
        self.0.values().find(|r| match labels.get(&r.key) {
            Some(v) => !r.has(v),
            None => !r.allows_absent(),
        })
    }

    /// Labels implied by single-valued `In` requirements.
    pub fn single_values(&self) -> BTreeMap<String, String> {
        self.0
            .values()
            .filter(|r| !r.complement && r.values.len() == 1)
            .map(|r| {
                (
                    r.key.clone(),
                    r.values.iter().next().cloned().unwrap_or_default(),
                )
            })
            .collect()
    }
}

impl fmt::Display for Requirements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(", "))
    }
}

impl FromIterator<Requirement> for Requirements {
    fn from_iter<I: IntoIterator<Item = Requirement>>(iter: I) -> Self {
        let mut r = Requirements::new();
        for req in iter {
            r.add(req);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operator::*;

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement::new(key, op, values).unwrap()
    }

    #[test]
    fn construction_rejects_impossible_requirements() {
        let cases: &[(Operator, &[&str])] = &[
            (In, &[]),
            (NotIn, &[]),
            (Exists, &["a"]),
            (DoesNotExist, &["a"]),
            (Gt, &["abc"]),
            (Lt, &["1", "2"]),
            (Gte, &[]),
            (Lte, &["1.5"]),
        ];
        for (op, values) in cases {
            assert!(
                Requirement::new("k", *op, values).is_err(),
                "{op:?} {values:?}"
            );
        }
        assert!(Requirement::new("", In, &["a"]).is_err());
        assert!("Foo".parse::<Operator>().is_err());
    }

    #[test]
    fn membership() {
        let cases: &[(Requirement, &str, bool)] = &[
            (req("k", In, &["a", "b"]), "a", true),
            (req("k", In, &["a", "b"]), "c", false),
            (req("k", NotIn, &["a"]), "a", false),
            (req("k", NotIn, &["a"]), "b", true),
            (req("k", Exists, &[]), "x", true),
            (req("k", DoesNotExist, &[]), "x", false),
            (req("k", Gt, &["4"]), "5", true),
            (req("k", Gt, &["4"]), "4", false),
            (req("k", Gt, &["4"]), "abc", false),
            (req("k", Lt, &["4"]), "3", true),
            (req("k", Gte, &["4"]), "4", true),
            (req("k", Lte, &["4"]), "4", true),
            (req("k", Lte, &["4"]), "5", false),
        ];
        for (r, value, want) in cases {
            assert_eq!(r.has(value), *want, "{r} has {value}");
        }
    }

    #[test]
    fn intersection_table() {
        // (a, b, values expected to be allowed, values expected to be refused, empty?)
        type Case<'a> = (Requirement, Requirement, &'a [&'a str], &'a [&'a str], bool);
        let cases: &[Case] = &[
            (
                req("k", In, &["a", "b"]),
                req("k", In, &["b", "c"]),
                &["b"],
                &["a", "c"],
                false,
            ),
            (
                req("k", In, &["a"]),
                req("k", In, &["b"]),
                &[],
                &["a", "b"],
                true,
            ),
            (
                req("k", In, &["a", "b"]),
                req("k", NotIn, &["a"]),
                &["b"],
                &["a"],
                false,
            ),
            (
                req("k", NotIn, &["a"]),
                req("k", NotIn, &["b"]),
                &["c"],
                &["a", "b"],
                false,
            ),
            (
                req("k", Exists, &[]),
                req("k", In, &["a"]),
                &["a"],
                &["b"],
                false,
            ),
            (
                req("k", Exists, &[]),
                req("k", DoesNotExist, &[]),
                &[],
                &["a"],
                true,
            ),
            (
                req("k", Gt, &["2"]),
                req("k", Lt, &["5"]),
                &["3", "4"],
                &["2", "5"],
                false,
            ),
            (
                req("k", Gt, &["4"]),
                req("k", Lt, &["5"]),
                &[],
                &["4", "5"],
                true,
            ),
            (
                req("k", Gt, &["2"]),
                req("k", In, &["1", "3"]),
                &["3"],
                &["1"],
                false,
            ),
            (
                req("k", Gte, &["2"]),
                req("k", Lte, &["2"]),
                &["2"],
                &["1", "3"],
                false,
            ),
        ];
        for (a, b, allowed, refused, empty) in cases {
            for (x, y) in [(a, b), (b, a)] {
                let i = x.intersection(y);
                assert_eq!(i.is_empty(), *empty, "{x} ∩ {y} = {i}");
                for v in *allowed {
                    assert!(i.has(v), "{x} ∩ {y} should allow {v}");
                }
                for v in *refused {
                    assert!(!i.has(v), "{x} ∩ {y} should refuse {v}");
                }
            }
        }
    }

    #[test]
    fn min_values_survive_intersection() {
        let a = req("k", In, &["a", "b", "c"])
            .with_min_values(Some(2))
            .unwrap();
        let b = req("k", Exists, &[]);
        assert_eq!(a.intersection(&b).min_values, Some(2));
        assert!(req("k", In, &["a"]).with_min_values(Some(0)).is_err());
    }

    fn reqs(items: &[(&str, Operator, &[&str])]) -> Requirements {
        items.iter().map(|(k, op, v)| req(k, *op, v)).collect()
    }

    #[test]
    fn compatibility_table() {
        let well_known = |k: &str| k == "kubernetes.io/arch" || k == "topology.kubernetes.io/zone";
        // (nodepool, pod, compatible)
        let cases: &[(Requirements, Requirements, bool)] = &[
            (
                reqs(&[]),
                reqs(&[("kubernetes.io/arch", In, &["arm64"])]),
                true,
            ),
            (
                reqs(&[("kubernetes.io/arch", In, &["amd64"])]),
                reqs(&[("kubernetes.io/arch", In, &["arm64"])]),
                false,
            ),
            (reqs(&[]), reqs(&[("team", In, &["a"])]), false),
            (
                reqs(&[("team", In, &["a", "b"])]),
                reqs(&[("team", In, &["a"])]),
                true,
            ),
            (reqs(&[]), reqs(&[("team", NotIn, &["a"])]), true),
            (reqs(&[]), reqs(&[("team", DoesNotExist, &[])]), true),
            (
                reqs(&[("team", DoesNotExist, &[])]),
                reqs(&[("team", NotIn, &["a"])]),
                true,
            ),
            (
                reqs(&[("team", DoesNotExist, &[])]),
                reqs(&[("team", In, &["a"])]),
                false,
            ),
            (
                reqs(&[("gen", Gt, &["5"])]),
                reqs(&[("gen", Lt, &["6"])]),
                false,
            ),
            (
                reqs(&[("gen", Gt, &["5"])]),
                reqs(&[("gen", Lt, &["8"])]),
                true,
            ),
        ];
        for (i, (pool, pod, want)) in cases.iter().enumerate() {
            assert_eq!(
                pool.compatible(pod, well_known).is_ok(),
                *want,
                "case {i}: [{pool}] vs [{pod}]"
            );
        }
    }

    #[test]
    fn label_matching() {
        let labels: BTreeMap<String, String> = [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "x".to_string()),
        ]
        .into();
        let cases: &[(Requirements, bool)] = &[
            (reqs(&[("a", In, &["1"])]), true),
            (reqs(&[("a", Gt, &["0"])]), true),
            (reqs(&[("c", Exists, &[])]), false),
            (reqs(&[("c", DoesNotExist, &[])]), true),
            (reqs(&[("c", NotIn, &["z"])]), true),
            (reqs(&[("b", NotIn, &["x"])]), false),
        ];
        for (r, want) in cases {
            assert_eq!(r.matches_labels(&labels), *want, "{r}");
        }
    }
}

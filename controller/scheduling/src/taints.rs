//! Taints and tolerations: a NodePool's or node's taints keep away every pod that does not
//! tolerate them, with the exact matching rules of `k8s.io/api/core/v1` (`ToleratesTaint`).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl std::str::FromStr for Effect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "NoSchedule" => Ok(Effect::NoSchedule),
            "PreferNoSchedule" => Ok(Effect::PreferNoSchedule),
            "NoExecute" => Ok(Effect::NoExecute),
            other => Err(format!(
                "unknown taint effect {other:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}

impl Taint {
    pub fn new(key: &str, value: &str, effect: Effect) -> Self {
        Self {
            key: key.to_string(),
            value: value.to_string(),
            effect,
        }
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{:?}", self.key, self.effect)
        } else {
            write!(f, "{}={}:{:?}", self.key, self.value, self.effect)
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Toleration {
    /// Empty with `exists` tolerates every taint.
    pub key: String,
    /// `Exists` when true, `Equal` otherwise.
    pub exists: bool,
    pub value: String,
    /// None tolerates every effect.
    pub effect: Option<Effect>,
}

impl Toleration {
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        self.exists || self.value == taint.value
    }
}

/// The first taint the tolerations do not cover. `PreferNoSchedule` taints are treated as
/// hard unless `prefer_no_schedule_relaxed`, as upstream Karpenter does until its last
/// relaxation step.
pub fn first_untolerated<'a>(
    taints: impl IntoIterator<Item = &'a Taint>,
    tolerations: &[Toleration],
    prefer_no_schedule_relaxed: bool,
) -> Option<&'a Taint> {
    taints.into_iter().find(|t| {
        let soft = prefer_no_schedule_relaxed && t.effect == Effect::PreferNoSchedule;
        !soft && !tolerations.iter().any(|tol| tol.tolerates(t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toleration_matching() {
        let taint = Taint::new("gpu", "true", Effect::NoSchedule);
        let cases: &[(Toleration, bool)] = &[
            (
                Toleration {
                    key: "gpu".into(),
                    value: "true".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                Toleration {
                    key: "gpu".into(),
                    value: "false".into(),
                    ..Default::default()
                },
                false,
            ),
            (
                Toleration {
                    key: "gpu".into(),
                    exists: true,
                    ..Default::default()
                },
                true,
            ),
            (
                Toleration {
                    exists: true,
                    ..Default::default()
                },
                true,
            ),
            (
                Toleration {
                    key: "gpu".into(),
                    exists: true,
                    effect: Some(Effect::NoExecute),
                    ..Default::default()
                },
                false,
            ),
            (
                Toleration {
                    key: "other".into(),
                    exists: true,
                    ..Default::default()
                },
                false,
            ),
        ];
        for (tol, want) in cases {
            assert_eq!(tol.tolerates(&taint), *want, "{tol:?}");
        }
    }

    #[test]
    fn prefer_no_schedule_is_hard_until_relaxed() {
        let taints = [Taint::new("a", "", Effect::PreferNoSchedule)];
        assert!(first_untolerated(&taints, &[], false).is_some());
        assert!(first_untolerated(&taints, &[], true).is_none());
    }
}

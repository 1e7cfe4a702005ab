//! Label selectors, as pod affinity, anti-affinity and topology spread constraints use them to
//! say which other pods count.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SelectorExpression {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

/// A Kubernetes `LabelSelector`; the empty selector matches every pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<SelectorExpression>,
}

impl LabelSelector {
    pub fn labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            match_labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let expr = |op, values: &[&str]| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![SelectorExpression {
                key: "app".into(),
                operator: op,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        };
        let cases = [
            (LabelSelector::default(), true),
            (LabelSelector::labels([("app", "web")]), true),
            (LabelSelector::labels([("app", "db")]), false),
            (expr(SelectorOperator::In, &["web", "x"]), true),
            (expr(SelectorOperator::NotIn, &["web"]), false),
            (expr(SelectorOperator::Exists, &[]), true),
            (expr(SelectorOperator::DoesNotExist, &[]), false),
        ];
        for (sel, want) in cases {
            assert_eq!(sel.matches(&labels), want, "{sel:?}");
        }
    }
}

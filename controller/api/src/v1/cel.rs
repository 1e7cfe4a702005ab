//! The CEL rules (`x-kubernetes-validations`) the generated CRDs carry.
//!
//! Most rules are written next to the field they guard with `#[schemars(extend(...))]`; the ones
//! here are computed from [`crate::labels`], so the API server refuses exactly the label keys our
//! own validation refuses and the two can never drift apart.

use schemars::Schema;
use serde_json::{Value, json};

use crate::labels;

/// Append rules to a schema's `x-kubernetes-validations`.
pub(crate) fn push_rules(schema: &mut Schema, rules: impl IntoIterator<Item = Value>) {
    let object = schema.ensure_object();
    let list = object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = list {
        list.extend(rules);
    }
}

/// Rules refusing restricted label keys, for a CEL expression `key` that evaluates to the key.
fn label_key_rules(key: &str) -> Vec<Value> {
    let domain = format!("{key}.find(\"^([^/]+)\")");
    let mut rules = Vec::new();
    for restricted in labels::RESTRICTED_LABEL_DOMAINS {
        let allowed: Vec<&str> = labels::WELL_KNOWN
            .iter()
            .chain(labels::NORMALIZED.iter().map(|(alias, _)| alias))
            .copied()
            .filter(|k| labels::domain(k).ends_with(restricted))
            .collect();
        let mut alternatives = Vec::new();
        if !allowed.is_empty() {
            alternatives.push(format!(
                "{key} in {}",
                serde_json::to_string(&allowed).unwrap_or_default()
            ));
        }
        for exception in labels::LABEL_DOMAIN_EXCEPTIONS
            .iter()
            .filter(|e| e.ends_with(restricted))
        {
            alternatives.push(format!("{domain}.endsWith(\"{exception}\")"));
        }
        alternatives.push(format!("!{domain}.endsWith(\"{restricted}\")"));
        rules.push(json!({
            "message": format!("label domain \"{restricted}\" is restricted"),
            "rule": alternatives.join(" || "),
        }));
    }
    for restricted in labels::RESTRICTED {
        rules.push(json!({
            "message": format!("label \"{restricted}\" is restricted"),
            "rule": format!("{key} != \"{restricted}\""),
        }));
    }
    rules
}

/// Transform for a requirement's `key`.
pub(crate) fn requirement_key(schema: &mut Schema) {
    push_rules(schema, label_key_rules("self"));
}

/// Transform for `spec.template.metadata.labels`: the same domains, plus the NodePool label,
/// which Karpenter sets itself.
pub(crate) fn template_labels(schema: &mut Schema) {
    let rules = label_key_rules("x").into_iter().map(|rule| {
        json!({
            "message": rule["message"],
            "rule": format!("self.all(x, {})", rule["rule"].as_str().unwrap_or_default()),
        })
    });
    push_rules(schema, rules);
    push_rules(
        schema,
        [json!({
            "message": format!("label \"{}\" is restricted", labels::NODE_POOL),
            "rule": format!("self.all(x, x != \"{}\")", labels::NODE_POOL),
        })],
    );
}

/// Transform for a `requirements` list, shared by NodePool templates and NodeClaims.
pub(crate) fn requirements(schema: &mut Schema) {
    push_rules(
        schema,
        [
            json!({
                "message": "requirements with operator 'In' must have a value defined",
                "rule": "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)",
            }),
            json!({
                "message": "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value",
                "rule": "self.all(x, (x.operator == 'Gt' || x.operator == 'Lt' || x.operator == 'Gte' || x.operator == 'Lte') ? (x.values.size() == 1 && int(x.values[0]) >= 0) : true)",
            }),
            json!({
                "message": "requirements with 'minValues' must have at least that many values specified in the 'values' field",
                "rule": "self.all(x, (x.operator == 'In' && has(x.minValues)) ? x.values.size() >= x.minValues : true)",
            }),
        ],
    );
}

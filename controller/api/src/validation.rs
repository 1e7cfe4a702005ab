//! Field-addressed validation errors and the Kubernetes name rules behind them.
//!
//! karpctl reads manifests without an API server in between, so what the server would refuse
//! must be refused here too, pointing at the field (`spec.template.spec.requirements[2].values`).

use std::fmt;

use crate::labels;
use crate::requirements::parse_requirements;
use crate::v1::{EC2NodeClass, NodePool};

/// One problem at one field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, so a user fixes a manifest in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }

    /// Re-root relative paths under `prefix` (`values` → `spec.requirements[1].values`).
    pub fn under(self, prefix: &str) -> Self {
        Self(
            self.0
                .into_iter()
                .map(|e| FieldError {
                    path: if e.path.is_empty() {
                        prefix.to_owned()
                    } else if e.path.starts_with('[') {
                        format!("{prefix}{}", e.path)
                    } else {
                        format!("{prefix}.{}", e.path)
                    },
                    message: e.message,
                })
                .collect(),
        )
    }

    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl Extend<FieldError> for FieldErrors {
    fn extend<I: IntoIterator<Item = FieldError>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for FieldErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            error.fmt(f)?;
        }
        Ok(())
    }
}

/// A label key or taint key: an optional DNS-subdomain prefix and `/`, then a name.
pub fn qualified_name(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() || prefix.len() > 253 {
            return Err("the prefix must be a DNS subdomain of at most 253 characters");
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !prefix.split('.').all(label_ok) {
            return Err("the prefix must be a lowercase DNS subdomain");
        }
    }
    if name.is_empty() {
        return Err("the name part must not be empty");
    }
    label_value(name)
}

/// A label value (also a key's name part): at most 63 alphanumerics, `-`, `_` or `.`,
/// starting and ending alphanumeric; empty is allowed.
pub fn label_value(value: &str) -> Result<(), &'static str> {
    if value.len() > 63 {
        return Err("must be at most 63 characters");
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let ok = value.is_empty()
        || (value.starts_with(alnum)
            && value.ends_with(alnum)
            && value
                .chars()
                .all(|c| alnum(c) || matches!(c, '-' | '_' | '.')));
    if ok {
        Ok(())
    } else {
        Err(
            "must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
        )
    }
}

/// What the API server checks on a NodePool beyond its schema (CEL rules and upstream's
/// webhook), for manifests that never meet a server: requirements, template labels, taints
/// and budgets.
pub fn node_pool(pool: &NodePool) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    let template = &pool.spec.template;
    if let Err(err) = parse_requirements(
        &template.spec.requirements,
        "spec.template.spec.requirements",
    ) {
        errors.extend(err);
    }
    for (key, value) in &template.metadata.labels {
        let path = format!("spec.template.metadata.labels[{key}]");
        if let Err(reason) = qualified_name(key) {
            errors.push(FieldError::new(
                &path,
                format!("invalid label key: {reason}"),
            ));
        } else if key == labels::NODE_POOL {
            errors.push(FieldError::new(&path, "set by Karpenter itself"));
        } else if let Some(restriction) = labels::restriction(labels::normalized(key)) {
            errors.push(FieldError::new(&path, restriction.to_string()));
        }
        if let Err(reason) = label_value(value) {
            errors.push(FieldError::new(
                &path,
                format!("invalid label value {value:?}: {reason}"),
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let all_taints = template.spec.taints.iter().map(|t| ("taints", t));
    let startup = template
        .spec
        .startup_taints
        .iter()
        .map(|t| ("startupTaints", t));
    let mut index = std::collections::BTreeMap::<&str, usize>::new();
    for (field, taint) in all_taints.chain(startup) {
        let i = index.entry(field).or_default();
        let path = format!("spec.template.spec.{field}[{i}]");
        *i += 1;
        if let Err(reason) = qualified_name(&taint.key) {
            errors.push(FieldError::new(
                format!("{path}.key"),
                format!("invalid taint key {:?}: {reason}", taint.key),
            ));
        }
        if let Some(value) = taint.value.as_deref().filter(|v| !v.is_empty())
            && let Err(reason) = qualified_name(value)
        {
            errors.push(FieldError::new(
                format!("{path}.value"),
                format!("invalid taint value {value:?}: {reason}"),
            ));
        }
        if !seen.insert((taint.key.as_str(), taint.effect)) {
            errors.push(FieldError::new(
                path,
                format!(
                    "duplicate taint {}:{} (taints and startupTaints together)",
                    taint.key,
                    taint.effect.as_str()
                ),
            ));
        }
    }
    for (i, budget) in pool
        .spec
        .disruption
        .iter()
        .flat_map(|d| d.budgets.iter().flatten())
        .enumerate()
    {
        let path = format!("spec.disruption.budgets[{i}]");
        if budget.schedule.is_some() != budget.duration.is_some() {
            errors.push(FieldError::new(
                &path,
                "'schedule' must be set with 'duration'",
            ));
        }
        let nodes_ok = match budget.nodes.strip_suffix('%') {
            Some(percent) => percent.parse::<u8>().is_ok_and(|p| p <= 100),
            None => budget.nodes.parse::<u64>().is_ok(),
        };
        if !nodes_ok {
            errors.push(FieldError::new(
                format!("{path}.nodes"),
                format!(
                    "{:?}: must be a count (\"5\") or a percentage up to 100% (\"10%\")",
                    budget.nodes
                ),
            ));
        }
    }
    errors.into_result(())
}

/// The EC2NodeClass rules the CRD enforces with CEL, for manifests that never meet a server.
pub fn ec2_node_class(class: &EC2NodeClass) -> Result<(), FieldErrors> {
    let spec = &class.spec;
    let mut errors = FieldErrors::default();
    if spec.role.is_some() == spec.instance_profile.is_some() {
        errors.push(FieldError::new(
            "spec",
            "must specify exactly one of ['role', 'instanceProfile']",
        ));
    }
    if spec.subnet_selector_terms.is_empty() {
        errors.push(FieldError::new(
            "spec.subnetSelectorTerms",
            "cannot be empty",
        ));
    }
    if spec.security_group_selector_terms.is_empty() {
        errors.push(FieldError::new(
            "spec.securityGroupSelectorTerms",
            "cannot be empty",
        ));
    }
    if spec.ami_selector_terms.is_empty() {
        errors.push(FieldError::new("spec.amiSelectorTerms", "cannot be empty"));
    }
    match spec.alias() {
        None if spec.ami_family.is_none() => {
            errors.push(FieldError::new(
                "spec.amiFamily",
                "must specify amiFamily if amiSelectorTerms does not contain an alias",
            ));
        }
        None => {}
        Some(alias) => {
            if spec.ami_selector_terms.len() != 1 {
                errors.push(FieldError::new(
                    "spec.amiSelectorTerms",
                    "'alias' cannot be combined with other amiSelectorTerms",
                ));
            }
            let (family, version) = alias.split_once('@').unwrap_or((alias, ""));
            match crate::v1::AmiFamily::from_alias(family) {
                None => errors.push(FieldError::new(
                    "spec.amiSelectorTerms[0].alias",
                    format!("{alias:?}: must be family@version with family one of al2, al2023, bottlerocket, windows2019, windows2022"),
                )),
                Some(aliased) => {
                    if version.is_empty() {
                        errors.push(FieldError::new("spec.amiSelectorTerms[0].alias", format!("{alias:?}: missing @version")));
                    }
                    if family.starts_with("windows") && version != "latest" {
                        errors.push(FieldError::new("spec.amiSelectorTerms[0].alias", "windows families may only specify version 'latest'"));
                    }
                    if let Some(set) = spec.ami_family.filter(|f| *f != aliased && *f != crate::v1::AmiFamily::Custom) {
                        errors.push(FieldError::new(
                            "spec.amiFamily",
                            format!("{} does not match alias {alias:?}; use {} or Custom", set.as_str(), aliased.as_str()),
                        ));
                    }
                }
            }
        }
    }
    errors.into_result(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        let cases = [
            ("team", true),
            ("kubernetes.io/arch", true),
            ("karpenter.k8s.aws/instance-cpu", true),
            ("a.b-c/D_e.f", true),
            ("", false),
            ("/x", false),
            ("Upper.io/x", false),
            ("x/", false),
            ("has space", false),
            ("-lead", false),
            ("a/b/c", false),
        ];
        for (key, ok) in cases {
            assert_eq!(qualified_name(key).is_ok(), ok, "{key:?}");
        }
    }

    #[test]
    fn paths_nest() {
        let mut errors = FieldErrors::default();
        errors.push(FieldError::new("values", "bad"));
        errors.push(FieldError::new("[3]", "bad"));
        let nested = errors.under("spec.requirements[1]");
        let paths: Vec<String> = nested.into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            ["spec.requirements[1].values", "spec.requirements[1][3]"]
        );
    }
}

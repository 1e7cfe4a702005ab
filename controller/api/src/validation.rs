//! Field-addressed validation errors and the Kubernetes name rules behind them.
//!
//! karpctl reads manifests without an API server in between, so what the server would refuse
//! must be refused here too, pointing at the field (`spec.template.spec.requirements[2].values`).

use std::fmt;

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

//! Merging karpctl's node role into the `aws-auth` ConfigMap's `mapRoles`, for clusters whose
//! authentication mode is CONFIG_MAP (where access entries are not available).
//!
//! `aws-auth` is hand-edited, commented and load-bearing: one lost row locks people or nodes
//! out of the cluster. So this never re-serializes it. [`add_role`] appends our row as text
//! (matching the file's indentation) only when no row has our role ARN, and [`remove_role`]
//! cuts out only the rows with our ARN; every other row, key, comment and byte stays as it
//! was. YAML parsing is used only to understand the document, never to write it.

use serde::Deserialize;

/// One `mapRoles` row, as far as karpctl needs to read it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MapRole {
    #[serde(default)]
    pub rolearn: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl MapRole {
    /// The row that lets a node role's instances join, as EKS documents it.
    pub fn node(rolearn: impl Into<String>) -> Self {
        Self {
            rolearn: rolearn.into(),
            username: "system:node:{{EC2PrivateDNSName}}".into(),
            groups: vec!["system:bootstrappers".into(), "system:nodes".into()],
        }
    }
}

/// What a merge decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// The document already says what we want; write nothing.
    Unchanged,
    /// The new `mapRoles` text.
    Changed(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AwsAuthError {
    #[error(
        "the aws-auth ConfigMap's mapRoles is not valid YAML ({0}); fix it with `kubectl edit configmap aws-auth -n kube-system` — karpctl will not overwrite it"
    )]
    Malformed(String),
    #[error(
        "the aws-auth ConfigMap's mapRoles is not a list of roles; fix it with `kubectl edit configmap aws-auth -n kube-system` — karpctl will not overwrite it"
    )]
    NotAList,
    #[error(
        "the aws-auth ConfigMap's mapRoles is written in flow style ([...]); karpctl only appends to block lists, so add this row by hand:\n{0}"
    )]
    FlowStyle(String),
}

/// Whether `mapRoles` has a row for `rolearn` in `system:nodes` (unreadable: no).
pub fn has_node_role(map_roles: &str, rolearn: &str) -> bool {
    parse(map_roles).is_ok_and(|rows| {
        rows.iter()
            .any(|r| r.rolearn == rolearn && r.groups.iter().any(|g| g == "system:nodes"))
    })
}

fn parse(map_roles: &str) -> Result<Vec<MapRole>, AwsAuthError> {
    if is_empty(map_roles) {
        return Ok(Vec::new());
    }
    // Parse loosely first, so "not a list" and "not YAML" get different messages.
    let value: serde_json::Value =
        serde_saphyr::from_str(map_roles).map_err(|e| AwsAuthError::Malformed(e.to_string()))?;
    match value {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(_) => {
            serde_json::from_value(value).map_err(|e| AwsAuthError::Malformed(e.to_string()))
        }
        _ => Err(AwsAuthError::NotAList),
    }
}

/// Nothing but whitespace, comments or an empty flow list.
fn is_empty(map_roles: &str) -> bool {
    map_roles
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "[]")
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// How the document indents: (columns before a row's `- `, whether nested lists under a key
/// are indented further than the key — `groups:\n  - x` — or written level with it).
fn style(map_roles: &str) -> (usize, bool) {
    let lines: Vec<&str> = map_roles.lines().collect();
    let item = lines
        .iter()
        .find(|l| l.trim_start().starts_with("- "))
        .map(|l| indent_of(l))
        .unwrap_or(0);
    let mut nested_indented = true;
    for pair in lines.windows(2) {
        let (key, next) = (pair[0], pair[1]);
        let key_trim = key.trim_start();
        let key_text = key_trim.strip_prefix("- ").unwrap_or(key_trim);
        if key_text.trim_end().ends_with(':') && next.trim_start().starts_with("- ") {
            let key_col = indent_of(key) + (key_trim.len() - key_text.len());
            nested_indented = indent_of(next) > key_col;
            break;
        }
    }
    (item, nested_indented)
}

/// Our row as text, in the document's style.
fn render(row: &MapRole, item: usize, nested_indented: bool) -> String {
    let pad = " ".repeat(item);
    let key = " ".repeat(item + 2);
    let list = " ".repeat(if nested_indented { item + 4 } else { item + 2 });
    let mut out = format!(
        "{pad}- rolearn: {}\n{key}username: {}\n{key}groups:\n",
        row.rolearn, row.username
    );
    for g in &row.groups {
        out.push_str(&format!("{list}- {g}\n"));
    }
    out
}

/// Appends `row` unless a row with its role ARN exists; never touches anything else.
pub fn add_role(map_roles: &str, row: &MapRole) -> Result<Merge, AwsAuthError> {
    let rows = parse(map_roles)?;
    if rows.iter().any(|r| r.rolearn == row.rolearn) {
        return Ok(Merge::Unchanged);
    }
    if is_empty(map_roles) {
        // Nothing to keep but comments; keep those, and drop only a bare `[]`.
        let kept: String = map_roles
            .lines()
            .filter(|l| l.trim() != "[]" && !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        return Ok(Merge::Changed(kept + &render(row, 0, true)));
    }
    if map_roles.trim_start().starts_with('[') {
        return Err(AwsAuthError::FlowStyle(render(row, 0, true)));
    }
    let (item, nested_indented) = style(map_roles);
    let mut out = map_roles.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&render(row, item, nested_indented));
    Ok(Merge::Changed(out))
}

/// Removes every row whose role ARN is `rolearn` (only those), keeping all other bytes.
pub fn remove_role(map_roles: &str, rolearn: &str) -> Result<Merge, AwsAuthError> {
    let rows = parse(map_roles)?;
    if !rows.iter().any(|r| r.rolearn == rolearn) {
        return Ok(Merge::Unchanged);
    }
    let (item, _) = style(map_roles);
    // Split into segments: each row starts at a `- ` line at the row indentation and runs
    // until the next line at or left of that indentation. Lines outside rows (comments
    // between rows) are their own segments and are always kept.
    let lines: Vec<&str> = map_roles.split_inclusive('\n').collect();
    let mut out = String::with_capacity(map_roles.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let starts_row = indent_of(line) == item && line.trim_start().starts_with("- ");
        if !starts_row {
            out.push_str(line);
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < lines.len() {
            let l = lines[end];
            if !l.trim().is_empty() && indent_of(l) <= item {
                break;
            }
            end += 1;
        }
        let segment: String = lines[i..end].concat();
        let ours = parse(&segment)
            .map(|rows| rows.iter().any(|r| r.rolearn == rolearn))
            .unwrap_or(false);
        if !ours {
            out.push_str(&segment);
        }
        i = end;
    }
    if parse(&out)?.iter().any(|r| r.rolearn == rolearn) {
        // A layout the segmenting did not understand; refuse rather than guess.
        return Err(AwsAuthError::Malformed(format!(
            "could not isolate the row for {rolearn}"
        )));
    }
    Ok(Merge::Changed(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "arn:aws:iam::123456789012:role/KarpenterNodeRole-demo";

    /// As eksctl leaves it, with a hand-added admin row and comment (the sandbox's).
    const EKSCTL: &str = "# platform team break-glass access; do not remove
- rolearn: arn:aws:iam::123456789012:role/platform-admin
  username: platform-admin
  groups:
    - system:masters
- groups:
  - system:bootstrappers
  - system:nodes
  rolearn: arn:aws:iam::123456789012:role/eksctl-demo-NodeInstanceRole
  username: system:node:{{EC2PrivateDNSName}}
";

    /// Rows indented under the key, level nested lists, a trailing comment, no final newline.
    const INDENTED: &str = "  - rolearn: arn:aws:iam::123456789012:role/a   # team a
    username: a
    groups:
    - team-a
  # trailing note";

    const DUPLICATES: &str = "- rolearn: arn:aws:iam::123456789012:role/a
  username: a
  groups: [x]
- rolearn: arn:aws:iam::123456789012:role/a
  username: a
  groups: [x]
";

    fn row() -> MapRole {
        MapRole::node(OURS)
    }

    fn changed(m: Merge) -> String {
        match m {
            Merge::Changed(s) => s,
            Merge::Unchanged => panic!("expected a change"),
        }
    }

    #[test]
    fn add_appends_our_row_and_keeps_every_other_byte() {
        for (name, input, appended) in [
            (
                "eksctl style, comment first",
                EKSCTL,
                "- rolearn: arn:aws:iam::123456789012:role/KarpenterNodeRole-demo\n  username: system:node:{{EC2PrivateDNSName}}\n  groups:\n    - system:bootstrappers\n    - system:nodes\n",
            ),
            (
                "indented rows, level nested lists, no final newline",
                INDENTED,
                "\n  - rolearn: arn:aws:iam::123456789012:role/KarpenterNodeRole-demo\n    username: system:node:{{EC2PrivateDNSName}}\n    groups:\n    - system:bootstrappers\n    - system:nodes\n",
            ),
            (
                "duplicate rows of others stay duplicated",
                DUPLICATES,
                "- rolearn: arn:aws:iam::123456789012:role/KarpenterNodeRole-demo\n  username: system:node:{{EC2PrivateDNSName}}\n  groups:\n    - system:bootstrappers\n    - system:nodes\n",
            ),
        ] {
            let out = changed(add_role(input, &row()).unwrap());
            assert_eq!(out, format!("{input}{appended}"), "{name}");
            let rows = parse(&out).unwrap();
            assert_eq!(rows.last().unwrap(), &row(), "{name}");
            assert_eq!(rows.len(), parse(input).unwrap().len() + 1, "{name}");
            // Re-running changes nothing: no duplicate of our row.
            assert_eq!(add_role(&out, &row()).unwrap(), Merge::Unchanged, "{name}");
        }
    }

    #[test]
    fn add_is_unchanged_when_our_arn_is_already_mapped_anywhere() {
        let input = format!(
            "- username: system:node:{{{{EC2PrivateDNSName}}}}\n  rolearn: {OURS}\n  groups: [system:nodes, system:bootstrappers]\n{EKSCTL}"
        );
        assert_eq!(add_role(&input, &row()).unwrap(), Merge::Unchanged);
    }

    #[test]
    fn add_to_an_empty_document_writes_just_our_row_and_keeps_comments() {
        for input in ["", "[]", "[]\n", "# nothing yet\n"] {
            let out = changed(add_role(input, &row()).unwrap());
            assert_eq!(parse(&out).unwrap(), vec![row()], "{input:?}");
            if input.starts_with('#') {
                assert!(out.starts_with("# nothing yet\n"));
            }
        }
    }

    #[test]
    fn remove_takes_out_only_our_row() {
        for input in [EKSCTL, INDENTED, DUPLICATES, ""] {
            let added = changed(add_role(input, &row()).unwrap());
            let removed = changed(remove_role(&added, OURS).unwrap());
            let expected = if input.is_empty() || input.ends_with('\n') {
                input.to_string()
            } else {
                format!("{input}\n")
            };
            assert_eq!(removed, expected, "{input:?}");
        }
    }

    #[test]
    fn remove_from_the_middle_keeps_the_comment_of_the_next_row() {
        let input = format!(
            "- rolearn: {OURS}\n  username: system:node:{{{{EC2PrivateDNSName}}}}\n  groups:\n  - system:nodes\n{EKSCTL}"
        );
        assert_eq!(changed(remove_role(&input, OURS).unwrap()), EKSCTL);
    }

    #[test]
    fn remove_is_unchanged_when_our_row_is_absent() {
        assert_eq!(remove_role(EKSCTL, OURS).unwrap(), Merge::Unchanged);
    }

    #[test]
    fn malformed_documents_are_refused_with_the_fix() {
        for (input, expected) in [
            ("- rolearn: [unclosed\n", "not valid YAML"),
            ("rolearn: a\nusername: b\n", "not a list of roles"),
            ("- rolearn: a\n  groups: {x: 1}\n", "not valid YAML"),
        ] {
            let err = add_role(input, &row()).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
            assert!(err.contains("kubectl edit configmap aws-auth"), "{err}");
            let err = remove_role(input, OURS).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn flow_style_lists_are_not_rewritten() {
        let input = "[{rolearn: arn:aws:iam::1:role/a, username: a, groups: [x]}]";
        let err = add_role(input, &row()).unwrap_err();
        assert!(matches!(err, AwsAuthError::FlowStyle(_)), "{err}");
        assert!(err.to_string().contains(OURS));
    }
}

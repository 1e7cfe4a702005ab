//! The one place that writes results to stdout, so every command honours `--output json`
//! the same way: text for people, one JSON document for scripts. Progress and errors go to
//! stderr and never mix with a JSON result.
//!
//! Every JSON document carries a `schema` naming its shape and version
//! (`karpctl.<command>/v1`, listed in [`schema`]), field names in camelCase and resource
//! amounts as Kubernetes quantity strings; `docs/json.md` documents them. A command cannot
//! print a JSON result without naming its schema: [`Printer::result`] takes one.

use std::io::Write;

use serde::Serialize;

use crate::cli::OutputFormat;

/// The JSON documents karpctl prints, one per command; the version changes only when a
/// field is removed or changes meaning (added fields keep it).
pub mod schema {
    pub const VERSION: &str = "karpctl.version/v1";
    pub const INSTANCE_TYPES: &str = "karpctl.instance-types/v1";
    pub const SIMULATE: &str = "karpctl.simulate/v1";
    pub const EXPLAIN_POD: &str = "karpctl.explain-pod/v1";
    pub const EXPLAIN_NODE: &str = "karpctl.explain-node/v1";
    pub const STATUS: &str = "karpctl.status/v1";
    pub const INIT: &str = "karpctl.init/v1";
    pub const UNINSTALL: &str = "karpctl.uninstall/v1";
    pub const CONVERT: &str = "karpctl.convert/v1";
    pub const RENDER: &str = "karpctl.render/v1";
    pub const DOCTOR: &str = "karpctl.doctor/v1";
    pub const MIGRATE: &str = "karpctl.migrate-from-cas/v1";
}

/// A result as printed: its schema first (struct order is kept), then the result's fields.
#[derive(Serialize)]
struct Document<'a, T> {
    schema: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

pub struct Printer {
    format: OutputFormat,
    /// Results as text on stderr: for a step run inside another command (migrate-from-cas
    /// runs init), whose own result is the one document on stdout.
    nested: bool,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Self {
        Self {
            format,
            nested: false,
        }
    }

    /// A printer for a step inside this command: its results go to stderr as text.
    pub fn nested(&self) -> Self {
        Self {
            format: OutputFormat::Text,
            nested: true,
        }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Whether results are JSON, for commands that print more than one thing in text mode
    /// (a plan, then what was applied) but must print one JSON document.
    pub fn is_json(&self) -> bool {
        matches!(self.format, OutputFormat::Json | OutputFormat::Yaml)
    }

    /// Print a command's result: `text` renders it for people; JSON is the serialized value
    /// (a struct: its fields follow `schema`).
    pub fn result<T: Serialize>(
        &self,
        schema: &'static str,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.nested {
            eprint!("{}", text(value));
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        match self.format {
            OutputFormat::Text => stdout.write_all(text(value).as_bytes())?,
            OutputFormat::Json => {
                let document = Document {
                    schema,
                    body: value,
                };
                serde_json::to_writer_pretty(&mut stdout, &document)?;
                stdout.write_all(b"\n")?;
            }
            OutputFormat::Yaml => {
                let yaml = serde_saphyr::to_string(value)
                    .map_err(|e| anyhow::anyhow!("writing YAML: {e}"))?;
                stdout.write_all(yaml.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Text for people only (a plan shown before asking); nothing in JSON mode, where the
    /// command prints one [`result`](Self::result) at the end.
    pub fn text(&self, text: impl AsRef<str>) -> anyhow::Result<()> {
        if !self.is_json() {
            std::io::stdout()
                .lock()
                .write_all(text.as_ref().as_bytes())?;
        }
        Ok(())
    }

    /// A progress line for long operations; always stderr so JSON output stays parseable.
    pub fn progress(&self, message: impl AsRef<str>) {
        eprintln!("{}", message.as_ref());
    }
}

/// The JSON value `--output json` prints for `value` under `schema`.
#[cfg(test)]
pub fn document<T: Serialize>(schema: &'static str, value: &T) -> serde_json::Value {
    serde_json::to_value(Document {
        schema,
        body: value,
    })
    .expect("karpctl's results serialize to JSON")
}

/// Field names that break the house style: not camelCase. Keys inside the maps named in
/// `free_maps` (labels, annotations, Kubernetes objects) are data, not field names, and are
/// skipped. Returns the JSON paths of the offending keys.
#[cfg(test)]
pub fn non_camel_case_fields(value: &serde_json::Value, free_maps: &[&str]) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: String, free: &[&str], out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let camel = k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && k.chars().all(|c| c.is_ascii_alphanumeric());
                    if !camel {
                        out.push(format!("{path}.{k}"));
                    }
                    if !free.contains(&k.as_str()) {
                        walk(v, format!("{path}.{k}"), free, out);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), free, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), free_maps, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_carries_its_schema_and_snake_case_is_found() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Good {
            node_pool: &'static str,
        }
        #[derive(Serialize)]
        struct Bad {
            node_pool: &'static str,
        }
        let good = document(schema::STATUS, &Good { node_pool: "a" });
        assert_eq!(
            good,
            serde_json::json!({"schema": "karpctl.status/v1", "nodePool": "a"})
        );
        assert!(non_camel_case_fields(&good, &[]).is_empty());
        let bad = document(schema::STATUS, &Bad { node_pool: "a" });
        assert_eq!(non_camel_case_fields(&bad, &[]), [".node_pool"]);
    }
}

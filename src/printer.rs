//! The one place that writes results to stdout, so every command honours `--output json`
//! the same way: text for people, one JSON document for scripts. Progress and errors go to
//! stderr and never mix with a JSON result.

use std::io::Write;

use serde::Serialize;

use crate::cli::OutputFormat;

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

    /// Print a command's result: `text` renders it for people; JSON is the serialized value.
    pub fn result<T: Serialize>(
        &self,
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
                serde_json::to_writer_pretty(&mut stdout, value)?;
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

    /// A progress line for long operations; always stderr so JSON output stays parseable.
    pub fn progress(&self, message: impl AsRef<str>) {
        eprintln!("{}", message.as_ref());
    }
}

//! `karpctl convert`: rewrite manifests written for Karpenter v1beta1 as v1, telling the user
//! every change made; v1 and non-Karpenter objects pass through unchanged.
//!
//! Converted YAML goes to stdout (JSON `{objects, notes}` with `--output json`), notes to
//! stderr, so `karpctl convert -f old.yaml > new.yaml` leaves a reviewable file and a log.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use karpctl_api::manifest::{self, Object};

use crate::printer::{Printer, schema};

pub fn run(files: &[PathBuf], printer: &Printer) -> anyhow::Result<ExitCode> {
    let mut inputs = Vec::with_capacity(files.len());
    for file in files {
        let name = file.display().to_string();
        let text = if name == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            text
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?
        };
        inputs.push((
            if name == "-" {
                "<stdin>".to_owned()
            } else {
                name
            },
            text,
        ));
    }
    let borrowed: Vec<(&str, &str)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    // Read as one batch so a NodePool's kubelet block can move to an EC2NodeClass in another file.
    let manifests = manifest::read_all(&borrowed)?;

    for note in &manifests.notes {
        printer.progress(format!("note: {note}"));
    }
    let objects: Vec<serde_json::Value> = manifests.objects.iter().map(Object::to_value).collect();
    let yaml = manifest::to_yaml(&objects).context("rendering YAML")?;
    printer.result(schema::CONVERT, &manifest::to_json(&manifests), |_| yaml)?;
    Ok(ExitCode::SUCCESS)
}

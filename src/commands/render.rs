//! `karpctl render`: what `init` would apply, as files for a GitOps repository. The settings
//! are read and the cluster discovered exactly as `init` does it (`init::settings`,
//! `init::desired`), then `plan::render` writes the same desired state out. Only read calls
//! are made (EKS, EC2, IAM, STS descriptions); nothing is created, changed or recorded.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::aws::Aws;
use crate::cli::RenderArgs;
use crate::commands::init;
use crate::plan::render::{self, CLUSTER_DIR, Rendered};
use crate::printer::{Printer, schema};

/// `--output json`: the files with their contents (`docs/json.md`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RenderReport {
    cluster: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    out_dir: Option<String>,
    files: Vec<FileReport>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileReport {
    path: String,
    content: serde_json::Value,
}

pub fn run(args: &RenderArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let rendered = runtime.block_on(async {
        let setup = init::settings(&args.settings, printer, false).await?;
        let aws = Aws::connect(setup.profile.as_deref(), setup.region.as_deref())
            .await
            .context("resolving AWS configuration")?;
        let desired = init::desired(&setup, &aws, false, printer).await?;
        anyhow::Ok((desired.cluster.name.clone(), render::render(&desired)))
    })?;
    let (cluster, rendered) = rendered;
    if let Some(dir) = &args.out_dir {
        write_dir(dir, &rendered)?;
        printer.progress(format!(
            "wrote {} Kubernetes manifests (with {CLUSTER_DIR}/kustomization.yaml) and {} AWS documents into {}",
            rendered.cluster.len(),
            rendered.aws.len(),
            dir.display()
        ));
    }
    let report = RenderReport {
        cluster,
        out_dir: args.out_dir.as_ref().map(|d| d.display().to_string()),
        files: rendered
            .cluster
            .iter()
            .chain(&rendered.aws)
            .map(|f| FileReport {
                path: f.path.clone(),
                content: f.body.clone(),
            })
            .collect(),
    };
    printer.result(schema::RENDER, &report, |_| match &args.out_dir {
        Some(_) => String::new(),
        None => stream(&rendered),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One YAML document per object, in apply order: `karpctl render ... | kubectl apply -f -`.
fn stream(rendered: &Rendered) -> String {
    rendered
        .cluster
        .iter()
        .map(|f| format!("---\n{}", yaml(&f.body)))
        .collect()
}

fn yaml(value: &serde_json::Value) -> String {
    serde_saphyr::to_string(value).expect("a JSON value serializes as YAML")
}

fn write_dir(dir: &Path, rendered: &Rendered) -> anyhow::Result<()> {
    for sub in [render::CLUSTER_DIR, render::AWS_DIR] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    for f in &rendered.cluster {
        write(&dir.join(&f.path), yaml(&f.body))?;
    }
    write(
        &dir.join(CLUSTER_DIR).join("kustomization.yaml"),
        yaml(&rendered.kustomization()),
    )?;
    for f in &rendered.aws {
        let mut text = serde_json::to_string_pretty(&f.body)?;
        text.push('\n');
        write(&dir.join(&f.path), text)?;
    }
    Ok(())
}

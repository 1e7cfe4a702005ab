//! The guided setup: `karpctl init` in a terminal without `--cluster` asks for what is
//! missing — region, cluster (from ListClusters), how the controller gets AWS credentials,
//! capacity types, instance categories and the CPU limit — with the usual answer preselected,
//! writes the answers to a karpctl.yaml, and prints the equivalent non-interactive commands so
//! the next run (or CI) needs no questions. Answers already given as flags are not asked.

use std::path::PathBuf;

use anyhow::{Context, bail};
use dialoguer::theme::ColorfulTheme;
use dialoguer::{Confirm, Input, MultiSelect, Select};

use crate::aws::Aws;
use crate::cli::SettingsArgs;
use crate::printer::Printer;
use crate::setup::{Identity, SetupFile};

const CATEGORIES: &[(&str, &str)] = &[
    ("c", "compute optimised"),
    ("m", "general purpose"),
    ("r", "memory optimised"),
    ("t", "burstable"),
    ("i", "storage optimised"),
    ("g", "GPU"),
];

fn prompt_err(e: dialoguer::Error) -> anyhow::Error {
    anyhow::anyhow!("guided setup cancelled ({e}); nothing was changed")
}

pub async fn run(args: &SettingsArgs, printer: &Printer) -> anyhow::Result<SetupFile> {
    let theme = ColorfulTheme::default();
    printer.progress(
        "karpctl guided setup: a few questions, each with the usual answer preselected (Enter takes it).",
    );
    let region = match &args.region {
        Some(r) => r.clone(),
        None => {
            // The region the AWS CLI would use, as the default answer.
            let resolved = Aws::connect(args.profile.as_deref(), None)
                .await
                .map(|a| a.region)
                .unwrap_or_default();
            let mut input = Input::<String>::with_theme(&theme).with_prompt("AWS region");
            if !resolved.is_empty() {
                input = input.default(resolved);
            }
            input.interact_text().map_err(prompt_err)?
        }
    };
    let aws = Aws::connect(args.profile.as_deref(), Some(&region))
        .await
        .context("resolving AWS configuration")?;
    let clusters = aws.list_clusters().await.context("listing EKS clusters")?;
    if clusters.is_empty() {
        bail!(
            "no EKS clusters in {region}; pick another region (--region) or create the cluster first"
        );
    }
    let chosen = Select::with_theme(&theme)
        .with_prompt("EKS cluster")
        .items(&clusters)
        .default(0)
        .interact()
        .map_err(prompt_err)?;
    let mut setup = SetupFile::new(&clusters[chosen]);
    setup.region = Some(region);
    setup.profile = args.profile.clone();
    setup.context = args.context.clone();

    if args.identity.is_none() {
        let modes = [
            "EKS Pod Identity (recommended; needs no OIDC provider)",
            "IRSA (IAM roles for service accounts, through the cluster's OIDC provider)",
        ];
        let i = Select::with_theme(&theme)
            .with_prompt("How should the controller get AWS credentials?")
            .items(modes)
            .default(0)
            .interact()
            .map_err(prompt_err)?;
        setup.identity = Some(if i == 0 {
            Identity::PodIdentity
        } else {
            Identity::Irsa
        });
    }
    let pool = &mut setup.node_pools[0];
    if args.capacity_types.is_none() {
        let picked = MultiSelect::with_theme(&theme)
            .with_prompt("Capacity types for the default NodePool (Space toggles)")
            .items(["on-demand", "spot (cheaper, can be interrupted)"])
            .defaults(&[true, false])
            .interact()
            .map_err(prompt_err)?;
        let types: Vec<String> = picked
            .into_iter()
            .map(|i| ["on-demand", "spot"][i].to_owned())
            .collect();
        if types.is_empty() {
            bail!("at least one capacity type is needed; nothing was changed");
        }
        pool.capacity_types = types;
    }
    if args.instance_categories.is_none() {
        let labels: Vec<String> = CATEGORIES
            .iter()
            .map(|(c, what)| format!("{c} ({what})"))
            .collect();
        let defaults: Vec<bool> = CATEGORIES
            .iter()
            .map(|(c, _)| pool.instance_categories.iter().any(|d| d == c))
            .collect();
        let picked = MultiSelect::with_theme(&theme)
            .with_prompt("Instance categories (Space toggles)")
            .items(&labels)
            .defaults(&defaults)
            .interact()
            .map_err(prompt_err)?;
        if picked.is_empty() {
            bail!("at least one instance category is needed; nothing was changed");
        }
        pool.instance_categories = picked
            .into_iter()
            .map(|i| CATEGORIES[i].0.to_owned())
            .collect();
    }
    if args.cpu_limit.is_none() {
        let cpu: String = Input::with_theme(&theme)
            .with_prompt("CPU limit of the default NodePool (cores)")
            .default(pool.limits.get("cpu").cloned().unwrap_or_default())
            .validate_with(|s: &String| -> Result<(), &str> {
                match s.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(()),
                    _ => Err("a whole number of cores, above 0"),
                }
            })
            .interact_text()
            .map_err(prompt_err)?;
        pool.limits.insert("cpu".into(), cpu);
    }
    // Flags the guide did not ask about still apply.
    let mut flags = args.clone();
    flags.cluster = None;
    setup.apply_flags(&flags);

    let path: String = Input::with_theme(&theme)
        .with_prompt("Save these answers to")
        .default("karpctl.yaml".into())
        .interact_text()
        .map_err(prompt_err)?;
    let path = PathBuf::from(path);
    let write = !path.exists()
        || Confirm::with_theme(&theme)
            .with_prompt(format!("{} exists; overwrite it?", path.display()))
            .default(false)
            .interact()
            .map_err(prompt_err)?;
    if write {
        std::fs::write(&path, setup.to_yaml())
            .with_context(|| format!("writing {}", path.display()))?;
        printer.progress(format!("Wrote {}.", path.display()));
    }
    printer.progress(format!(
        "The same without questions:\n  karpctl init -f {}\n  {}",
        path.display(),
        setup.command_line()
    ));
    Ok(setup)
}

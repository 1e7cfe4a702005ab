//! `karpctl completion SHELL` and `karpctl man`: shell completions and manual pages generated
//! by clap's own tooling from the one command-line definition in `cli.rs`, so they can never
//! disagree with `--help`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// The name users type; completions are registered for it.
const BIN: &str = "karpctl";

pub fn completion(shell: Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, BIN, &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}

pub fn man(out_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let command = Cli::command();
    match out_dir {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout().lock())
            .context("writing the manual page to stdout")?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
            eprintln!("wrote manual pages into {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_gets_a_manual_page() {
        let dir = std::env::temp_dir().join(format!("karpctl-man-{}", std::process::id()));
        man(Some(&dir)).unwrap();
        for sub in Cli::command().get_subcommands() {
            let page = dir.join(format!("karpctl-{}.1", sub.get_name()));
            let text = std::fs::read_to_string(&page)
                .unwrap_or_else(|e| panic!("reading {}: {e}", page.display()));
            assert!(
                text.contains(".TH"),
                "{} is not a roff page",
                page.display()
            );
        }
        assert!(dir.join("karpctl.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

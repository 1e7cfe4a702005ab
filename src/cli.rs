//! The command line, and only the command line: every flag of every subcommand is declared
//! here so `--help` and the code agree, and commands receive plain typed arguments.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "karpctl", version, about = "Karpenter-style node autoscaling for an existing EKS cluster")]
pub struct Cli {
    /// How results are printed: human-readable text, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print karpctl's version and the Kubernetes and Karpenter API versions it speaks.
    Version,
}

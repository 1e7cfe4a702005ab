//! The command line, and only the command line: every flag of every subcommand is declared
//! here so `--help` and the code agree, and commands receive plain typed arguments.

use std::path::PathBuf;

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
    /// Convert v1beta1 NodePools, NodeClaims and EC2NodeClasses to v1, noting every change.
    ///
    /// Converted manifests go to stdout, notes to stderr; other objects pass through unchanged.
    Convert {
        /// Manifest file to read (`-` for stdin); repeat to convert files together.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
}

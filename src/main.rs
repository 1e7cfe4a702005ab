//! karpctl: takes an existing EKS cluster to working Karpenter-style node autoscaling, and back.
//!
//! `main` only parses the command line, runs one command and turns its outcome into an exit
//! code; each subcommand lives in `commands/<verb>.rs`.

mod aws;
mod cli;
mod commands;
mod guide;
mod kube;
mod nodepools;
mod plan;
mod printer;
mod setup;
mod workloads;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let printer = printer::Printer::new(cli.output);
    match commands::run(cli.command, &printer) {
        Ok(code) => code,
        Err(err) => {
            // The whole chain: "reading nodepool.yaml: line 3: unknown field `foo`".
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

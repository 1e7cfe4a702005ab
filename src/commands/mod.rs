//! One module per subcommand; `run` dispatches and returns the process exit code.

mod completion;
mod convert;
mod doctor;
mod explain;
mod init;
mod instance_types;
mod migrate;
mod render;
mod simulate;
mod status;
mod uninstall;
mod version;

use std::process::ExitCode;

use crate::cli::Command;
use crate::printer::Printer;

pub fn run(command: Command, printer: &Printer) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => version::run(printer),
        Command::Init(args) => init::run(&args, printer),
        Command::Uninstall(args) => uninstall::run(&args, printer),
        Command::MigrateFromCas(args) => migrate::run(&args, printer),
        Command::Status { context } => status::run(context.as_deref(), printer),
        Command::Doctor(args) => doctor::run(&args, printer),
        Command::Render(args) => render::run(&args, printer),
        Command::Completion { shell } => completion::completion(shell),
        Command::Man { out_dir } => completion::man(out_dir.as_deref()),
        Command::Convert { files } => convert::run(&files, printer),
        Command::Simulate { files, catalogue } => simulate::run(&files, &catalogue, printer),
        Command::Explain {
            pod,
            name: Some(name),
            context,
            ..
        } if pod == "node" => explain::node(&name, context.as_deref(), printer),
        Command::Explain {
            pod, name: Some(_), ..
        } => anyhow::bail!(
            "`karpctl explain {pod} NAME`: only `explain node NAME` takes a name; a pod is explained with `explain POD -f FILE`"
        ),
        Command::Explain {
            pod,
            files,
            catalogue,
            ..
        } => explain::run(&pod, &files, &catalogue, printer),
        Command::InstanceTypes {
            files,
            node_pool,
            catalogue,
        } => instance_types::run(&files, node_pool.as_deref(), &catalogue, printer),
    }
}

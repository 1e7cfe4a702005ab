//! One module per subcommand; `run` dispatches and returns the process exit code.

mod convert;
mod version;

use std::process::ExitCode;

use crate::cli::Command;
use crate::printer::Printer;

pub fn run(command: Command, printer: &Printer) -> anyhow::Result<ExitCode> {
    match command {
        Command::Version => version::run(printer),
        Command::Convert { files } => convert::run(&files, printer),
    }
}

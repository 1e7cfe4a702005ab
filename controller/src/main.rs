//! The controller binary. Not built yet: provisioning, the NodeClaim lifecycle and disruption
//! arrive with the controller issues; until then this refuses to run rather than pretend.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("karpctl-controller: not implemented yet (see README, \"Status\")");
    ExitCode::from(2)
}

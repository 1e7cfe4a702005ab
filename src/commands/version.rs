//! `karpctl version`: what this build is and which APIs it speaks, for bug reports and scripts.

use std::process::ExitCode;

use serde::Serialize;

use crate::printer::{Printer, schema};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    karpctl: &'static str,
    karpenter_apis: [&'static str; 2],
}

pub fn run(printer: &Printer) -> anyhow::Result<ExitCode> {
    let version = Version {
        karpctl: env!("CARGO_PKG_VERSION"),
        karpenter_apis: ["karpenter.sh/v1", "karpenter.k8s.aws/v1"],
    };
    printer.result(schema::VERSION, &version, |out| {
        format!(
            "karpctl {}\nAPIs: {}\n",
            out.karpctl,
            out.karpenter_apis.join(", ")
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

//! `karpctl explain POD`: for one pending pod, why each existing node and each instance type
//! of each NodePool is or is not a place for it — the solver's own predicates, one pod at a
//! time, so "why is my pod pending?" has an answer before anything is launched.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use karpctl_scheduling::Scheduler;
use karpctl_scheduling::explain::Explanation;

use crate::cli::CatalogueArgs;
use crate::commands::simulate::source;
use crate::nodepools::node_pools;
use crate::printer::Printer;
use crate::workloads;

fn text(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Pod {} requests {}", e.pod, e.request);
    if !e.nodes.is_empty() {
        out.push_str("\nExisting nodes:\n");
        for n in &e.nodes {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                if n.fits { "✓" } else { "✗" },
                n.name,
                n.reason
            );
        }
    }
    for p in &e.node_pools {
        let _ = write!(out, "\nNodePool {}: ", p.node_pool);
        if let Some(why) = &p.excluded {
            let _ = writeln!(out, "excluded: {why}");
            continue;
        }
        let fitting = p.instance_types.iter().filter(|t| t.fits).count();
        let _ = writeln!(
            out,
            "{fitting} of {} instance types fit",
            p.instance_types.len()
        );
        for t in p.instance_types.iter().filter(|t| t.fits).take(10) {
            let _ = writeln!(out, "  ✓ {}: {}", t.name, t.reason);
        }
        if fitting > 10 {
            let _ = writeln!(out, "  ... {} more fit (see --output json)", fitting - 10);
        }
        for t in p.instance_types.iter().filter(|t| !t.fits) {
            let _ = writeln!(out, "  ✗ {}: {}", t.name, t.reason);
        }
    }
    out
}

pub fn run(
    pod: &str,
    files: &[PathBuf],
    args: &CatalogueArgs,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let cluster = workloads::read(files)?;
    let (pools, _) = node_pools(&cluster.node_pools, &cluster.node_classes, &source(args))?;
    let target = workloads::find_pod(&cluster, pod)?;
    let scheduler = Scheduler::new(pools, cluster.nodes.clone(), cluster.daemon_sets.clone());
    let explanation = scheduler.explain(target);
    printer.result(&explanation, text)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_a_gpu_pod_against_every_pool() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/simulate");
        let cluster =
            workloads::read(&[dir.join("nodepools.yaml"), dir.join("workloads.yaml")]).unwrap();
        let args = CatalogueArgs {
            region: "us-east-1".into(),
            zones: Vec::new(),
            instance_types: None,
            spot: false,
            no_spot: false,
        };
        let (pools, _) =
            node_pools(&cluster.node_pools, &cluster.node_classes, &source(&args)).unwrap();
        let pod = workloads::find_pod(&cluster, "ml/inference-0").unwrap();
        let e = Scheduler::new(pools, Vec::new(), cluster.daemon_sets.clone()).explain(pod);
        let general = e
            .node_pools
            .iter()
            .find(|p| p.node_pool == "general")
            .unwrap();
        assert!(general.instance_types.iter().all(|t| !t.fits));
        let gpu = e.node_pools.iter().find(|p| p.node_pool == "gpu").unwrap();
        assert!(
            gpu.instance_types
                .iter()
                .any(|t| t.fits && t.name == "g4dn.xlarge")
        );
        assert!(text(&e).contains("NodePool gpu:"));
        assert!(workloads::find_pod(&cluster, "nope").is_err());
    }
}

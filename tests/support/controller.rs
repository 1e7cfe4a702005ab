//! Driving the bundled controller in the sandbox from the controller tests: the sandbox
//! script, kubectl through it, and one fresh leader-elected replica of the test build.

use std::process::{Command, Output};

use super::{controller_binary, repo_root, text};

/// Where `karpctl init` deploys the controller, and its Lease.
pub const NAMESPACE: &str = "kube-system";
pub const LEASE: &str = "karpenter-leader-election";

/// `sandbox/sandbox ARGS...`.
pub fn sandbox_cmd(args: &[&str]) -> Output {
    Command::new(repo_root().join("sandbox/sandbox"))
        .args(args)
        .output()
        .expect("running sandbox/sandbox")
}

/// `kubectl ARGS...` against the sandbox.
pub fn kubectl(args: &[&str]) -> Output {
    let mut all = vec!["kubectl"];
    all.extend_from_slice(args);
    sandbox_cmd(&all)
}

/// Delete the controller's Lease, so the next replica started leads at once.
pub fn forget_lease() {
    let _ = kubectl(&[
        "-n",
        NAMESPACE,
        "delete",
        "lease",
        LEASE,
        "--ignore-not-found",
    ]);
}

/// One replica of this build's controller, as the Deployment's ServiceAccount, after
/// forgetting any earlier Lease so it leads at once.
pub fn start_controller() {
    forget_lease();
    let binary = controller_binary();
    let out = sandbox_cmd(&[
        "controller",
        "start",
        "--replicas",
        "1",
        "--binary",
        binary.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "controller start: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

//! `karpctl simulate`, `explain` and `instance-types` on bad input, end to end through the
//! built binary: every NodePool or EC2NodeClass error names the file, the document's line,
//! the object and the field, and the exit code is 1. Needs no sandbox: these commands read
//! manifests and the shipped instance-type data only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n";

const CLASS: &str = "\
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: KarpenterNodeRole
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
";

const POOL_WITH_UNKNOWN_TYPE: &str = "\
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: node.kubernetes.io/instance-type, operator: In, values: [m5.large, m5.huge]}
";

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, resources: {requests: {cpu: 500m}}}]}
";

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("karpctl-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("writing a manifest");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn karpctl(args: &[&str], files: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpctl"));
    cmd.args(args);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    cmd.output().expect("running karpctl")
}

/// Regression: a NodePool naming an instance type the catalogue lacks was reported as
/// `NodePool/general: ...` without the file it came from; an EC2NodeClass whose root volume
/// size does not parse likewise.
#[test]
fn bad_node_pools_and_classes_name_file_line_object_and_field() {
    let scratch = Scratch::new("simulate-cli");
    let pool = scratch.file(
        "pool.yaml",
        &format!("{NAMESPACE}{CLASS}---\n{POOL_WITH_UNKNOWN_TYPE}"),
    );
    let class = scratch.file(
        "class.yaml",
        &format!(
            "{NAMESPACE}{CLASS}  blockDeviceMappings:\n    - {{deviceName: /dev/xvda, rootVolume: true, ebs: {{volumeSize: 20 gigs}}}}\n"
        ),
    );
    let class_pool = scratch.file(
        "class-pool.yaml",
        &POOL_WITH_UNKNOWN_TYPE.replace(", m5.huge", ""),
    );
    let workloads = scratch.file("workloads.yaml", DEPLOYMENT);
    let unknown_type = format!(
        "error: {}: document 3 (line 14), NodePool/general: spec.template.spec.requirements[0]: unknown instance type \"m5.huge\"",
        pool.display()
    );
    let bad_volume = format!(
        "error: {}: document 2 (line 5), EC2NodeClass/default: spec.blockDeviceMappings[0].ebs.volumeSize: ",
        class.display()
    );
    // (command, files, what stderr must start with)
    let cases: Vec<(Vec<&str>, Vec<&Path>, &str)> = vec![
        (vec!["simulate"], vec![&pool, &workloads], &unknown_type),
        (
            vec!["explain", "web-0"],
            vec![&pool, &workloads],
            &unknown_type,
        ),
        (
            vec!["instance-types", "--node-pool", "general"],
            vec![&pool],
            &unknown_type,
        ),
        (
            vec!["simulate"],
            vec![&class, &class_pool, &workloads],
            &bad_volume,
        ),
        (
            vec!["instance-types", "--node-pool", "general"],
            vec![&class, &class_pool],
            &bad_volume,
        ),
    ];
    for (args, files, want) in cases {
        let out = karpctl(&args, &files);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(want),
            "{args:?}: stderr\n{stderr}\nshould start with\n{want}"
        );
    }
}

/// The same files without the mistakes plan fine (exit 0), so the errors above are the
/// mistakes' and not the harness's.
#[test]
fn good_node_pools_and_classes_plan() {
    let scratch = Scratch::new("simulate-cli-good");
    let pool = scratch.file(
        "pool.yaml",
        &format!(
            "{NAMESPACE}{CLASS}---\n{}",
            POOL_WITH_UNKNOWN_TYPE.replace(", m5.huge", "")
        ),
    );
    let workloads = scratch.file("workloads.yaml", DEPLOYMENT);
    let out = karpctl(&["simulate"], &[&pool, &workloads]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("m5.large"), "{stdout}");
}

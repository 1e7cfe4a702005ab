//! Reading real manifest files end to end: the shipped examples, v1beta1 conversion across
//! files, and the errors a user sees for bad input.

use std::path::PathBuf;

use karpctl_api::manifest::{self, Object};
use karpctl_api::v1::{AmiSelectorTerm, ConsolidationPolicy, NillableDuration};
use serde_json::{Value, json};

fn example(path: &str) -> (String, String) {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path);
    (
        path.to_owned(),
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display())),
    )
}

#[test]
fn v1_examples_read_unchanged() {
    let (name, yaml) = example("nodepool-default.yaml");
    let manifests = manifest::read(&name, &yaml).unwrap();
    assert!(manifests.notes.is_empty(), "{:#?}", manifests.notes);
    let written: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let read: Vec<Value> = manifests.objects.iter().map(Object::to_value).collect();
    assert_eq!(
        read, written,
        "a v1 manifest must round-trip field for field"
    );
}

#[test]
fn v1beta1_examples_convert_across_files() {
    let pool = example("v1beta1/nodepool.yaml");
    let class = example("v1beta1/ec2nodeclass.yaml");
    let manifests = manifest::read_all(&[(&pool.0, &pool.1), (&class.0, &class.1)]).unwrap();

    let pool = manifests.node_pools().next().unwrap();
    let template = &pool.spec.template.spec;
    assert_eq!(
        template.expire_after,
        Some("720h".parse::<NillableDuration>().unwrap())
    );
    assert_eq!(template.node_class_ref.group, "karpenter.k8s.aws");
    let disruption = pool.spec.disruption.as_ref().unwrap();
    assert_eq!(
        disruption.consolidation_policy,
        Some(ConsolidationPolicy::WhenEmptyOrUnderutilized)
    );
    assert_eq!(disruption.consolidate_after.to_string(), "0s");
    assert!(
        pool.metadata.annotations.is_none(),
        "kubelet moved, so no compatibility annotation"
    );

    let class = manifests.ec2_node_classes().next().unwrap();
    assert_eq!(
        class.spec.ami_selector_terms,
        vec![AmiSelectorTerm::alias("al2023@latest")]
    );
    assert_eq!(
        class.spec.kubelet.as_ref().and_then(|k| k.max_pods),
        Some(110)
    );
    assert_eq!(
        class
            .spec
            .metadata_options
            .as_ref()
            .and_then(|m| m.http_put_response_hop_limit),
        Some(2)
    );

    let notes: Vec<String> = manifests.notes.iter().map(ToString::to_string).collect();
    for want in [
        "NodePool/default: apiVersion: karpenter.sh/v1beta1 → karpenter.sh/v1",
        "NodePool/default: spec.disruption.consolidationPolicy: WhenUnderutilized → WhenEmptyOrUnderutilized",
        "NodePool/default: spec.disruption.expireAfter (720h) → spec.template.spec.expireAfter",
        "NodePool/default: spec.template.spec.nodeClassRef.apiVersion (karpenter.k8s.aws/v1beta1) → spec.template.spec.nodeClassRef.group",
        "NodePool/default: spec.template.spec.kubelet: removed from the NodePool",
        "EC2NodeClass/default: spec.kubelet: moved here from NodePool/default",
        "EC2NodeClass/default: spec.amiSelectorTerms: set to [{alias: al2023@latest}]",
        "EC2NodeClass/default: spec.metadataOptions: set to v1beta1's defaults",
    ] {
        assert!(
            notes.iter().any(|n| n.starts_with(want)),
            "missing note {want:?} in {notes:#?}"
        );
    }
}

#[test]
fn kubelet_stays_annotated_without_its_node_class() {
    let (name, yaml) = example("v1beta1/nodepool.yaml");
    let manifests = manifest::read(&name, &yaml).unwrap();
    let pool = manifests.node_pools().next().unwrap();
    let annotation = &pool.metadata.annotations.as_ref().unwrap()["compatibility.karpenter.sh/v1beta1-kubelet-conversion"];
    assert_eq!(
        serde_json::from_str::<Value>(annotation).unwrap()["maxPods"],
        json!(110)
    );
    assert!(manifests.notes.iter().any(|n| {
        n.message
            .contains("EC2NodeClass/default is not among the inputs")
    }));
}

const POOL: &str = r#"apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: bad
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
"#;

/// (yaml, every substring the error must contain)
#[test]
fn bad_input_names_file_object_and_field() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            POOL.replace("requirements:", "requirments:"),
            vec![
                "bad.yaml: document 1 (line 1), NodePool/bad: spec.template.spec.requirments: unknown field `requirments`",
            ],
        ),
        (
            POOL.replace("operator: In, values: [amd64]", "operator: In, values: []"),
            vec![
                "NodePool/bad",
                "spec.template.spec.requirements[0].values: operator In needs at least one value",
            ],
        ),
        (
            POOL.replace(
                "{key: kubernetes.io/arch, operator: In, values: [amd64]}",
                "{key: karpenter.k8s.aws/instance-cpu, operator: Gt, values: [four]}",
            ),
            vec![
                "spec.template.spec.requirements[0].values: operator Gt needs a single non-negative integer value, got \"four\"",
            ],
        ),
        (
            POOL.replace("operator: In", "operator: Equals"),
            vec!["requirements[0].operator: unknown operator \"Equals\""],
        ),
        (
            POOL.replace("  name: bad", "  name: bad\n  lables: {a: b}"),
            vec!["metadata.lables: unknown field `lables`"],
        ),
        (
            POOL.replace("kind: NodePool", "kind: NodePool\nspecs: {}"),
            vec!["specs: unknown field `specs`"],
        ),
        (
            format!("{POOL}  weight: heavy\n"),
            vec!["spec.weight: invalid type"],
        ),
        (
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n---\n{POOL}  limits: {{cpu: lots}}\n"
            ),
            vec![
                "document 2 (line 6), NodePool/bad",
                "spec.limits.cpu: invalid quantity \"lots\"",
            ],
        ),
        (
            "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: x\n".to_owned(),
            vec!["bad.yaml: invalid YAML"],
        ),
        (
            "- just\n- a list\n".to_owned(),
            vec!["expected a Kubernetes object"],
        ),
        (
            POOL.replace("  template:\n", "  template:\n    metadata:\n      labels: {kubernetes.io/custom: x, karpenter.sh/nodepool: z}\n"),
            vec![
                "spec.template.metadata.labels[kubernetes.io/custom]: label domain \"kubernetes.io\" is restricted",
                "spec.template.metadata.labels[karpenter.sh/nodepool]: set by Karpenter itself",
            ],
        ),
        (
            POOL.replace("      requirements:", "      taints: [{key: a, effect: NoSchedule}]\n      startupTaints: [{key: a, effect: NoSchedule}]\n      requirements:"),
            vec!["spec.template.spec.startupTaints[0]: duplicate taint a:NoSchedule"],
        ),
        (
            POOL.replace("      requirements:", "      taints: [{key: a, effect: Sometimes}]\n      requirements:"),
            vec!["spec.template.spec.taints[0].effect: unknown variant `Sometimes`"],
        ),
        (
            format!("{POOL}  disruption: {{consolidateAfter: 0s, budgets: [{{nodes: \"0\", schedule: \"@daily\"}}, {{nodes: 150%}}]}}\n"),
            vec!["spec.disruption.budgets[0]: 'schedule' must be set with 'duration'", "spec.disruption.budgets[1].nodes: \"150%\""],
        ),
        (
            format!("{POOL}  disruption: {{consolidateAfter: soon}}\n"),
            vec!["spec.disruption.consolidateAfter: invalid duration \"soon\""],
        ),
        (
            r#"apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: both}
spec:
  role: r
  instanceProfile: p
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{id: subnet-1}]
  securityGroupSelectorTerms: [{id: sg-1}]
"#
            .to_owned(),
            vec![
                "EC2NodeClass/both: spec: must specify exactly one of ['role', 'instanceProfile']",
            ],
        ),
        (
            r#"apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: mixed}
spec:
  role: r
  amiFamily: Bottlerocket
  amiSelectorTerms: [{alias: al2023@latest}, {id: ami-1}]
  subnetSelectorTerms: [{id: subnet-1}]
  securityGroupSelectorTerms: [{id: sg-1}]
"#
            .to_owned(),
            vec![
                "'alias' cannot be combined with other amiSelectorTerms",
                "spec.amiFamily: Bottlerocket does not match alias",
            ],
        ),
    ];
    for (yaml, wants) in cases {
        let err = manifest::read("bad.yaml", &yaml).expect_err(&yaml);
        let text = err.to_string();
        for want in wants {
            assert!(
                text.contains(want),
                "error for\n{yaml}\nwas\n{text}\nwanted {want:?}"
            );
        }
    }
}

#[test]
fn lists_from_kubectl_are_expanded() {
    let pool: Value = serde_saphyr::from_str(POOL).unwrap();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [pool, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}]});
    let manifests = manifest::read("list.yaml", &serde_saphyr::to_string(&list).unwrap()).unwrap();
    assert_eq!(manifests.node_pools().count(), 1);
    assert_eq!(manifests.others().count(), 1);
}

//! The generated CRDs' CEL rules, evaluated client-side (kube-cel) the way the API server would,
//! so a rule that never fires or always fires is caught without a cluster.

use karpctl_api::crd::crds;
use kube_core::cel::Validator;
use serde_json::{Value, json};

fn schema(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn node_class(spec: Value) -> Value {
    let mut base = json!({
        "amiSelectorTerms": [{"alias": "al2023@latest"}],
        "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "c"}}],
        "securityGroupSelectorTerms": [{"id": "sg-123"}],
        "role": "node-role",
    });
    if let (Some(base), Value::Object(spec)) = (base.as_object_mut(), spec) {
        for (key, value) in spec {
            if value.is_null() {
                base.remove(&key);
            } else {
                base.insert(key, value);
            }
        }
    }
    json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "metadata": {"name": "x"}, "spec": base})
}

fn node_pool(requirements: Value, labels: Value, disruption: Value) -> Value {
    json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "x"},
        "spec": {
            "template": {
                "metadata": {"labels": labels},
                "spec": {"requirements": requirements, "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "x"}},
            },
            "disruption": disruption,
        },
    })
}

fn check(kind: &str, object: &Value) -> Result<(), String> {
    Validator::new()
        .validate(&schema(kind), object, None)
        .map_err(|errors| {
            errors
                .into_vec()
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// (object, None if accepted, or a substring of the rejection)
#[test]
fn ec2_node_class_rules() {
    let cases = [
        (node_class(json!({})), None),
        (
            node_class(json!({"role": null, "instanceProfile": "p"})),
            None,
        ),
        (
            node_class(json!({"instanceProfile": "p"})),
            Some("must specify exactly one of ['role', 'instanceProfile']"),
        ),
        (
            node_class(json!({"role": null})),
            Some("must specify exactly one of ['role', 'instanceProfile']"),
        ),
        (
            node_class(json!({"amiSelectorTerms": [{"id": "ami-1"}]})),
            Some("must specify amiFamily"),
        ),
        (
            node_class(json!({"amiSelectorTerms": [{"id": "ami-1"}], "amiFamily": "AL2023"})),
            None,
        ),
        (
            node_class(json!({"amiSelectorTerms": [{"alias": "al2023@latest"}, {"id": "ami-1"}]})),
            Some("cannot be set with a combination of other amiSelectorTerms"),
        ),
        (
            node_class(json!({"amiSelectorTerms": [{"alias": "ubuntu@latest"}]})),
            Some("family is not supported"),
        ),
        (
            node_class(json!({"amiSelectorTerms": [{"alias": "al2023"}]})),
            Some("improperly formatted"),
        ),
        (
            node_class(json!({"amiSelectorTerms": [{"alias": "windows2022@v1"}]})),
            Some("windows families may only specify version 'latest'"),
        ),
        (
            node_class(json!({"amiFamily": "Bottlerocket"})),
            Some("amiFamily must be 'AL2023' or 'Custom'"),
        ),
        (node_class(json!({"amiFamily": "Custom"})), None),
        (
            node_class(json!({"subnetSelectorTerms": []})),
            Some("subnetSelectorTerms cannot be empty"),
        ),
        (
            node_class(json!({"tags": {"karpenter.sh/nodepool": "x"}})),
            Some("restricted tag matching karpenter.sh/nodepool"),
        ),
        (
            node_class(
                json!({"kubelet": {"imageGCHighThresholdPercent": 50, "imageGCLowThresholdPercent": 60}}),
            ),
            Some("imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent"),
        ),
        (
            node_class(
                json!({"blockDeviceMappings": [{"rootVolume": true, "ebs": {"volumeSize": "20Gi"}}, {"rootVolume": true, "ebs": {"volumeSize": "20Gi"}}]}),
            ),
            Some("must have only one blockDeviceMappings with rootVolume"),
        ),
    ];
    for (object, want) in cases {
        let got = check("EC2NodeClass", &object);
        match want {
            None => assert!(got.is_ok(), "{object}: {got:?}"),
            Some(want) => assert!(
                got.as_ref().is_err_and(|e| e.contains(want)),
                "{object}: got {got:?}, want {want:?}"
            ),
        }
    }
}

#[test]
fn node_pool_rules() {
    let arch = json!([{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]);
    let cases = [
        (
            node_pool(
                arch.clone(),
                json!({"team": "a"}),
                json!({"consolidateAfter": "0s"}),
            ),
            None,
        ),
        (
            node_pool(
                json!([{"key": "kubernetes.io/arch", "operator": "In", "values": []}]),
                json!({}),
                json!({"consolidateAfter": "0s"}),
            ),
            Some("must have a value defined"),
        ),
        (
            node_pool(
                json!([{"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["1", "2"]}]),
                json!({}),
                json!({"consolidateAfter": "0s"}),
            ),
            Some("must have a single positive integer value"),
        ),
        (
            node_pool(
                json!([{"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["c5"], "minValues": 2}]),
                json!({}),
                json!({"consolidateAfter": "0s"}),
            ),
            Some("must have at least that many values"),
        ),
        (
            node_pool(
                json!([{"key": "kubernetes.io/hostname", "operator": "Exists"}]),
                json!({}),
                json!({"consolidateAfter": "0s"}),
            ),
            Some("label \"kubernetes.io/hostname\" is restricted"),
        ),
        (
            node_pool(
                json!([{"key": "karpenter.sh/custom", "operator": "Exists"}]),
                json!({}),
                json!({"consolidateAfter": "0s"}),
            ),
            Some("label domain \"karpenter.sh\" is restricted"),
        ),
        (
            node_pool(
                json!([{"key": "node.kubernetes.io/pool", "operator": "Exists"}]),
                json!({}),
                json!({"consolidateAfter": "0s"}),
            ),
            None,
        ),
        (
            node_pool(
                json!([{"key": "karpenter.k8s.aws/instance-capability-flex", "operator": "In", "values": ["false"]}]),
                json!({}),
                json!({"consolidateAfter": "0s"}),
            ),
            None,
        ),
        (
            node_pool(
                arch.clone(),
                json!({"karpenter.sh/nodepool": "x"}),
                json!({"consolidateAfter": "0s"}),
            ),
            Some("label \"karpenter.sh/nodepool\" is restricted"),
        ),
        (
            node_pool(
                arch.clone(),
                json!({"kubernetes.io/custom": "x"}),
                json!({"consolidateAfter": "0s"}),
            ),
            Some("label domain \"kubernetes.io\" is restricted"),
        ),
        (
            node_pool(
                arch.clone(),
                json!({}),
                json!({"consolidateAfter": "0s", "budgets": [{"nodes": "1", "schedule": "@daily"}]}),
            ),
            Some("'schedule' must be set with 'duration'"),
        ),
    ];
    for (object, want) in cases {
        let got = check("NodePool", &object);
        match want {
            None => assert!(got.is_ok(), "{object}: {got:?}"),
            Some(want) => assert!(
                got.as_ref().is_err_and(|e| e.contains(want)),
                "{object}: got {got:?}, want {want:?}"
            ),
        }
    }
}

#[test]
fn node_claim_spec_is_immutable() {
    let claim = |name: &str| {
        json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {"name": "c"},
            "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name}},
        })
    };
    let schema = schema("NodeClaim");
    assert!(
        Validator::new()
            .validate(&schema, &claim("a"), Some(&claim("a")))
            .is_ok()
    );
    let err = Validator::new()
        .validate(&schema, &claim("b"), Some(&claim("a")))
        .unwrap_err();
    assert!(
        err.into_vec()
            .iter()
            .any(|e| e.message == "spec is immutable")
    );
}

"""The registrar's pure parts: reading each AMI family's user data like its kubelet would,
and EKS AMI capacity arithmetic. The end-to-end path (instance -> Node) is tested from Rust
against the running sandbox in tests/sandbox.rs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from registrar import kube_reserved_cpu_millis, node_resources, parse_taint, parse_user_data, zone_id  # noqa: E402

AL2023 = """MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="//"

--//
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/bash
echo custom user script

--//
Content-Type: application/node.eks.aws

---
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: sandbox
  kubelet:
    config:
      maxPods: 58
      registerWithTaints:
      - key: karpenter.sh/unregistered
        effect: NoExecute
      - key: dedicated
        value: gpu
        effect: NoSchedule
    flags:
    - --node-labels="karpenter.sh/nodepool=default,team=ml"

--//--
"""

AL2 = """#!/bin/bash -xe
exec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1
/etc/eks/bootstrap.sh 'sandbox' --apiserver-endpoint 'https://127.0.0.1:18401' --b64-cluster-ca 'Zm9v' \\
--use-max-pods false \\
--kubelet-extra-args '--node-labels="karpenter.sh/capacity-type=spot,team=web" --register-with-taints="spot=true:PreferNoSchedule" --max-pods=110'
"""

BOTTLEROCKET = """[settings.kubernetes]
api-server = "https://127.0.0.1:18401"
cluster-name = "sandbox"
max-pods = 17

[settings.kubernetes.node-labels]
"karpenter.sh/nodepool" = "br"
"team" = "data"

[settings.kubernetes.node-taints]
"karpenter.sh/unregistered" = ["NoExecute"]
"dedicated" = ["data:NoSchedule"]
"""


def test_al2023_nodeconfig_in_mime_multipart():
    s = parse_user_data(AL2023)
    assert s.family == "AL2023"
    assert s.labels == {"karpenter.sh/nodepool": "default", "team": "ml"}
    assert s.taints == [{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}, {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
    assert s.max_pods == 58


def test_al2_bootstrap_kubelet_extra_args():
    s = parse_user_data(AL2)
    assert s.family == "AL2"
    assert s.labels == {"karpenter.sh/capacity-type": "spot", "team": "web"}
    assert s.taints == [{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}]
    assert s.max_pods == 110


def test_bottlerocket_toml():
    s = parse_user_data(BOTTLEROCKET)
    assert s.family == "Bottlerocket"
    assert s.labels == {"karpenter.sh/nodepool": "br", "team": "data"}
    assert {"key": "dedicated", "value": "data", "effect": "NoSchedule"} in s.taints
    assert {"key": "karpenter.sh/unregistered", "effect": "NoExecute"} in s.taints
    assert s.max_pods == 17


def test_empty_user_data_gives_no_labels():
    s = parse_user_data("")
    assert (s.labels, s.taints, s.max_pods) == ({}, [], None)


@pytest.mark.parametrize(
    "text, taint",
    [
        ("a=b:NoSchedule", {"key": "a", "value": "b", "effect": "NoSchedule"}),
        ("a:NoExecute", {"key": "a", "effect": "NoExecute"}),
    ],
)
def test_taint_syntax(text, taint):
    assert parse_taint(text) == taint


def test_bad_taint_effect_is_rejected():
    with pytest.raises(ValueError):
        parse_taint("a=b:Sometimes")


@pytest.mark.parametrize("vcpus, millis", [(1, 60), (2, 70), (4, 80), (8, 90), (96, 310)])
def test_kube_reserved_cpu_follows_the_eks_ami_table(vcpus, millis):
    assert kube_reserved_cpu_millis(vcpus) == millis


def test_m5_large_allocatable():
    capacity, allocatable = node_resources({"vcpu": 2, "memory_mib": 8192}, 29, 20)
    assert capacity["cpu"] == "2" and allocatable["cpu"] == "1930m"
    # 95% of 8 GiB, less kube-reserved (11 MiB x 29 pods + 255 MiB) and 100 MiB eviction.
    assert capacity["memory"] == f"{7782 * 1024}Ki"
    assert allocatable["memory"] == f"{(7782 - 574 - 100) * 1024}Ki"
    assert allocatable["pods"] == "29"


def test_gpus_are_advertised():
    capacity, _ = node_resources({"vcpu": 4, "memory_mib": 16384, "gpu_count": 1, "gpu_manufacturer": "NVIDIA"}, 29, 20)
    assert capacity["nvidia.com/gpu"] == "1"


def test_zone_ids_have_the_ec2_shape():
    assert zone_id("us-west-2a") == "usw2-az1"
    assert zone_id("eu-central-1c") == "euc1-az3"

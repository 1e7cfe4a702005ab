"""`sandbox controller`'s pure parts: the Deployment's env resolved as the kubelet would for
one replica, and which process records are the controller's (never the kube-controller-
manager's: a regression where `controller stop` stopped it)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sandbox  # noqa: E402


def container(*env, env_from=None):
    c = {"name": "controller", "env": list(env)}
    if env_from:
        c["envFrom"] = env_from
    return c


def field(name, path):
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def test_field_refs_resolve_per_replica():
    c = container(
        {"name": "CLUSTER_NAME", "value": "sandbox"},
        field("SYSTEM_NAMESPACE", "metadata.namespace"),
        field("POD_NAME", "metadata.name"),
        {"name": "EMPTY"},
    )
    assert sandbox.resolve_env(c, "kube-system", "karpenter-sandbox-1", "karpenter") == {
        "CLUSTER_NAME": "sandbox",
        "SYSTEM_NAMESPACE": "kube-system",
        "POD_NAME": "karpenter-sandbox-1",
        "EMPTY": "",
    }


def test_dependent_variables_expand_like_the_kubelet():
    c = container(
        field("POD_NAME", "metadata.name"),
        {"name": "ID", "value": "$(POD_NAME)-x"},
        {"name": "LITERAL", "value": "$$(POD_NAME) $(UNKNOWN)"},
    )
    env = sandbox.resolve_env(c, "ns", "pod-0", "sa")
    assert env["ID"] == "pod-0-x"
    assert env["LITERAL"] == "$(POD_NAME) $(UNKNOWN)"


@pytest.mark.parametrize("bad", [
    container(field("X", "metadata.labels['a']")),
    container({"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}),
    container(env_from=[{"configMapRef": {"name": "c"}}]),
])
def test_what_cannot_be_resolved_is_an_error_not_a_guess(bad):
    with pytest.raises(sandbox.SandboxError):
        sandbox.resolve_env(bad, "ns", "pod-0", "sa")


def test_only_controller_records_are_the_controllers(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "STATE", tmp_path)
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "controller-manager.json").write_text(json.dumps({"pid": 1, "start_time": "1"}))
    (pids / "karpctl-controller-1.json").write_text(json.dumps({"pid": 3, "start_time": "1", "replica": 1}))
    (pids / "karpctl-controller-0.json").write_text(json.dumps({"pid": 2, "start_time": "1", "replica": 0}))
    assert [name for name, _ in sandbox.controller_records()] == ["karpctl-controller-0", "karpctl-controller-1"]

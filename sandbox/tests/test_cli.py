"""The sandbox entry point's promises: a second `up` is a no-op, a busy port fails with one
clear line and leaves nothing running, `status` tells the truth. These need the binaries
built and the default sandbox up (`make test` runs `sandbox/sandbox up` first)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "sandbox" / "sandbox"


def run(*args, env=None):
    return subprocess.run([str(SANDBOX), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def status():
    result = run("status", "-o", "json")
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


def test_second_up_is_a_no_op():
    before = status()
    assert before["up"], "the default sandbox must be up: run `sandbox/sandbox up` first"
    result = run("up")
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stderr
    after = status()
    assert [c["pid"] for c in after["components"]] == [c["pid"] for c in before["components"]]


def test_a_port_in_use_fails_cleanly_and_starts_nothing(tmp_path):
    base = 18700
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", base + 1))  # the apiserver's port
    holder.listen()
    try:
        env = {"KARPCTL_SANDBOX_PORT_BASE": str(base), "KARPCTL_SANDBOX_DIR": str(tmp_path / "state")}
        result = run("up", env=env)
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and f"apiserver ({base + 1})" in errors[0] and "KARPCTL_SANDBOX_PORT_BASE" in errors[0], result.stderr
        st = run("status", "-o", "json", env=env)
        assert st.returncode == 3
        assert not any(c["running"] for c in json.loads(st.stdout)["components"])
    finally:
        holder.close()


def test_status_reports_every_component_running_on_loopback():
    st = status()
    assert st["up"]
    for component in st["components"]:
        assert component["running"], component
        assert component["address"].startswith("127.0.0.1:") or component["component"] == "registrar"

"""The local EKS-shaped sandbox: one entry point to build, start, inspect and stop it.

`up` starts, on 127.0.0.1 only: etcd, kube-apiserver (RBAC on, service-account signing),
kube-controller-manager, kube-scheduler, kwok (standing in for kubelets), the AWS endpoint
(moto plus the EKS/Pricing gaps, seeded as an EKS account) and the node registrar; then it
lays down the kube-system objects EKS and eksctl leave behind. Binaries are built once into
a cache outside the clone, keyed by version; all runtime state lives in one directory.
`down` stops exactly the processes `up` recorded (PID and start time), nothing else.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = ROOT / "sandbox"
sys.path.insert(0, str(SANDBOX / "aws"))
import interruption  # noqa: E402  (the kinds the endpoint knows; moto is imported only there)
KUBE_VERSION = "v1.37.2"
KWOK_VERSION = "v0.8.0"
CACHE = Path(os.environ.get("KARPCTL_SANDBOX_CACHE", Path.home() / ".cache" / "karpctl-sandbox"))
STATE = Path(os.environ.get("KARPCTL_SANDBOX_DIR", ROOT / ".sandbox"))
PORT_BASE = int(os.environ.get("KARPCTL_SANDBOX_PORT_BASE", "18400"))
CLUSTER = os.environ.get("KARPCTL_SANDBOX_CLUSTER", "sandbox")
REGION = os.environ.get("KARPCTL_SANDBOX_REGION", "us-west-2")
ACCOUNT_ID = "123456789012"
SERVICE_CIDR = "10.100.0.0/16"
DNS_IP = "10.100.0.10"
# Real EKS issuers look like this; nothing ever fetches it, it only names the token issuer.
OIDC_ISSUER = f"https://oidc.eks.{REGION}.amazonaws.com/id/5A3C1F0E9B7D4E21A8C6F0B2D4E6A8C0"

PORTS = {"aws": 0, "apiserver": 1, "etcd": 2, "etcd-peer": 3, "scheduler": 4, "controller-manager": 5, "kwok": 6}
# Start order; `down` stops in reverse.
COMPONENTS = ["etcd", "apiserver", "controller-manager", "scheduler", "kwok", "aws", "registrar"]


class SandboxError(Exception):
    """One line saying what failed and how to fix it."""


def port(name: str) -> int:
    return PORT_BASE + PORTS[name]


def say(message: str) -> None:
    print(f"sandbox: {message}", file=sys.stderr, flush=True)


# Building the binaries ---------------------------------------------------------------------


def kube_bin() -> Path:
    return CACHE / f"kube-{KUBE_VERSION}"


def kwok_bin() -> Path:
    return CACHE / f"kwok-{KWOK_VERSION}" / "kwok"


def go_build(what: str, minutes: int, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    if shutil.which("go") is None:
        raise SandboxError("`go` is not on PATH: install Go 1.26 or newer (https://go.dev/dl) and retry")
    say(f"building {what} (first time only; up to {minutes} minutes on 2 cores) -> {log}")
    started = time.time()
    with log.open("w") as out:
        result = subprocess.run(args, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise SandboxError(f"building {what} failed: {tail[0]} (full log: {log})")
    say(f"built {what} in {time.time() - started:.0f}s")


def ensure_binaries() -> None:
    import fcntl

    # One build at a time per cache: two `up`s with different state dirs (test_cli's busy-port
    # test runs one) once built into the same .partial directory and broke each other's build.
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build_missing_binaries()


def build_missing_binaries() -> None:
    target = kube_bin()
    wanted = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"]
    if not all((target / b).exists() for b in wanted):
        tmp = CACHE / f"kube-{KUBE_VERSION}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        go_build(
            f"Kubernetes {KUBE_VERSION} control plane and etcd", 9,
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp) + "/",
             "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-scheduler",
             "k8s.io/kubernetes/cmd/kube-controller-manager", "k8s.io/kubernetes/cmd/kubectl",
             "go.etcd.io/etcd/server/v3"],
            SANDBOX / "kube", {"GOFLAGS": "-mod=mod"}, CACHE / "build-kube.log",
        )
        (tmp / "server").rename(tmp / "etcd")  # etcd's main package is the module root
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    if not kwok_bin().exists():
        go_build(
            f"kwok {KWOK_VERSION}", 2,
            ["go", "install", "-trimpath", "-ldflags=-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
            CACHE, {"GOBIN": str(kwok_bin().parent), "GOFLAGS": ""}, CACHE / "build-kwok.log",
        )


# PKI and kubeconfigs -----------------------------------------------------------------------


def make_pki(pki: Path) -> None:
    """A cluster CA, the apiserver's serving cert, client certs per identity, the SA key."""
    if (pki / "ca.crt").exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def write(name: str, data: bytes) -> None:
        (pki / name).write_bytes(data)
        os.chmod(pki / name, 0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    write("ca.key", key_pem(ca_key))

    def issue(name: str, cn: str, orgs: list[str], server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs] + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            # Strict verifiers (urllib3 2, rustls) want the key identifiers and key usage.
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.KeyUsage(True, False, server, False, False, False, False, False, False), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
                    x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.100.0.1")),
                ]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        write(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
        write(f"{name}.key", key_pem(key))

    issue("apiserver", "kube-apiserver", [], server=True)
    issue("admin", "kubernetes-admin", ["system:masters"], server=False)
    issue("scheduler", "system:kube-scheduler", [], server=False)
    issue("controller-manager", "system:kube-controller-manager", [], server=False)
    issue("kwok", "kwok", ["system:masters"], server=False)
    issue("registrar", "karpctl-sandbox-registrar", ["system:masters"], server=False)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    write("sa.key", key_pem(sa_key))
    write("sa.pub", sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_kubeconfig(path: Path, user: str, pki: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {"server": f"https://127.0.0.1:{port('apiserver')}", "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": f"{user}@{CLUSTER}", "context": {"cluster": CLUSTER, "user": user, "namespace": "default"}}],
        "current-context": f"{user}@{CLUSTER}",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML; every client reads it
    os.chmod(path, 0o600)


# Processes ---------------------------------------------------------------------------------


def proc_start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None


def record_path(name: str) -> Path:
    return STATE / "pids" / f"{name}.json"


def recorded(name: str) -> dict[str, Any] | None:
    try:
        return json.loads(record_path(name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def alive(name: str) -> bool:
    rec = recorded(name)
    return bool(rec) and proc_start_time(rec["pid"]) == rec["start_time"]


def start(name: str, args: list[str], env: dict[str, str] | None = None) -> None:
    log = STATE / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    record_path(name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
    for _ in range(50):
        st = proc_start_time(proc.pid)
        if st:
            break
        time.sleep(0.01)
    record_path(name).write_text(json.dumps({"pid": proc.pid, "start_time": st, "args": args, "log": str(log)}))


def stop(name: str) -> bool:
    rec = recorded(name)
    if rec is None:
        return False
    stopped = False
    if proc_start_time(rec["pid"]) == rec["start_time"]:
        try:
            os.killpg(rec["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
        for _ in range(100):
            if proc_start_time(rec["pid"]) != rec["start_time"]:
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(rec["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped = True
    record_path(name).unlink(missing_ok=True)
    return stopped


def log_tail(name: str, lines: int = 3) -> str:
    try:
        text = (STATE / "logs" / f"{name}.log").read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text[-lines:])


def wait_for(what: str, name: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not alive(name):
            raise SandboxError(f"{what} exited while starting: {log_tail(name)} (log: {STATE / 'logs' / (name + '.log')})")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SandboxError(f"{what} did not become ready within {timeout:.0f}s: {log_tail(name)} (log: {STATE / 'logs' / (name + '.log')})")


def https_ok(url: str, pki: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return r.status == 200


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def port_free(p: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
            return True
        except OSError:
            return False


# Commands ----------------------------------------------------------------------------------


def kubectl(*args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(STATE / "kubeconfig")}
    result = subprocess.run([str(kube_bin() / "kubectl"), *args], input=input_text, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise SandboxError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def env_vars() -> dict[str, str]:
    return {
        "KUBECONFIG": str(STATE / "kubeconfig"),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port('aws')}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "KARPCTL_SANDBOX_CLUSTER": CLUSTER,
        "KARPCTL_SANDBOX_DIR": str(STATE),
        "KARPCTL_SANDBOX_BIN": str(kube_bin()),
    }


def render(template: Path, values: dict[str, str]) -> str:
    return string.Template(template.read_text()).substitute(values)


def cmd_up(args: argparse.Namespace) -> int:
    import fcntl

    # Two callers at once (test binaries, a developer and CI) must not both start a cluster.
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return up_locked(args)


def up_locked(args: argparse.Namespace) -> int:
    states = {c: alive(c) for c in COMPONENTS}
    if all(states.values()):
        say(f"already up (cluster {CLUSTER!r}, apiserver https://127.0.0.1:{port('apiserver')}, AWS http://127.0.0.1:{port('aws')}); nothing to do")
        return 0
    if any(states.values()):
        say("found a partly running sandbox (" + ", ".join(c for c, up in states.items() if not up) + " not running): stopping it and starting afresh")
        stop_all()
    started_at = time.time()
    ensure_binaries()
    busy = [f"{n} ({port(n)})" for n in PORTS if not port_free(port(n))]
    if busy:
        raise SandboxError(f"ports in use on 127.0.0.1: {', '.join(busy)}; stop whatever holds them or set KARPCTL_SANDBOX_PORT_BASE to another base (now {PORT_BASE})")
    # A fresh cluster every `up`: old etcd data would not match the freshly seeded AWS account.
    for stale in ("etcd-data", "logs", "pids"):
        shutil.rmtree(STATE / stale, ignore_errors=True)
    pki = STATE / "pki"
    make_pki(pki)
    for user in ("admin", "scheduler", "controller-manager", "kwok"):
        write_kubeconfig(STATE / ("kubeconfig" if user == "admin" else f"{user}.kubeconfig"), user, pki)
    (STATE / "registrar.json").write_text(json.dumps({"boot_delay_seconds": args.boot_delay, "never_join": {"instances": [], "tags": {}}}, indent=2))
    try:
        start_components(args, pki)
    except BaseException:
        say("start failed; stopping what was started")
        stop_all()
        raise
    (STATE / "env").write_text("".join(f"export {k}={v}\n" for k, v in env_vars().items()))
    say(f"up in {time.time() - started_at:.0f}s: cluster {CLUSTER!r} in {REGION}; `sandbox/sandbox env` prints the variables to use it")
    return 0


def start_components(args: argparse.Namespace, pki: Path) -> None:
    b = kube_bin()
    api = f"https://127.0.0.1:{port('apiserver')}"
    say("starting etcd")
    start("etcd", [str(b / "etcd"), "--name=sandbox", f"--data-dir={STATE / 'etcd-data'}",
                   f"--listen-client-urls=http://127.0.0.1:{port('etcd')}", f"--advertise-client-urls=http://127.0.0.1:{port('etcd')}",
                   f"--listen-peer-urls=http://127.0.0.1:{port('etcd-peer')}", f"--initial-advertise-peer-urls=http://127.0.0.1:{port('etcd-peer')}",
                   f"--initial-cluster=sandbox=http://127.0.0.1:{port('etcd-peer')}", "--unsafe-no-fsync=true", "--log-level=warn"])
    wait_for("etcd", "etcd", lambda: http_ok(f"http://127.0.0.1:{port('etcd')}/health"), 30)

    say("starting kube-apiserver")
    start("apiserver", [str(b / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{port('etcd')}",
                        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port('apiserver')}",
                        "--endpoint-reconciler-type=none", "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                        f"--client-ca-file={pki / 'ca.crt'}", f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                        f"--service-account-issuer={OIDC_ISSUER}", f"--service-account-key-file={pki / 'sa.pub'}",
                        f"--service-account-signing-key-file={pki / 'sa.key'}", "--api-audiences=https://kubernetes.default.svc,sts.amazonaws.com",
                        f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true", "--profiling=false", "--v=1"])
    wait_for("kube-apiserver", "apiserver", lambda: https_ok(f"{api}/readyz", pki), 90)

    say("starting kube-controller-manager, kube-scheduler and kwok")
    start("controller-manager", [str(b / "kube-controller-manager"), f"--kubeconfig={STATE / 'controller-manager.kubeconfig'}",
                                 f"--authentication-kubeconfig={STATE / 'controller-manager.kubeconfig'}", f"--authorization-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
                                 "--bind-address=127.0.0.1", f"--secure-port={port('controller-manager')}", "--leader-elect=false",
                                 f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                                 "--use-service-account-credentials=true", f"--cluster-name={CLUSTER}", "--controllers=*", "--v=1"])
    start("scheduler", [str(b / "kube-scheduler"), f"--kubeconfig={STATE / 'scheduler.kubeconfig'}",
                        f"--authentication-kubeconfig={STATE / 'scheduler.kubeconfig'}", f"--authorization-kubeconfig={STATE / 'scheduler.kubeconfig'}",
                        "--bind-address=127.0.0.1", f"--secure-port={port('scheduler')}", "--leader-elect=false", "--v=1"])
    start("kwok", [str(kwok_bin()), f"--kubeconfig={STATE / 'kwok.kubeconfig'}", "--manage-all-nodes=true",
                   f"--server-address=127.0.0.1:{port('kwok')}", "--cidr=10.0.128.0/17", "--node-lease-duration-seconds=40",
                   f"--config={SANDBOX / 'kwok' / 'stages.yaml'}"])
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE

    def healthz(p: int) -> bool:
        with urllib.request.urlopen(f"https://127.0.0.1:{p}/healthz", context=insecure, timeout=2) as r:
            return r.status == 200

    wait_for("kube-controller-manager", "controller-manager", lambda: healthz(port("controller-manager")), 60)
    wait_for("kube-scheduler", "scheduler", lambda: healthz(port("scheduler")), 60)
    wait_for("kwok", "kwok", lambda: http_ok(f"http://127.0.0.1:{port('kwok')}/healthz"), 60)

    say("starting the AWS endpoint and seeding the account (VPC, subnets, EKS cluster, node group, AMIs)")
    seed = {
        "cluster_name": CLUSTER, "region": REGION, "kubernetes_version": KUBE_VERSION[1:].rsplit(".", 1)[0],
        "apiserver_endpoint": api, "ca_b64": base64.b64encode((pki / "ca.crt").read_bytes()).decode(),
        "oidc_issuer": OIDC_ISSUER, "service_cidr": SERVICE_CIDR, "dns_ip": DNS_IP,
        "system_instance_type": "m5.large", "system_nodes": 2, "auth_mode": args.auth_mode,
    }
    (STATE / "seed.json").write_text(json.dumps(seed, indent=2))
    data = ROOT / "controller" / "cloud" / "data"
    start("aws", [sys.executable, str(SANDBOX / "aws" / "server.py"), f"--port={port('aws')}", f"--seed={STATE / 'seed.json'}", f"--data={data}", f"--service-account-key={STATE / 'pki' / 'sa.pub'}"],
          env={"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"})
    wait_for("the AWS endpoint", "aws", lambda: http_ok(f"http://127.0.0.1:{port('aws')}/_sandbox/health"), 120)

    say("creating what EKS and eksctl leave in kube-system (aws-auth, aws-node, kube-proxy, CoreDNS, Cluster Autoscaler)")
    summary = next(json.loads(line) for line in (STATE / "logs" / "aws.log").read_text().splitlines() if line.startswith('{"ready"'))
    (STATE / "account.json").write_text(json.dumps(summary, indent=2))
    values = {"CLUSTER": CLUSTER, "REGION": REGION, "ACCOUNT_ID": ACCOUNT_ID, "SYSTEM_NODE_ROLE": summary["system_node_role"], "DNS_IP": DNS_IP}
    wait_for("the default service account", "controller-manager", lambda: kubectl("-n", "kube-system", "get", "serviceaccount", "default", check=False).returncode == 0, 60)
    for manifest in sorted((SANDBOX / "cluster").glob("*.yaml")):
        kubectl("create", "-f", "-", input_text=render(manifest, values))

    say("starting the node registrar; waiting for the system nodes to register and become Ready")
    start("registrar", [sys.executable, str(SANDBOX / "registrar.py"), f"--cluster={CLUSTER}", f"--region={REGION}",
                        f"--aws-endpoint=http://127.0.0.1:{port('aws')}", f"--apiserver={api}", f"--ca={pki / 'ca.crt'}",
                        f"--client-cert={pki / 'registrar.crt'}", f"--client-key={pki / 'registrar.key'}", f"--data={data}",
                        f"--control={STATE / 'registrar.json'}"])

    def system_nodes_ready() -> bool:
        out = kubectl("get", "nodes", "-l", "eks.amazonaws.com/nodegroup=system", "-o", "json").stdout
        nodes = json.loads(out)["items"]
        ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))]
        return len(ready) == seed["system_nodes"]

    wait_for("the system nodes", "registrar", system_nodes_ready, 90)

    def coredns_running() -> bool:
        out = kubectl("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "json").stdout
        return sum(p["status"].get("phase") == "Running" for p in json.loads(out)["items"]) == 2

    wait_for("CoreDNS", "kwok", coredns_running, 90)


def stop_all() -> list[str]:
    stopped = controller_stop_all() + [name for name in reversed(COMPONENTS) if stop(name)]
    return stopped


def cmd_down(args: argparse.Namespace) -> int:
    stopped = stop_all()
    say(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    rows = []
    for name in COMPONENTS:
        rec = recorded(name)
        where = f"127.0.0.1:{port(name)}" if name in PORTS else "(no port)"
        rows.append({"component": name, "running": alive(name), "pid": rec["pid"] if rec and alive(name) else None, "address": where, "log": str(STATE / "logs" / f"{name}.log")})
    up = all(r["running"] for r in rows)
    if args.output == "json":
        print(json.dumps({"up": up, "state_dir": str(STATE), "cluster": CLUSTER, "region": REGION, "components": rows}, indent=2))
    else:
        print(f"sandbox {'UP' if up else 'DOWN' if not any(r['running'] for r in rows) else 'PARTLY UP'}  (state {STATE}, cluster {CLUSTER!r}, region {REGION})")
        for r in rows:
            print(f"  {r['component']:<19} {'running' if r['running'] else 'stopped':<8} pid {str(r['pid'] or '-'):<8} {r['address']}")
    return 0 if up else 3


def cmd_env(args: argparse.Namespace) -> int:
    for k, v in env_vars().items():
        print(f"export {k}={v}")
    return 0


def cmd_never_join(args: argparse.Namespace) -> int:
    path = STATE / "registrar.json"
    if not path.exists():
        raise SandboxError("the sandbox is not up: run `sandbox/sandbox up` first")
    control = json.loads(path.read_text())
    rules = control.setdefault("never_join", {"instances": [], "tags": {}})
    if args.clear:
        rules.update({"instances": [], "tags": {}})
    rules["instances"].extend(args.instance or [])
    for tag in args.tag or []:
        k, sep, v = tag.partition("=")
        if not sep:
            raise SandboxError(f"--tag takes KEY=VALUE, got {tag!r}")
        rules["tags"][k] = v
    if args.boot_delay is not None:
        control["boot_delay_seconds"] = args.boot_delay
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(control, indent=2))
    tmp.replace(path)
    print(json.dumps(control, indent=2))
    return 0


def cmd_interrupt(args: argparse.Namespace) -> int:
    """Ask the AWS endpoint to interrupt an instance as EC2 would (sandbox/aws/interruption.py):
    the events go through the account's EventBridge rules, and a delayed action (spot's
    termination) runs in the endpoint, so this returns at once."""
    if not alive("aws"):
        raise SandboxError("the sandbox is not up: run `sandbox/sandbox up` first")
    request = {"region": REGION, "instance": args.instance, "kind": args.kind}
    if args.delay is not None:
        request["delay"] = args.delay
    req = urllib.request.Request(f"http://127.0.0.1:{port('aws')}/_sandbox/interrupt", data=json.dumps(request).encode(), method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            result = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SandboxError(json.loads(e.read() or b"{}").get("error") or f"the AWS endpoint answered {e.code}")
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return 0
    for sent in result["events"]:
        event = sent["event"]
        what = event["detail-type"] + (f" ({event['detail']['state']})" if "state" in event["detail"] else "")
        print(f"sent {what} for {args.instance}, event {event['id']}")
        for d in sent["deliveries"]:
            print(f"  rule {d['rule']} -> {d['target']}: " + ("delivered" if d["delivered"] else f"NOT delivered: {d.get('reason')}"))
        if not sent["deliveries"]:
            print("  no enabled rule matched it: delivered nowhere")
    if result["scheduled"]:
        job = result["scheduled"]
        print(f"EC2 will {job['action']} {job['instance']} at {job['at']} (state-change events then follow)")
    return 0


# Scenarios: optional additions to a running sandbox, so the default `up` stays fast.
WORKERS = {"name": "workers", "instance_type": "m5.large", "count": 4, "max_size": 6, "min_size": 2, "labels": {"role": "workers"}}


def cmd_scenario(args: argparse.Namespace) -> int:
    """`cas`: a cluster worth migrating off Cluster Autoscaler — a second managed node group
    `workers` (4 x m5.large, custom label role=workers, CAS auto-discovery tags on its ASG)
    running the workloads in sandbox/scenarios/cas-workloads.yaml. A no-op when present."""
    if not alive("aws") or not alive("registrar"):
        raise SandboxError("the sandbox is not up: run `sandbox/sandbox up` first")
    started = time.time()
    request = urllib.request.Request(f"http://127.0.0.1:{port('aws')}/_sandbox/nodegroups", method="POST", data=json.dumps(WORKERS).encode(), headers={"Content-Type": "application/json"})
    existing = json.loads(kubectl("get", "nodes", "-l", f"eks.amazonaws.com/nodegroup={WORKERS['name']}", "-o", "json").stdout)["items"]
    if existing:
        say(f"node group {WORKERS['name']!r} already has {len(existing)} node(s); not creating it again")
    else:
        say(f"creating managed node group {WORKERS['name']!r}: {WORKERS['count']} x {WORKERS['instance_type']}, labels {WORKERS['labels']}, CAS auto-discovery tags")
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                created = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise SandboxError(f"creating node group {WORKERS['name']!r}: {e.read().decode(errors='replace')}") from None
        say(f"node group {created['name']!r}: Auto Scaling group {created['asg']}")

    def workers_ready() -> bool:
        nodes = json.loads(kubectl("get", "nodes", "-l", f"eks.amazonaws.com/nodegroup={WORKERS['name']}", "-o", "json").stdout)["items"]
        ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))]
        return len(ready) >= WORKERS["count"]

    wait_for(f"the {WORKERS['name']} nodes", "registrar", workers_ready, 90)
    say("applying the workloads (sandbox/scenarios/cas-workloads.yaml)")
    kubectl("apply", "-f", str(SANDBOX / "scenarios" / "cas-workloads.yaml"))

    def workloads_running() -> bool:
        pods = json.loads(kubectl("-n", "shop", "get", "pods", "-o", "json").stdout)["items"]
        return len(pods) == 9 and all(p["status"].get("phase") == "Running" for p in pods)

    wait_for("the shop workloads", "kwok", workloads_running, 90)
    say(f"scenario cas ready in {time.time() - started:.0f}s: node groups system and workers, Cluster Autoscaler, 9 pods in namespace shop")
    return 0


def cmd_kubectl(args: argparse.Namespace) -> int:
    os.environ["KUBECONFIG"] = str(STATE / "kubeconfig")
    os.execv(str(kube_bin() / "kubectl"), ["kubectl", *args.rest])


def cmd_show(args: argparse.Namespace) -> int:
    """The main job for now: show that this is an EKS-shaped cluster, from both sides."""
    import boto3

    if not alive("aws") or not alive("apiserver"):
        raise SandboxError("the sandbox is not up: run `sandbox/sandbox up` first")
    os.environ.update(env_vars())
    eks, ec2 = boto3.client("eks"), boto3.client("ec2")
    cluster = eks.describe_cluster(name=CLUSTER)["cluster"]
    print(f"== The cluster as the AWS API (EKS DescribeCluster at {os.environ['AWS_ENDPOINT_URL']}) describes it")
    vpc = cluster["resourcesVpcConfig"]
    print(f"name {cluster['name']}  version {cluster['version']}  status {cluster['status']}  platform {cluster.get('platformVersion')}")
    print(f"endpoint {cluster['endpoint']}\noidc issuer {cluster['identity']['oidc']['issuer']}")
    print(f"authentication mode {cluster['accessConfig']['authenticationMode']}  vpc {vpc['vpcId']}  cluster security group {vpc['clusterSecurityGroupId']}")
    for ng in eks.list_nodegroups(clusterName=CLUSTER)["nodegroups"]:
        g = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=ng)["nodegroup"]
        print(f"node group {ng}: role {g['nodeRole']}  desired {g['scalingConfig']['desiredSize']}  asg {g['resources']['autoScalingGroups'][0]['name']}")
    subnets = ec2.describe_subnets(SubnetIds=vpc["subnetIds"])["Subnets"]
    print("subnets " + ", ".join(f"{s['SubnetId']} ({s['AvailabilityZone']}, {s['CidrBlock']})" for s in subnets))
    for r in ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": [f"kubernetes.io/cluster/{CLUSTER}"]}])["Reservations"]:
        for i in r["Instances"]:
            print(f"instance {i['InstanceId']} {i['InstanceType']} {i['Placement']['AvailabilityZone']} {i['State']['Name']} {i['PrivateDnsName']}")
    print(f"\n== The cluster as Kubernetes (https://127.0.0.1:{port('apiserver')}) sees it")
    sys.stdout.flush()
    subprocess.run([str(kube_bin() / "kubectl"), "get", "nodes", "-L", "eks.amazonaws.com/nodegroup,node.kubernetes.io/instance-type,topology.kubernetes.io/zone"], env=os.environ)
    subprocess.run([str(kube_bin() / "kubectl"), "get", "pods,daemonsets,deployments", "-n", "kube-system", "-o", "wide"], env=os.environ)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """The sandbox's own unit tests (registrar parsing and arithmetic), with its pinned pytest."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", str(SANDBOX / "tests"), *args.rest]).returncode


# The controller as local processes ------------------------------------------------------
#
# There is no container runtime (kwok only marks the Deployment's pods Running), so the
# controller runs here as local processes with exactly the Deployment's settings and identity:
# its container env (fieldRefs resolved per replica), a token for its ServiceAccount from the
# TokenRequest API (so RBAC gaps in the templates fail here as they would in EKS, never hidden
# by the admin kubeconfig), and the sandbox's AWS endpoint. Only the ports (free ones from the
# sandbox's range) and the bind address (127.0.0.1) differ from the pod.

CONTROLLER_PORTS = range(10, 40)  # offsets from PORT_BASE for the replicas' metrics/probe ports
CONTROLLER_TOKEN_SECONDS = 24 * 3600
CONTROLLER_RECORD = "karpctl-controller-"  # + replica number: pids/ and logs/ file names


def controller_dir() -> Path:
    return STATE / "controller"


def controller_records() -> list[tuple[str, dict[str, Any]]]:
    """Every recorded controller replica, alive or not, by replica number."""
    found = []
    for path in sorted((STATE / "pids").glob(f"{CONTROLLER_RECORD}*.json")):
        rec = recorded(path.stem)
        # Only records `controller start` wrote (never the kube-controller-manager's).
        if rec is not None and "replica" in rec:
            found.append((path.stem, rec))
    return sorted(found, key=lambda r: r[1].get("replica", 0))


def controller_binary(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "karpctl-target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "karpctl-controller"


def resolve_env(container: dict[str, Any], namespace: str, pod_name: str, service_account: str) -> dict[str, str]:
    """The container's env as the kubelet would set it for one pod."""
    if container.get("envFrom"):
        raise SandboxError("the controller's container uses envFrom, which `sandbox controller` does not resolve")
    fields = {
        "metadata.name": pod_name,
        "metadata.namespace": namespace,
        "spec.serviceAccountName": service_account,
        "spec.nodeName": "sandbox-local",
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    env: dict[str, str] = {}
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            # $(VAR) names an earlier variable, as the kubelet expands it; $$ escapes.
            env[name] = re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), var.get("value", ""))
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path not in fields:
                raise SandboxError(f"env {name}: fieldRef {path} is not one `sandbox controller` resolves")
            env[name] = fields[path]
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind, ref = ("configmap", source["configMapKeyRef"]) if "configMapKeyRef" in source else ("secret", source["secretKeyRef"])
            out = kubectl("-n", namespace, "get", kind, ref["name"], "-o", "json", check=not ref.get("optional")).stdout
            data = json.loads(out).get("data", {}) if out else {}
            if ref["key"] in data:
                env[name] = base64.b64decode(data[ref["key"]]).decode() if kind == "secret" else data[ref["key"]]
            elif not ref.get("optional"):
                raise SandboxError(f"env {name}: {kind} {ref['name']} has no key {ref['key']}")
        else:
            raise SandboxError(f"env {name}: valueFrom {sorted(source)} is not one `sandbox controller` resolves")
    return env


def write_token_kubeconfig(path: Path, namespace: str, service_account: str) -> None:
    token = kubectl("-n", namespace, "create", "token", service_account, f"--duration={CONTROLLER_TOKEN_SECONDS}s").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {"server": f"https://127.0.0.1:{port('apiserver')}", "certificate-authority": str(STATE / "pki" / "ca.crt")}}],
        "users": [{"name": f"system:serviceaccount:{namespace}:{service_account}", "user": {"token": token}}],
        "contexts": [{"name": service_account, "context": {"cluster": CLUSTER, "user": f"system:serviceaccount:{namespace}:{service_account}", "namespace": namespace}}],
        "current-context": service_account,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    os.chmod(path, 0o600)


def free_ports(count: int, taken: set[int]) -> list[int]:
    found = []
    for offset in CONTROLLER_PORTS:
        p = PORT_BASE + offset
        if p not in taken and port_free(p):
            found.append(p)
            if len(found) == count:
                return found
    raise SandboxError(f"no {count} free ports in {PORT_BASE + CONTROLLER_PORTS.start}-{PORT_BASE + CONTROLLER_PORTS.stop - 1}")


def start_clean(name: str, args: list[str], env: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
    """Like `start`, but with exactly `env` (nothing inherited: no developer kubeconfig or AWS
    profile can leak in) and extra fields in the record."""
    log = STATE / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    record_path(name).parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    st = None
    for _ in range(50):
        st = proc_start_time(proc.pid)
        if st:
            break
        time.sleep(0.01)
    rec = {"pid": proc.pid, "start_time": st, "args": args, "log": str(log), **extra}
    record_path(name).write_text(json.dumps(rec))
    return rec


def controller_aws_env(namespace: str, service_account: str) -> tuple[dict[str, str], str]:
    """The AWS part of the controller's env, as EKS's webhooks inject it: IRSA when the
    ServiceAccount has the `eks.amazonaws.com/role-arn` annotation (a web identity token
    with audience sts.amazonaws.com, exchanged through AssumeRoleWithWebIdentity), else EKS
    Pod Identity when an association names it (a token with audience pods.eks.amazonaws.com,
    exchanged at the AWS endpoint's Pod Identity agent route). Either way the controller runs
    as the role, and the endpoint's authorizer decides each call against its policies.
    Without either it gets the account admin's test keys, and says so."""
    base = {k: v for k, v in env_vars().items() if k.startswith("AWS_") and k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    tokens = controller_dir() / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    sa = json.loads(kubectl("-n", namespace, "get", "serviceaccount", service_account, "-o", "json").stdout)
    role_arn = (sa.get("metadata", {}).get("annotations") or {}).get("eks.amazonaws.com/role-arn")
    if role_arn:
        path = tokens / "irsa-token"
        path.write_text(kubectl("-n", namespace, "create", "token", service_account, "--audience=sts.amazonaws.com", f"--duration={CONTROLLER_TOKEN_SECONDS}s").stdout.strip())
        return {**base, "AWS_ROLE_ARN": role_arn, "AWS_WEB_IDENTITY_TOKEN_FILE": str(path), "AWS_ROLE_SESSION_NAME": f"{service_account}-sandbox", "AWS_STS_REGIONAL_ENDPOINTS": "regional"}, f"IRSA role {role_arn}"
    associations = pod_identity_associations(namespace, service_account)
    if associations:
        path = tokens / "eks-pod-identity-token"
        path.write_text(kubectl("-n", namespace, "create", "token", service_account, "--audience=pods.eks.amazonaws.com", f"--duration={CONTROLLER_TOKEN_SECONDS}s").stdout.strip())
        return {**base, "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{port('aws')}/_sandbox/pod-identity/v1/credentials", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(path)}, f"EKS Pod Identity ({associations[0]})"
    say(f"ServiceAccount {namespace}/{service_account} has neither an IRSA annotation nor a Pod Identity association: the controller gets the account admin's test keys")
    return {k: v for k, v in env_vars().items() if k.startswith("AWS_")}, "the account admin's test keys"


def pod_identity_associations(namespace: str, service_account: str) -> list[str]:
    import boto3

    env = env_vars()
    eks = boto3.client("eks", region_name=REGION, endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing", aws_secret_access_key="testing")
    found = eks.list_pod_identity_associations(clusterName=CLUSTER, namespace=namespace, serviceAccount=service_account).get("associations", [])
    return [a["associationArn"] for a in found]


def lease_holder(namespace: str, lease: str) -> str | None:
    out = kubectl("-n", namespace, "get", "lease", lease, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout).get("spec", {}).get("holderIdentity") or None


def controller_stop_all() -> list[str]:
    return [name for name, _ in controller_records() if stop(name)]


def cmd_controller_start(args: argparse.Namespace) -> int:
    if not alive("apiserver") or not alive("aws"):
        raise SandboxError("the sandbox is not up: run `sandbox/sandbox up` first")
    binary = controller_binary(args.binary)
    if not binary.exists():
        raise SandboxError(f"no controller binary at {binary}: run `cargo build -p karpctl-controller` (or pass --binary)")
    running = [(n, r) for n, r in controller_records() if alive(n)]
    if running and len(running) == args.replicas and all(r.get("binary_mtime") == binary.stat().st_mtime for _, r in running):
        say(f"{len(running)} controller replica(s) already running; nothing to do")
        return 0
    if running:
        say("restarting the running controller replicas")
    controller_stop_all()

    out = kubectl("-n", args.namespace, "get", "deployment", args.deployment, "-o", "json", check=False)
    if out.returncode != 0:
        raise SandboxError(f"no Deployment {args.namespace}/{args.deployment}: run `karpctl init` against the sandbox first ({out.stderr.strip()})")
    deployment = json.loads(out.stdout)
    pod_spec = deployment["spec"]["template"]["spec"]
    containers = pod_spec["containers"]
    container = next((c for c in containers if c["name"] == "controller"), containers[0])
    service_account = pod_spec.get("serviceAccountName") or "default"
    kubeconfig = controller_dir() / "kubeconfig"
    write_token_kubeconfig(kubeconfig, args.namespace, service_account)
    home = controller_dir() / "home"
    home.mkdir(parents=True, exist_ok=True)
    aws, identity = controller_aws_env(args.namespace, service_account)

    ports = free_ports(2 * args.replicas, set())
    started = []
    for replica in range(args.replicas):
        pod_name = f"{args.deployment}-sandbox-{replica}"
        metrics_port, probe_port = ports[2 * replica], ports[2 * replica + 1]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            **aws,  # the endpoint and test credentials; the Deployment's AWS_REGION wins below
            **resolve_env(container, args.namespace, pod_name, service_account),
            "KUBECONFIG": str(kubeconfig),
            "METRICS_PORT": str(metrics_port),
            "HEALTH_PROBE_PORT": str(probe_port),
            "BIND_ADDRESS": "127.0.0.1",
        }
        name = f"{CONTROLLER_RECORD}{replica}"
        rec = start_clean(name, [str(binary)], env, {
            "replica": replica, "pod_name": pod_name, "namespace": args.namespace, "service_account": service_account,
            "metrics_port": metrics_port, "health_port": probe_port, "binary_mtime": binary.stat().st_mtime,
            "lease": env.get("LEADER_ELECTION_NAME", "karpenter-leader-election"),
        })
        started.append((name, rec))
    for name, rec in started:
        wait_for(f"controller replica {rec['replica']} ({rec['pod_name']})", name, lambda: http_ok(f"http://127.0.0.1:{rec['health_port']}/healthz"), 60)
    say(f"started {len(started)} controller replica(s) as ServiceAccount {args.namespace}/{service_account} with {identity}; `sandbox/sandbox controller status` shows the leader")
    for name, rec in started:
        print(f"{rec['pod_name']}  pid {rec['pid']}  metrics http://127.0.0.1:{rec['metrics_port']}/metrics  probes http://127.0.0.1:{rec['health_port']}/healthz  log {rec['log']}")
    return 0


def cmd_controller_stop(args: argparse.Namespace) -> int:
    stopped = controller_stop_all()
    say(f"stopped {', '.join(stopped)}" if stopped else "no controller replica was running")
    return 0


def cmd_controller_status(args: argparse.Namespace) -> int:
    rows = []
    holders: dict[tuple[str, str], str | None] = {}
    for name, rec in controller_records():
        key = (rec["namespace"], rec["lease"])
        if key not in holders:
            holders[key] = lease_holder(*key) if alive("apiserver") else None
        rows.append({
            "replica": rec["replica"], "pod_name": rec["pod_name"], "running": alive(name), "pid": rec["pid"] if alive(name) else None,
            "leader": holders[key] == rec["pod_name"], "metrics_port": rec["metrics_port"], "health_port": rec["health_port"], "log": rec["log"],
        })
    up = bool(rows) and all(r["running"] for r in rows)
    if args.output == "json":
        print(json.dumps({"running": up, "replicas": rows}, indent=2))
    elif not rows:
        print("controller: not started (`sandbox/sandbox controller start`)")
    else:
        print(f"controller {'RUNNING' if up else 'STOPPED' if not any(r['running'] for r in rows) else 'PARTLY RUNNING'}")
        for r in rows:
            print(f"  {r['pod_name']:<28} {'running' if r['running'] else 'stopped':<8} pid {str(r['pid'] or '-'):<8} "
                  f"{'leader ' if r['leader'] else 'standby'}  metrics :{r['metrics_port']}  probes :{r['health_port']}")
    return 0 if up else 3


def cmd_controller_logs(args: argparse.Namespace) -> int:
    records = [rec for _, rec in controller_records() if args.replica is None or rec["replica"] == args.replica]
    if not records:
        raise SandboxError("no controller replica recorded" + (f" with number {args.replica}" if args.replica is not None else ""))
    logs = [rec["log"] for rec in records]
    if args.follow:
        os.execvp("tail", ["tail", "-n", str(args.tail), "-F", *logs])
    for path in logs:
        lines = Path(path).read_text(errors="replace").splitlines() if Path(path).exists() else []
        for line in lines[-args.tail:] if args.tail else lines:
            print(line if len(records) == 1 else f"[{Path(path).stem}] {line}")
    return 0


def add_controller_commands(sub: Any) -> None:
    ctl = sub.add_parser("controller", help="run the controller as local processes with the Deployment's settings and identity")
    csub = ctl.add_subparsers(dest="controller_command", required=True)
    st = csub.add_parser("start", help="start N replicas from Deployment karpenter's env, as its ServiceAccount")
    st.add_argument("--replicas", type=int, default=2)
    st.add_argument("--namespace", "-n", default="kube-system")
    st.add_argument("--deployment", default="karpenter")
    st.add_argument("--binary", help="the controller binary (default $CARGO_TARGET_DIR/debug/karpctl-controller)")
    st.set_defaults(func=cmd_controller_start)
    csub.add_parser("stop", help="stop exactly the replicas `controller start` started").set_defaults(func=cmd_controller_stop)
    cs = csub.add_parser("status", help="replicas, which holds the Lease (exit 0 when all run, 3 otherwise)")
    cs.add_argument("--output", "-o", choices=["text", "json"], default="text")
    cs.set_defaults(func=cmd_controller_status)
    lg = csub.add_parser("logs", help="the replicas' JSON log lines")
    lg.add_argument("--replica", type=int)
    lg.add_argument("--tail", type=int, default=0, help="only the last N lines of each (0: all)")
    lg.add_argument("--follow", "-f", action="store_true")
    lg.set_defaults(func=cmd_controller_logs)


def main() -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description="The local EKS-shaped sandbox for karpctl's tests and demo.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build what is missing and start the sandbox (a no-op when it is up)")
    up.add_argument("--boot-delay", type=float, default=2.0, help="seconds from an instance running to its Node registering")
    up.add_argument("--auth-mode", default="API_AND_CONFIG_MAP", choices=["CONFIG_MAP", "API_AND_CONFIG_MAP", "API"], help="the EKS cluster's authentication mode")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop exactly what `up` started").set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="what runs where (exit 0 when up, 3 otherwise)")
    status.add_argument("--output", "-o", choices=["text", "json"], default="text")
    status.set_defaults(func=cmd_status)
    sub.add_parser("env", help="print the environment variables that point clients at the sandbox").set_defaults(func=cmd_env)
    sub.add_parser("show", help="show the cluster as the AWS API and Kubernetes describe it").set_defaults(func=cmd_show)
    nj = sub.add_parser("never-join", help="tell the registrar to let chosen instances never join")
    nj.add_argument("--instance", action="append", help="an instance ID (repeatable)")
    nj.add_argument("--tag", action="append", help="KEY=VALUE: instances with this tag (repeatable)")
    nj.add_argument("--clear", action="store_true", help="forget earlier rules first")
    nj.add_argument("--boot-delay", type=float, help="also change the boot delay (seconds)")
    nj.set_defaults(func=cmd_never_join)
    it = sub.add_parser("interrupt", help="interrupt an instance as EC2 does: real EventBridge events through the account's rules",
                        description="spot: the warning now, the instance terminated after --delay (default 120 s); "
                                    "stop/terminate: the instance stopped/terminated after --delay (default 0), with state-change events; "
                                    "rebalance, scheduled-change (an AWS Health retirement notice, startTime --delay ahead, default 14 days), "
                                    "capacity-reservation: the event only.")
    it.add_argument("--instance", required=True, help="the instance ID")
    it.add_argument("--kind", required=True, choices=list(interruption.KINDS))
    it.add_argument("--delay", type=float, help="seconds until EC2 acts (spot, stop, terminate) or the scheduled change starts")
    it.add_argument("--output", "-o", choices=["text", "json"], default="text")
    it.set_defaults(func=cmd_interrupt)
    st = sub.add_parser("selftest", help="run the sandbox's own unit tests")
    st.add_argument("rest", nargs=argparse.REMAINDER)
    st.set_defaults(func=cmd_selftest)
    kc = sub.add_parser("kubectl", help="run the sandbox's kubectl against it")
    kc.add_argument("rest", nargs=argparse.REMAINDER)
    kc.set_defaults(func=cmd_kubectl)
    sc = sub.add_parser("scenario", help="add an optional scenario to the running sandbox")
    sc.add_argument("name", choices=["cas"], help="cas: a workers node group with workloads, to migrate off Cluster Autoscaler")
    sc.set_defaults(func=cmd_scenario)
    add_controller_commands(sub)
    # Pass-through commands take their arguments verbatim (`kubectl -n kube-system get cm`).
    if len(sys.argv) > 1 and sys.argv[1] in ("kubectl", "selftest"):
        args = argparse.Namespace(rest=sys.argv[2:], func={"kubectl": cmd_kubectl, "selftest": cmd_selftest}[sys.argv[1]])
    else:
        args = parser.parse_args()
    try:
        return args.func(args)
    except SandboxError as e:
        print(f"sandbox: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, not a traceback; SANDBOX_DEBUG=1 shows the traceback
        if os.environ.get("SANDBOX_DEBUG"):
            raise
        print(f"sandbox: error: unexpected failure: {e!r} (logs in {STATE / 'logs'}; rerun with SANDBOX_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

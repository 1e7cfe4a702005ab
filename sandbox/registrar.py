"""The node registrar: the kubelet of every instance the sandbox's AWS runs for the cluster.

A real node joins because its kubelet boots, reads the user data the launch template gave
it, authenticates with the instance's IAM role and registers a Node. This does the same, from
the outside, for instances that exist only in moto:
- it watches the cluster's instances (tag `kubernetes.io/cluster/<name>`) through the EC2 API;
- after a boot delay it reads the instance's user data (AL2023 nodeadm NodeConfig, AL2
  bootstrap.sh flags, Bottlerocket TOML) for labels, taints and max pods — never
  Karpenter's own objects, so a wrong launch template shows up as a wrong Node;
- it lets the node join only if the instance's role is authorised the way EKS checks it:
  an `aws-auth` mapRoles row with `system:nodes`, or an `EC2_LINUX` access entry, according
  to the cluster's authentication mode;
- it computes capacity and allocatable from the instance type as the EKS AMIs do, creates
  the Node (kwok then keeps it Ready and runs its pods), and deletes it when the instance
  terminates;
- tests can tell it to let chosen instances never join (`never-join` in the control file).
"""

from __future__ import annotations

import argparse
import base64
import email
import json
import re
import shlex
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import boto3
import requests
import yaml

KUBELET_VERSION = "v1.37.2-eks-5c3fd20"
MEMORY_KERNEL_RESERVED = 0.05  # what the OS keeps of the nominal memory; EC2 nodes report ~5% less
EVICTION_HARD_MEMORY_MIB = 100
EPHEMERAL_RESERVED_GIB = 1
EVICTION_NODEFS_FRACTION = 0.10


def log(message: str, **fields: Any) -> None:
    print(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "message": message, **fields}), flush=True)


# User data ---------------------------------------------------------------------------------


class NodeSettings:
    """What a kubelet would take from its user data."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.taints: list[dict[str, str]] = []
        self.max_pods: int | None = None
        self.family = "unknown"


def parse_taint(text: str) -> dict[str, str]:
    """`key=value:Effect` or `key:Effect`, as --register-with-taints takes them."""
    key_value, _, effect = text.rpartition(":")
    if not key_value or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"invalid taint {text!r}")
    key, _, value = key_value.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def apply_kubelet_flags(settings: NodeSettings, flags: list[str]) -> None:
    for flag in flags:
        name, _, value = flag.partition("=")
        # Flags reach the kubelet through a shell: `--node-labels="a=b,c=d"` loses its quotes.
        value = " ".join(shlex.split(value)) if value else value
        if name == "--node-labels":
            for pair in filter(None, value.split(",")):
                k, _, v = pair.partition("=")
                settings.labels[k] = v
        elif name == "--register-with-taints":
            settings.taints.extend(parse_taint(t) for t in filter(None, value.split(",")))
        elif name == "--max-pods":
            settings.max_pods = int(value)


def apply_node_config(settings: NodeSettings, doc: dict[str, Any]) -> None:
    kubelet = (doc.get("spec") or {}).get("kubelet") or {}
    apply_kubelet_flags(settings, kubelet.get("flags") or [])
    config = kubelet.get("config") or {}
    if "maxPods" in config:
        settings.max_pods = int(config["maxPods"])
    for taint in config.get("registerWithTaints") or []:
        settings.taints.append({k: v for k, v in taint.items() if k in ("key", "value", "effect")})


def apply_bootstrap_script(settings: NodeSettings, script: str) -> None:
    """AL2: `/etc/eks/bootstrap.sh <cluster> ... --kubelet-extra-args '<flags>'`."""
    for line in script.replace("\\\n", " ").splitlines():
        if "bootstrap.sh" not in line:
            continue
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word == "--kubelet-extra-args" and i + 1 < len(words):
                extra = shlex.split(words[i + 1])
                # --node-labels foo=bar (space-separated) and --node-labels=foo=bar both occur.
                joined, j = [], 0
                while j < len(extra):
                    if extra[j].startswith("--") and "=" not in extra[j] and j + 1 < len(extra) and not extra[j + 1].startswith("--"):
                        joined.append(f"{extra[j]}={extra[j + 1]}")
                        j += 2
                    else:
                        joined.append(extra[j])
                        j += 1
                apply_kubelet_flags(settings, joined)
            elif word.startswith("--kubelet-extra-args="):
                apply_kubelet_flags(settings, shlex.split(word.split("=", 1)[1]))
            elif word == "--use-max-pods" and i + 1 < len(words) and words[i + 1] == "false":
                pass


def apply_bottlerocket(settings: NodeSettings, text: str) -> None:
    doc = tomllib.loads(text)
    kubernetes = (doc.get("settings") or {}).get("kubernetes") or {}
    for k, v in (kubernetes.get("node-labels") or {}).items():
        settings.labels[k] = str(v)
    for key, values in (kubernetes.get("node-taints") or {}).items():
        for value in values if isinstance(values, list) else [values]:
            v, _, effect = str(value).rpartition(":")
            taint = {"key": key, "effect": effect}
            if v:
                taint["value"] = v
            settings.taints.append(taint)
    if "max-pods" in kubernetes:
        settings.max_pods = int(kubernetes["max-pods"])


def parse_user_data(raw: str) -> NodeSettings:
    """Read labels, taints and max pods from any of the three EKS AMI families' user data."""
    settings = NodeSettings()
    text = raw.strip()
    parts: list[tuple[str, str]] = []
    if text.startswith("MIME-Version") or "Content-Type: multipart" in text[:500]:
        message = email.message_from_string(text)
        for part in message.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            parts.append((part.get_content_type(), (payload or b"").decode("utf-8", "replace")))
    else:
        parts.append(("", text))
    for content_type, body in parts:
        stripped = body.lstrip()
        if content_type == "application/node.eks.aws" or "kind: NodeConfig" in body:
            settings.family = "AL2023"
            for doc in yaml.safe_load_all(body):
                if isinstance(doc, dict) and doc.get("kind") == "NodeConfig":
                    apply_node_config(settings, doc)
        elif "bootstrap.sh" in body:
            settings.family = "AL2"
            apply_bootstrap_script(settings, body)
        elif stripped.startswith("[settings") or "[settings." in body:
            settings.family = "Bottlerocket"
            apply_bottlerocket(settings, body)
    return settings


# Capacity ----------------------------------------------------------------------------------


def kube_reserved_cpu_millis(vcpus: int) -> float:
    """EKS AMI: 6% of the first core, 1% of the second, 0.5% of the next two, 0.25% above."""
    reserved = 0.0
    for core in range(vcpus):
        reserved += 60 if core == 0 else 10 if core == 1 else 5 if core < 4 else 2.5
    return reserved


def node_resources(info: dict[str, Any], max_pods: int, volume_gib: int) -> tuple[dict[str, str], dict[str, str]]:
    vcpus = int(info["vcpu"])
    memory_mib = int(info["memory_mib"])
    capacity_mem_ki = int(memory_mib * (1 - MEMORY_KERNEL_RESERVED)) * 1024
    reserved_mem_mib = 11 * max_pods + 255  # EKS AMI kube-reserved memory
    alloc_mem_ki = capacity_mem_ki - (reserved_mem_mib + EVICTION_HARD_MEMORY_MIB) * 1024
    storage_ki = volume_gib * 1024 * 1024
    alloc_storage = int((storage_ki - EPHEMERAL_RESERVED_GIB * 1024 * 1024) * (1 - EVICTION_NODEFS_FRACTION))
    cpu_alloc = vcpus * 1000 - kube_reserved_cpu_millis(vcpus)
    capacity = {"cpu": str(vcpus), "memory": f"{capacity_mem_ki}Ki", "pods": str(max_pods), "ephemeral-storage": f"{storage_ki}Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    allocatable = {"cpu": f"{int(cpu_alloc)}m", "memory": f"{alloc_mem_ki}Ki", "pods": str(max_pods), "ephemeral-storage": str(alloc_storage * 1024), "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
    gpus = info.get("gpu_count") or 0
    if gpus and (info.get("gpu_manufacturer") or "").lower() == "nvidia":
        capacity["nvidia.com/gpu"] = allocatable["nvidia.com/gpu"] = str(gpus)
    if info.get("accelerator_count") and "neuron" in (info.get("accelerator_name") or "").lower():
        capacity["aws.amazon.com/neuron"] = allocatable["aws.amazon.com/neuron"] = str(info["accelerator_count"])
    return capacity, allocatable


def zone_id(zone: str) -> str:
    """us-west-2a -> usw2-az1: the shape of EC2 zone IDs (the real mapping is per account)."""
    parts = zone[:-1].split("-")
    return f"{parts[0]}{parts[1][0]}{parts[2]}-az{ord(zone[-1]) - ord('a') + 1}"


# The registrar -----------------------------------------------------------------------------


class Registrar:
    def __init__(self, args: argparse.Namespace):
        self.cluster = args.cluster
        self.control_file: Path = args.control
        self.instance_types = json.loads((args.data / "instance-types.json").read_text())
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=args.region)
        self.ec2 = session.client("ec2", endpoint_url=args.aws_endpoint)
        self.iam = session.client("iam", endpoint_url=args.aws_endpoint)
        self.eks = session.client("eks", endpoint_url=args.aws_endpoint)
        self.api = args.apiserver.rstrip("/")
        self.http = requests.Session()
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the cluster CA
        self.http.cert = (str(args.client_cert), str(args.client_key))
        self.http.verify = str(args.ca)
        self.first_seen: dict[str, float] = {}
        self.refused: dict[str, str] = {}

    def control(self) -> dict[str, Any]:
        try:
            return json.loads(self.control_file.read_text())
        except FileNotFoundError:
            return {}

    def instances(self) -> list[dict[str, Any]]:
        found, token = [], None
        while True:
            kwargs: dict[str, Any] = {"Filters": [{"Name": "tag-key", "Values": [f"kubernetes.io/cluster/{self.cluster}"]}]}
            if token:
                kwargs["NextToken"] = token
            page = self.ec2.describe_instances(**kwargs)
            found.extend(i for r in page["Reservations"] for i in r["Instances"])
            token = page.get("NextToken")
            if not token:
                return found

    def nodes(self) -> dict[str, str]:
        """providerID -> Node name, for the Nodes that have one."""
        r = self.http.get(f"{self.api}/api/v1/nodes", timeout=10)
        r.raise_for_status()
        return {n["spec"].get("providerID", ""): n["metadata"]["name"] for n in r.json()["items"] if n["spec"].get("providerID")}

    def authorised(self, instance: dict[str, Any]) -> str | None:
        """None when the instance's role may join; otherwise why the kubelet would be refused."""
        profile_arn = (instance.get("IamInstanceProfile") or {}).get("Arn")
        if not profile_arn:
            return "the instance has no IAM instance profile, so the kubelet has no credentials"
        profile_name = profile_arn.rsplit("/", 1)[-1]
        try:
            roles = self.iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Roles"]
        except self.iam.exceptions.NoSuchEntityException:
            return f"instance profile {profile_name} does not exist"
        if not roles:
            return f"instance profile {profile_name} has no role"
        role_arn = roles[0]["Arn"]
        # aws-auth and access entries name the role without its path.
        plain_role = re.sub(r":role/.*/", ":role/", role_arn)
        mode = self.eks.describe_cluster(name=self.cluster)["cluster"].get("accessConfig", {}).get("authenticationMode", "CONFIG_MAP")
        if "API" in mode:
            try:
                entry = self.eks.describe_access_entry(clusterName=self.cluster, principalArn=plain_role)["accessEntry"]
                if entry.get("type") in ("EC2_LINUX", "EC2_WINDOWS", "EC2") or "system:nodes" in entry.get("kubernetesGroups", []):
                    return None
            except self.eks.exceptions.ResourceNotFoundException:
                pass
        if "CONFIG_MAP" in mode:
            r = self.http.get(f"{self.api}/api/v1/namespaces/kube-system/configmaps/aws-auth", timeout=10)
            if r.status_code == 200:
                try:
                    rows = yaml.safe_load((r.json().get("data") or {}).get("mapRoles") or "[]") or []
                except yaml.YAMLError as e:
                    return f"aws-auth mapRoles is not valid YAML: {e}"
                for row in rows:
                    if isinstance(row, dict) and row.get("rolearn") in (role_arn, plain_role) and "system:nodes" in (row.get("groups") or []):
                        return None
        return f"role {role_arn} is not mapped to system:nodes (authentication mode {mode}: no EC2_LINUX access entry and no aws-auth mapRoles row)"

    def never_join(self, instance: dict[str, Any], control: dict[str, Any]) -> bool:
        rules = control.get("never_join") or {}
        if instance["InstanceId"] in (rules.get("instances") or []):
            return True
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        return any(tags.get(k) == v for k, v in (rules.get("tags") or {}).items())

    def node_for(self, instance: dict[str, Any]) -> dict[str, Any]:
        raw = self.ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")["UserData"].get("Value", "")
        settings = parse_user_data(base64.b64decode(raw).decode("utf-8", "replace") if raw else "")
        type_name = instance["InstanceType"]
        info = self.instance_types.get(type_name)
        if info is None:
            raise ValueError(f"unknown instance type {type_name}")
        max_pods = settings.max_pods or int(info.get("eni_limited_max_pods") or 110)
        capacity, allocatable = node_resources(info, max_pods, 20)
        zone = instance["Placement"]["AvailabilityZone"]
        name = instance["PrivateDnsName"]
        arch = info.get("arch") or "amd64"
        lifecycle = instance.get("InstanceLifecycle")
        labels = {
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "kubernetes.io/hostname": name,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
            "beta.kubernetes.io/instance-type": type_name,
            "node.kubernetes.io/instance-type": type_name,
            "topology.kubernetes.io/zone": zone,
            "topology.kubernetes.io/region": zone[:-1],
            "failure-domain.beta.kubernetes.io/zone": zone,
            "failure-domain.beta.kubernetes.io/region": zone[:-1],
            "topology.k8s.aws/zone-id": zone_id(zone),
            **settings.labels,
        }
        ip = instance.get("PrivateIpAddress", "")
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {"alpha.kubernetes.io/provided-node-ip": ip, "node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            },
            "spec": {"providerID": f"aws:///{zone}/{instance['InstanceId']}", "taints": settings.taints},
            "status": {
                "capacity": capacity,
                "allocatable": allocatable,
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "InternalDNS", "address": name}, {"type": "Hostname", "address": name}],
                "nodeInfo": {
                    "architecture": arch,
                    "operatingSystem": "linux",
                    "osImage": {"AL2023": "Amazon Linux 2023.9.20261110", "AL2": "Amazon Linux 2", "Bottlerocket": "Bottlerocket OS 1.52.0 (aws-k8s-1.37)"}.get(settings.family, "Amazon Linux 2023.9.20261110"),
                    "kernelVersion": "6.12.40-64.114.amzn2023.x86_64" if arch == "amd64" else "6.12.40-64.114.amzn2023.aarch64",
                    "containerRuntimeVersion": "containerd://2.1.4",
                    "kubeletVersion": KUBELET_VERSION,
                    "kubeProxyVersion": "",
                    "machineID": instance["InstanceId"].replace("-", "") + "0" * 12,
                    "systemUUID": "ec2" + instance["InstanceId"][2:],
                    "bootID": instance["InstanceId"],
                },
            },
        }

    def step(self) -> None:
        control = self.control()
        boot_delay = float(control.get("boot_delay_seconds", 2.0))
        instances = self.instances()
        nodes = self.nodes()
        now = time.time()
        live = set()
        for instance in instances:
            iid = instance["InstanceId"]
            state = instance["State"]["Name"]
            provider_id = f"aws:///{instance['Placement']['AvailabilityZone']}/{iid}"
            if state not in ("pending", "running"):
                continue
            live.add(provider_id)
            if provider_id in nodes or state != "running":
                continue
            self.first_seen.setdefault(iid, now)
            if now - self.first_seen[iid] < boot_delay:
                continue
            if self.never_join(instance, control):
                if self.refused.get(iid) != "never-join":
                    self.refused[iid] = "never-join"
                    log("instance will never join (told so by the control file)", instance=iid)
                continue
            reason = self.authorised(instance)
            if reason:
                if self.refused.get(iid) != reason:
                    self.refused[iid] = reason
                    log("kubelet cannot register: unauthorised", instance=iid, reason=reason)
                continue
            try:
                node = self.node_for(instance)
            except Exception as e:
                if self.refused.get(iid) != str(e):
                    self.refused[iid] = str(e)
                    log("kubelet cannot register", instance=iid, reason=str(e))
                continue
            r = self.http.post(f"{self.api}/api/v1/nodes", json=node, timeout=10)
            if r.status_code == 201:
                self.refused.pop(iid, None)
                log("registered node", instance=iid, node=node["metadata"]["name"], labels=node["metadata"]["labels"], taints=node["spec"]["taints"])
            elif r.status_code != 409:
                log("creating node failed", instance=iid, status=r.status_code, body=r.text[:500])
        for provider_id, node_name in nodes.items():
            if provider_id.startswith("aws:///") and provider_id not in live:
                r = self.http.delete(f"{self.api}/api/v1/nodes/{node_name}", timeout=10)
                if r.status_code in (200, 202):
                    log("deleted node: its instance is gone", node=node_name, provider_id=provider_id)

    def run(self, interval: float) -> None:
        log("registrar started", cluster=self.cluster)
        while True:
            try:
                self.step()
            except Exception as e:  # keep serving; the next step retries
                log("registrar step failed", error=repr(e))
            time.sleep(interval)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--aws-endpoint", required=True)
    parser.add_argument("--apiserver", required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--client-cert", type=Path, required=True)
    parser.add_argument("--client-key", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    Registrar(args).run(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())

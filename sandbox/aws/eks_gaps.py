"""EKS operations moto lacks, served with the real REST-JSON wire format.

moto 5.2 knows clusters, node groups and Fargate profiles but not access entries, access
policies, Pod Identity associations or add-ons, and its DescribeCluster has no
`accessConfig`. karpctl calls all of them through the unmodified AWS SDK, so they are
answered here: stateful, validated against moto's own clusters, with the status codes and
`x-amzn-ErrorType` headers the real service uses, so SDK error matching works unchanged.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

# The access policies EKS publishes (ListAccessPolicies); karpctl may associate these.
ACCESS_POLICIES = [
    "AmazonEKSAdminPolicy",
    "AmazonEKSClusterAdminPolicy",
    "AmazonEKSAdminViewPolicy",
    "AmazonEKSEditPolicy",
    "AmazonEKSViewPolicy",
    "AmazonEKSAutoNodePolicy",
]

# Add-ons with the versions DescribeAddonVersions reports; the Pod Identity agent is what
# karpctl ensures before creating associations.
ADDON_VERSIONS = {
    "eks-pod-identity-agent": ["v1.3.10-eksbuild.1", "v1.3.9-eksbuild.3"],
    "vpc-cni": ["v1.21.1-eksbuild.1"],
    "coredns": ["v1.12.4-eksbuild.1"],
    "kube-proxy": ["v1.37.2-eksbuild.1"],
}

ACCESS_ENTRY_TYPES = {"STANDARD", "EC2_LINUX", "EC2_WINDOWS", "FARGATE_LINUX", "EC2", "HYBRID_LINUX"}


class EksError(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def not_found(message: str) -> EksError:
    return EksError(404, "ResourceNotFoundException", message)


def invalid(message: str) -> EksError:
    return EksError(400, "InvalidParameterException", message)


class EksGaps:
    """State and handlers for the operations above, keyed by (account, region, cluster)."""

    def __init__(self, account_id: str, cluster_exists: Callable[[str, str], bool], default_auth_mode: str):
        self.account_id = account_id
        self.cluster_exists = cluster_exists
        self.lock = threading.Lock()
        self.access_entries: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.associated_policies: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        self.pod_identity: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.addons: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.auth_modes: dict[tuple[str, str], str] = {}
        self.default_auth_mode = default_auth_mode

    # Routing ---------------------------------------------------------------------------

    ROUTES: list[tuple[str, str, str]] = [
        ("GET", r"^/access-policies$", "list_access_policies"),
        ("GET", r"^/addons/supported-versions$", "describe_addon_versions"),
        ("POST", r"^/clusters/(?P<cluster>[^/]+)/access-entries$", "create_access_entry"),
        ("GET", r"^/clusters/(?P<cluster>[^/]+)/access-entries$", "list_access_entries"),
        ("GET", r"^/clusters/(?P<cluster>[^/]+)/access-entries/(?P<principal>[^/]+)$", "describe_access_entry"),
        ("POST", r"^/clusters/(?P<cluster>[^/]+)/access-entries/(?P<principal>[^/]+)$", "update_access_entry"),
        ("DELETE", r"^/clusters/(?P<cluster>[^/]+)/access-entries/(?P<principal>[^/]+)$", "delete_access_entry"),
        ("POST", r"^/clusters/(?P<cluster>[^/]+)/access-entries/(?P<principal>[^/]+)/access-policies$", "associate_access_policy"),
        ("GET", r"^/clusters/(?P<cluster>[^/]+)/access-entries/(?P<principal>[^/]+)/access-policies$", "list_associated_access_policies"),
        ("DELETE", r"^/clusters/(?P<cluster>[^/]+)/access-entries/(?P<principal>[^/]+)/access-policies/(?P<policy>[^/]+)$", "disassociate_access_policy"),
        ("POST", r"^/clusters/(?P<cluster>[^/]+)/pod-identity-associations$", "create_pod_identity_association"),
        ("GET", r"^/clusters/(?P<cluster>[^/]+)/pod-identity-associations$", "list_pod_identity_associations"),
        ("GET", r"^/clusters/(?P<cluster>[^/]+)/pod-identity-associations/(?P<id>[^/]+)$", "describe_pod_identity_association"),
        ("POST", r"^/clusters/(?P<cluster>[^/]+)/pod-identity-associations/(?P<id>[^/]+)$", "update_pod_identity_association"),
        ("DELETE", r"^/clusters/(?P<cluster>[^/]+)/pod-identity-associations/(?P<id>[^/]+)$", "delete_pod_identity_association"),
        ("POST", r"^/clusters/(?P<cluster>[^/]+)/addons$", "create_addon"),
        ("GET", r"^/clusters/(?P<cluster>[^/]+)/addons$", "list_addons"),
        ("GET", r"^/clusters/(?P<cluster>[^/]+)/addons/(?P<addon>[^/]+)$", "describe_addon"),
        ("POST", r"^/clusters/(?P<cluster>[^/]+)/addons/(?P<addon>[^/]+)/update$", "update_addon"),
        ("DELETE", r"^/clusters/(?P<cluster>[^/]+)/addons/(?P<addon>[^/]+)$", "delete_addon"),
    ]

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for route_method, pattern, handler in self.ROUTES:
            if route_method != method:
                continue
            m = re.match(pattern, path)
            if m:
                return handler, {k: unquote(v) for k, v in m.groupdict().items()}
        return None

    def handle(self, region: str, method: str, path: str, query: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one request, or return None-equivalent status 0 when it is not ours."""
        found = self.match(method, path)
        if found is None:
            return 0, {}, b""
        handler, params = found
        try:
            payload = json.loads(body) if body else {}
            if not isinstance(payload, dict):
                raise invalid("request body must be a JSON object")
            q = {k: v[0] for k, v in parse_qs(query).items()}
            if "cluster" in params and not self.cluster_exists(region, params["cluster"]):
                raise not_found(f"No cluster found for name: {params['cluster']}.")
            with self.lock:
                result = getattr(self, handler)(region, params, q, payload)
            return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
        except EksError as e:
            headers = {"Content-Type": "application/json", "x-amzn-ErrorType": e.error_type}
            return e.status, headers, json.dumps({"message": e.message}).encode()

    # Cluster access configuration --------------------------------------------------------

    def auth_mode(self, region: str, cluster: str) -> str:
        return self.auth_modes.get((region, cluster), self.default_auth_mode)

    def set_auth_mode(self, region: str, cluster: str, mode: str) -> None:
        self.auth_modes[(region, cluster)] = mode

    def _require_api_mode(self, region: str, cluster: str) -> None:
        if "API" not in self.auth_mode(region, cluster):
            raise invalid(
                "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] "
                "to perform this operation."
            )

    # Access entries ----------------------------------------------------------------------

    def _entries(self, region: str, cluster: str) -> dict[str, dict[str, Any]]:
        return self.access_entries.setdefault((region, cluster), {})

    def _entry(self, region: str, cluster: str, principal: str) -> dict[str, Any]:
        entry = self._entries(region, cluster).get(principal)
        if entry is None:
            raise not_found(f"The specified principalArn could not be found. You can view your available access entries with 'list-access-entries'.")
        return entry

    def create_access_entry(self, region, params, q, body):
        cluster = params["cluster"]
        self._require_api_mode(region, cluster)
        principal = body.get("principalArn")
        if not principal or not re.match(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:", principal):
            raise invalid("principalArn must be the ARN of an IAM role or user")
        entry_type = body.get("type", "STANDARD")
        if entry_type not in ACCESS_ENTRY_TYPES:
            raise invalid(f"type must be one of {sorted(ACCESS_ENTRY_TYPES)}")
        groups = body.get("kubernetesGroups") or []
        if entry_type != "STANDARD" and (groups or body.get("username")):
            raise invalid(f"kubernetesGroups and username cannot be set for access entries of type {entry_type}")
        entries = self._entries(region, cluster)
        if principal in entries:
            raise EksError(409, "ResourceInUseException", f"The specified access entry resource is already in use on this cluster.")
        now = time.time()
        if entry_type == "EC2_LINUX":
            username = "system:node:{{EC2PrivateDNSName}}"
        else:
            username = body.get("username") or principal
        entry = {
            "clusterName": cluster,
            "principalArn": principal,
            "kubernetesGroups": groups,
            "accessEntryArn": f"arn:aws:eks:{region}:{self.account_id}:access-entry/{cluster}/{principal.split(':')[-1].replace('/', '-')}/{uuid.uuid4()}",
            "createdAt": now,
            "modifiedAt": now,
            "tags": body.get("tags") or {},
            "username": username,
            "type": entry_type,
        }
        entries[principal] = entry
        return {"accessEntry": entry}

    def list_access_entries(self, region, params, q, body):
        self._require_api_mode(region, params["cluster"])
        entries = self._entries(region, params["cluster"])
        arns = sorted(entries)
        if q.get("associatedPolicyArn"):
            arns = [a for a in arns if q["associatedPolicyArn"] in self.associated_policies.get((region, params["cluster"], a), {})]
        return paginate("accessEntries", arns, q)

    def describe_access_entry(self, region, params, q, body):
        self._require_api_mode(region, params["cluster"])
        return {"accessEntry": self._entry(region, params["cluster"], params["principal"])}

    def update_access_entry(self, region, params, q, body):
        entry = self._entry(region, params["cluster"], params["principal"])
        if "kubernetesGroups" in body:
            if entry["type"] != "STANDARD":
                raise invalid(f"kubernetesGroups cannot be set for access entries of type {entry['type']}")
            entry["kubernetesGroups"] = body["kubernetesGroups"]
        if "username" in body:
            entry["username"] = body["username"]
        entry["modifiedAt"] = time.time()
        return {"accessEntry": entry}

    def delete_access_entry(self, region, params, q, body):
        self._require_api_mode(region, params["cluster"])
        self._entry(region, params["cluster"], params["principal"])
        del self._entries(region, params["cluster"])[params["principal"]]
        self.associated_policies.pop((region, params["cluster"], params["principal"]), None)
        return {}

    def associate_access_policy(self, region, params, q, body):
        entry = self._entry(region, params["cluster"], params["principal"])
        policy = body.get("policyArn", "")
        names = {f"arn:aws:eks::aws:cluster-access-policy/{n}" for n in ACCESS_POLICIES}
        if policy not in names:
            raise invalid(f"The policyArn {policy!r} is not a valid EKS access policy")
        scope = body.get("accessScope") or {}
        if scope.get("type") not in ("cluster", "namespace"):
            raise invalid("accessScope.type must be cluster or namespace")
        now = time.time()
        policies = self.associated_policies.setdefault((region, params["cluster"], entry["principalArn"]), {})
        associated = policies.get(policy, {"policyArn": policy, "associatedAt": now})
        associated.update({"accessScope": {"type": scope["type"], "namespaces": scope.get("namespaces", [])}, "modifiedAt": now})
        policies[policy] = associated
        return {"clusterName": params["cluster"], "principalArn": entry["principalArn"], "associatedAccessPolicy": associated}

    def list_associated_access_policies(self, region, params, q, body):
        entry = self._entry(region, params["cluster"], params["principal"])
        policies = self.associated_policies.get((region, params["cluster"], entry["principalArn"]), {})
        result = paginate("associatedAccessPolicies", [policies[k] for k in sorted(policies)], q)
        result.update({"clusterName": params["cluster"], "principalArn": entry["principalArn"]})
        return result

    def disassociate_access_policy(self, region, params, q, body):
        entry = self._entry(region, params["cluster"], params["principal"])
        policies = self.associated_policies.get((region, params["cluster"], entry["principalArn"]), {})
        if params["policy"] not in policies:
            raise not_found("The specified access policy is not associated with this access entry.")
        del policies[params["policy"]]
        return {}

    def list_access_policies(self, region, params, q, body):
        items = [{"name": n, "arn": f"arn:aws:eks::aws:cluster-access-policy/{n}"} for n in ACCESS_POLICIES]
        return paginate("accessPolicies", items, q)

    # Pod Identity associations -----------------------------------------------------------

    def _associations(self, region: str, cluster: str) -> dict[str, dict[str, Any]]:
        return self.pod_identity.setdefault((region, cluster), {})

    def _association(self, region: str, cluster: str, assoc_id: str) -> dict[str, Any]:
        assoc = self._associations(region, cluster).get(assoc_id)
        if assoc is None:
            raise not_found(f"Pod Identity association {assoc_id} not found.")
        return assoc

    def create_pod_identity_association(self, region, params, q, body):
        cluster = params["cluster"]
        for field in ("namespace", "serviceAccount", "roleArn"):
            if not body.get(field):
                raise invalid(f"{field} is required")
        if not re.match(r"^arn:aws[a-z-]*:iam::\d{12}:role/", body["roleArn"]):
            raise invalid("roleArn must be the ARN of an IAM role")
        for existing in self._associations(region, cluster).values():
            if existing["namespace"] == body["namespace"] and existing["serviceAccount"] == body["serviceAccount"]:
                raise EksError(409, "ResourceInUseException", "Association already exists: " + existing["associationArn"])
        assoc_id = "a-" + uuid.uuid4().hex[:17]
        now = time.time()
        assoc = {
            "clusterName": cluster,
            "namespace": body["namespace"],
            "serviceAccount": body["serviceAccount"],
            "roleArn": body["roleArn"],
            "associationArn": f"arn:aws:eks:{region}:{self.account_id}:podidentityassociation/{cluster}/{assoc_id}",
            "associationId": assoc_id,
            "tags": body.get("tags") or {},
            "createdAt": now,
            "modifiedAt": now,
            "disableSessionTags": bool(body.get("disableSessionTags", False)),
        }
        if body.get("targetRoleArn"):
            assoc["targetRoleArn"] = body["targetRoleArn"]
        self._associations(region, cluster)[assoc_id] = assoc
        return {"association": assoc}

    def list_pod_identity_associations(self, region, params, q, body):
        items = []
        for a in self._associations(region, params["cluster"]).values():
            if q.get("namespace") and a["namespace"] != q["namespace"]:
                continue
            if q.get("serviceAccount") and a["serviceAccount"] != q["serviceAccount"]:
                continue
            items.append({k: a[k] for k in ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId")})
        items.sort(key=lambda a: a["associationId"])
        return paginate("associations", items, q)

    def describe_pod_identity_association(self, region, params, q, body):
        return {"association": self._association(region, params["cluster"], params["id"])}

    def update_pod_identity_association(self, region, params, q, body):
        assoc = self._association(region, params["cluster"], params["id"])
        if body.get("roleArn"):
            assoc["roleArn"] = body["roleArn"]
        assoc["modifiedAt"] = time.time()
        return {"association": assoc}

    def delete_pod_identity_association(self, region, params, q, body):
        assoc = self._association(region, params["cluster"], params["id"])
        del self._associations(region, params["cluster"])[params["id"]]
        return {"association": assoc}

    # Add-ons -------------------------------------------------------------------------------

    def _addons(self, region: str, cluster: str) -> dict[str, dict[str, Any]]:
        return self.addons.setdefault((region, cluster), {})

    def _addon(self, region: str, cluster: str, name: str) -> dict[str, Any]:
        addon = self._addons(region, cluster).get(name)
        if addon is None:
            raise not_found(f"No addon: {name} found in cluster: {cluster}")
        return addon

    def create_addon(self, region, params, q, body):
        cluster = params["cluster"]
        name = body.get("addonName", "")
        if name not in ADDON_VERSIONS:
            raise invalid(f"Addon {name} specified is not supported")
        if name in self._addons(region, cluster):
            raise EksError(409, "ResourceInUseException", f"Addon already exists: {name}")
        version = body.get("addonVersion") or ADDON_VERSIONS[name][0]
        if version not in ADDON_VERSIONS[name]:
            raise invalid(f"Addon version {version} is not supported for {name}")
        now = time.time()
        addon = {
            "addonName": name,
            "clusterName": cluster,
            "status": "ACTIVE",
            "addonVersion": version,
            "health": {"issues": []},
            "addonArn": f"arn:aws:eks:{region}:{self.account_id}:addon/{cluster}/{name}/{uuid.uuid4()}",
            "createdAt": now,
            "modifiedAt": now,
            "tags": body.get("tags") or {},
        }
        if body.get("serviceAccountRoleArn"):
            addon["serviceAccountRoleArn"] = body["serviceAccountRoleArn"]
        if body.get("configurationValues"):
            addon["configurationValues"] = body["configurationValues"]
        self._addons(region, cluster)[name] = addon
        return {"addon": addon}

    def list_addons(self, region, params, q, body):
        return paginate("addons", sorted(self._addons(region, params["cluster"])), q)

    def describe_addon(self, region, params, q, body):
        return {"addon": self._addon(region, params["cluster"], params["addon"])}

    def update_addon(self, region, params, q, body):
        addon = self._addon(region, params["cluster"], params["addon"])
        if body.get("addonVersion"):
            addon["addonVersion"] = body["addonVersion"]
        addon["modifiedAt"] = time.time()
        return {"update": {"id": str(uuid.uuid4()), "status": "Successful", "type": "AddonUpdate", "params": [], "createdAt": time.time(), "errors": []}}

    def delete_addon(self, region, params, q, body):
        addon = self._addon(region, params["cluster"], params["addon"])
        del self._addons(region, params["cluster"])[params["addon"]]
        return {"addon": dict(addon, status="DELETING")}

    def describe_addon_versions(self, region, params, q, body):
        names = [q["addonName"]] if q.get("addonName") else sorted(ADDON_VERSIONS)
        k8s = q.get("kubernetesVersion", "1.37")
        items = []
        for name in names:
            if name not in ADDON_VERSIONS:
                continue
            versions = [
                {
                    "addonVersion": v,
                    "architecture": ["amd64", "arm64"],
                    "compatibilities": [{"clusterVersion": k8s, "platformVersions": ["*"], "defaultVersion": i == 0}],
                    "requiresConfiguration": False,
                }
                for i, v in enumerate(ADDON_VERSIONS[name])
            ]
            items.append({"addonName": name, "type": "security" if "identity" in name else "networking", "addonVersions": versions, "publisher": "eks", "owner": "aws"})
        return paginate("addons", items, q)


def paginate(key: str, items: list[Any], q: dict[str, str]) -> dict[str, Any]:
    """EKS list pagination: `maxResults` per page and an opaque `nextToken`."""
    try:
        max_results = int(q.get("maxResults", "100"))
        start = int(q.get("nextToken") or "0")
    except ValueError:
        raise invalid("invalid maxResults or nextToken")
    if not 1 <= max_results <= 100:
        raise invalid("maxResults must be between 1 and 100")
    page = items[start : start + max_results]
    result: dict[str, Any] = {key: page}
    if start + max_results < len(items):
        result["nextToken"] = str(start + max_results)
    return result

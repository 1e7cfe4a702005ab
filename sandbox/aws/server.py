"""The sandbox's AWS endpoint: moto's server in-process, with the gaps filled in front of it.

One HTTP endpoint on 127.0.0.1 answers every AWS service, as moto's server does; product
code reaches it through the SDK's standard `AWS_ENDPOINT_URL`. In front of moto sit:
- EKS access entries, access policies, Pod Identity associations, add-ons and the
  cluster's `accessConfig` (eks_gaps.py); the Pricing API (pricing.py);
- `/_sandbox/...` control routes for tests: the log of calls made (so a test can count
  mutating calls), one-shot fault injection (errors and throttling in each protocol's real
  wire format), setting a cluster's authentication mode in either direction
  (`POST /_sandbox/auth-mode`), readiness, and interruptions (`POST /_sandbox/interrupt`:
  spot warnings, rebalance recommendations, scheduled changes, stops and terminations
  published as EC2 and AWS Health publish them, through the account's EventBridge rules;
  interruption.py);
- EC2 CreateFleet as AWS answers it where moto does not: launched instances get the launch
  template's instance profile and security groups (moto drops both), and a test can make
  chosen (instance type, zone) overrides fail with InsufficientInstanceCapacity — answered,
  as AWS does, with HTTP 200 and one `errorSet` item per refused override while the fleet
  launches from the remaining ones (`{"service": "ec2", "operation": "CreateFleet",
  "code": "InsufficientInstanceCapacity", "offerings": [{"instance_type": ..., "zone": ...}]}`).
After it starts serving, it seeds an EKS-shaped account (seed.py) through its own API.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

# moto reads this at import time; without it AWS managed policies do not exist.
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authorizer import Authorizer, decode_message, denial_response  # noqa: E402
from eks_gaps import EksGaps  # noqa: E402
from identity import Identities, IdentityError, sts_error  # noqa: E402
from interruption import InterruptError, Interruptions  # noqa: E402
from pricing import Pricing, PricingError  # noqa: E402
import node_groups  # noqa: E402
import seed  # noqa: E402

ACCOUNT_ID = "123456789012"
# Query-protocol services answer errors in XML; the rest in JSON.
QUERY_PROTOCOL = {"ec2", "iam", "sts", "autoscaling", "sns", "elasticloadbalancing", "cloudformation", "rds"}
READ_PREFIXES = ("Describe", "Get", "List", "Head", "Search", "Lookup")
AUTH_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
EKS_REST_OPERATIONS = [
    ("GET", r"^/clusters$", "ListClusters"),
    ("POST", r"^/clusters$", "CreateCluster"),
    ("GET", r"^/clusters/[^/]+$", "DescribeCluster"),
    ("DELETE", r"^/clusters/[^/]+$", "DeleteCluster"),
    ("POST", r"^/clusters/[^/]+/update-config$", "UpdateClusterConfig"),
    ("GET", r"^/clusters/[^/]+/node-groups$", "ListNodegroups"),
    ("POST", r"^/clusters/[^/]+/node-groups$", "CreateNodegroup"),
    ("GET", r"^/clusters/[^/]+/node-groups/[^/]+$", "DescribeNodegroup"),
    ("DELETE", r"^/clusters/[^/]+/node-groups/[^/]+$", "DeleteNodegroup"),
    ("POST", r"^/clusters/[^/]+/node-groups/[^/]+/update-config$", "UpdateNodegroupConfig"),
    ("GET", r"^/access-policies$", "ListAccessPolicies"),
    ("GET", r"^/addons/supported-versions$", "DescribeAddonVersions"),
    ("POST", r"^/clusters/[^/]+/access-entries$", "CreateAccessEntry"),
    ("GET", r"^/clusters/[^/]+/access-entries$", "ListAccessEntries"),
    ("GET", r"^/clusters/[^/]+/access-entries/[^/]+$", "DescribeAccessEntry"),
    ("POST", r"^/clusters/[^/]+/access-entries/[^/]+$", "UpdateAccessEntry"),
    ("DELETE", r"^/clusters/[^/]+/access-entries/[^/]+$", "DeleteAccessEntry"),
    ("POST", r"^/clusters/[^/]+/access-entries/[^/]+/access-policies$", "AssociateAccessPolicy"),
    ("GET", r"^/clusters/[^/]+/access-entries/[^/]+/access-policies$", "ListAssociatedAccessPolicies"),
    ("DELETE", r"^/clusters/[^/]+/access-entries/[^/]+/access-policies/.+$", "DisassociateAccessPolicy"),
    ("POST", r"^/clusters/[^/]+/pod-identity-associations$", "CreatePodIdentityAssociation"),
    ("GET", r"^/clusters/[^/]+/pod-identity-associations$", "ListPodIdentityAssociations"),
    ("GET", r"^/clusters/[^/]+/pod-identity-associations/[^/]+$", "DescribePodIdentityAssociation"),
    ("POST", r"^/clusters/[^/]+/pod-identity-associations/[^/]+$", "UpdatePodIdentityAssociation"),
    ("DELETE", r"^/clusters/[^/]+/pod-identity-associations/[^/]+$", "DeletePodIdentityAssociation"),
    ("POST", r"^/clusters/[^/]+/addons$", "CreateAddon"),
    ("GET", r"^/clusters/[^/]+/addons$", "ListAddons"),
    ("GET", r"^/clusters/[^/]+/addons/[^/]+$", "DescribeAddon"),
    ("POST", r"^/clusters/[^/]+/addons/[^/]+/update$", "UpdateAddon"),
    ("DELETE", r"^/clusters/[^/]+/addons/[^/]+$", "DeleteAddon"),
    ("POST", r"^/tags/.+$", "TagResource"),
    ("DELETE", r"^/tags/.+$", "UntagResource"),
    ("GET", r"^/tags/.+$", "ListTagsForResource"),
]


def operation_name(service: str, method: str, path: str, target: str, form: dict[str, list[str]]) -> str:
    if target:
        return target.rsplit(".", 1)[-1]
    if "Action" in form:
        return form["Action"][0]
    if service == "eks":
        for m, pattern, name in EKS_REST_OPERATIONS:
            if m == method and re.match(pattern, path):
                return name
    return f"{method} {path}"


def overrides(params: dict[str, str]) -> dict[tuple[str, str], dict[str, str]]:
    """CreateFleet's overrides by (config number, override number)."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for key, value in params.items():
        m = re.match(r"LaunchTemplateConfigs\.(\d+)\.Overrides\.(\d+)\.(\w+)$", key)
        if m:
            found.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = value
    return found


def override_offering(override: dict[str, str], backend: Any) -> tuple[str, str]:
    zone = override.get("AvailabilityZone", "")
    if not zone and override.get("SubnetId"):
        try:
            zone = backend.get_subnet(override["SubnetId"]).availability_zone
        except Exception:
            zone = ""
    return override.get("InstanceType", ""), zone


def drop_overrides(params: dict[str, str], refused: set[tuple[str, str]], backend: Any) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The request without the refused overrides (renumbered, emptied configs dropped), and
    one error per refused override."""
    kept: dict[str, dict[str, dict[str, str]]] = {}
    errors = []
    for (config, number), override in sorted(overrides(params).items(), key=lambda kv: (int(kv[0][0]), int(kv[0][1]))):
        instance_type, zone = override_offering(override, backend)
        if (instance_type, zone) in refused:
            spec = {k.rsplit(".", 1)[-1]: v for k, v in params.items() if k.startswith(f"LaunchTemplateConfigs.{config}.LaunchTemplateSpecification.")}
            errors.append({**override, "AvailabilityZone": zone, **spec})
        else:
            kept.setdefault(config, {})[number] = override
    rest = {k: v for k, v in params.items() if not k.startswith("LaunchTemplateConfigs.")}
    for new_config, config in enumerate(sorted(kept, key=int), start=1):
        for k, v in params.items():
            prefix = f"LaunchTemplateConfigs.{config}.LaunchTemplateSpecification."
            if k.startswith(prefix):
                rest[f"LaunchTemplateConfigs.{new_config}.LaunchTemplateSpecification.{k[len(prefix):]}"] = v
        for new_number, number in enumerate(sorted(kept[config], key=int), start=1):
            for field, v in kept[config][number].items():
                rest[f"LaunchTemplateConfigs.{new_config}.Overrides.{new_number}.{field}"] = v
    return rest, errors


def error_set(errors: list[dict[str, str]]) -> str:
    """CreateFleet's `errorSet` in EC2's wire format."""
    items = []
    for e in errors:
        spec = "".join(f"<{tag}>{e[key]}</{tag}>" for key, tag in (("LaunchTemplateId", "launchTemplateId"), ("LaunchTemplateName", "launchTemplateName"), ("Version", "version")) if e.get(key))
        override = "".join(f"<{tag}>{e[key]}</{tag}>" for key, tag in (("InstanceType", "instanceType"), ("SubnetId", "subnetId"), ("AvailabilityZone", "availabilityZone")) if e.get(key))
        items.append(
            f"<item><launchTemplateAndOverrides><launchTemplateSpecification>{spec}</launchTemplateSpecification><overrides>{override}</overrides></launchTemplateAndOverrides>"
            f"<lifecycle>on-demand</lifecycle><errorCode>InsufficientInstanceCapacity</errorCode>"
            f"<errorMessage>We currently do not have sufficient {e.get('InstanceType')} capacity in the Availability Zone you requested ({e.get('AvailabilityZone')}).</errorMessage></item>"
        )
    return f"<errorSet>{''.join(items)}</errorSet>"


def fleet_instance_tags(form: dict[str, list[str]]) -> dict[str, str]:
    """The tags CreateFleet asks to put on its instances (TagSpecification ResourceType=instance)."""
    params = {k: v[0] for k, v in form.items()}
    tags: dict[str, str] = {}
    for key, value in params.items():
        m = re.match(r"TagSpecification\.(\d+)\.ResourceType$", key)
        if m and value == "instance":
            prefix = f"TagSpecification.{m.group(1)}.Tag."
            for k, v in params.items():
                t = re.match(re.escape(prefix) + r"(\d+)\.Key$", k)
                if t:
                    tags[v] = params.get(f"{prefix}{t.group(1)}.Value", "")
    return tags


def moto_backend(service: str, region: str) -> Any:
    """moto's backend of one service: IAM and STS are global (keyed by partition)."""
    from moto.backends import get_backend

    return get_backend(service)[ACCOUNT_ID]["aws" if region == "global" else region]


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_PREFIXES) and not operation.startswith(("GET ", "HEAD "))


class Fault:
    """One injected failure: the next `count` calls of service:operation answer this error."""

    def __init__(self, spec: dict[str, Any]):
        self.service = spec["service"]
        self.operation = spec["operation"]
        self.code = spec.get("code", "InternalError")
        self.message = spec.get("message", "injected by the karpctl sandbox")
        self.status = int(spec.get("status", 500))
        self.count = int(spec.get("count", 1))
        # CreateFleet capacity faults: the (instance type, zone) overrides this fault refuses.
        self.offerings = [(o["instance_type"], o["zone"]) for o in spec.get("offerings") or []]

    def response(self) -> tuple[int, dict[str, str], bytes]:
        if self.service == "ec2":
            body = (
                f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{self.code}</Code>"
                f"<Message>{self.message}</Message></Error></Errors><RequestID>sandbox-fault</RequestID></Response>"
            )
            return self.status, {"Content-Type": "text/xml"}, body.encode()
        if self.service in QUERY_PROTOCOL:
            body = (
                f"<ErrorResponse><Error><Type>Sender</Type><Code>{self.code}</Code><Message>{self.message}</Message>"
                f"</Error><RequestId>sandbox-fault</RequestId></ErrorResponse>"
            )
            return self.status, {"Content-Type": "text/xml"}, body.encode()
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": self.code}
        return self.status, headers, json.dumps({"__type": self.code, "message": self.message}).encode()


class SandboxAws:
    """The WSGI app: control routes, injected faults, gap shims, then moto."""

    def __init__(self, moto_app: Callable, eks: EksGaps, pricing: Pricing, interruptions: Interruptions | None = None, service_account_key: Path | None = None):
        self.moto_app = moto_app
        self.eks = eks
        self.pricing = pricing
        self.interruptions = interruptions or Interruptions(ACCOUNT_ID)
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.ready = False
        # Set once the account is seeded: where this endpoint listens, the seed's facts (the
        # cluster's subnets, node role, AMI...) and the instance data, for node groups added
        # later (`POST /_sandbox/nodegroups`) and for UpdateNodegroupConfig.
        self.endpoint = ""
        self.facts: dict[str, Any] = {}
        self.data_dir: Path | None = None
        self.authorizer = Authorizer(ACCOUNT_ID, moto_backend)
        self.identities = Identities(ACCOUNT_ID, moto_backend, lambda region, cluster: eks._associations(region, cluster), service_account_key)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        received = time.time()
        method = environ["REQUEST_METHOD"]
        # Route on the raw path: PATH_INFO is percent-decoded, and EKS puts ARNs (with their
        # `/`) into path segments as %2F.
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        path = raw.split("?", 1)[0]
        query = environ.get("QUERY_STRING", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)

        if path == "/_sandbox/pod-identity/v1/credentials":
            return self.pod_identity(environ.get("HTTP_AUTHORIZATION", ""), start_response)
        if path.startswith("/_sandbox/"):
            return self.control(method, path, body, start_response)

        scope = AUTH_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        region, service = (scope.group(1), scope.group(2)) if scope else ("us-east-1", "unknown")
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        form = parse_qs(body.decode("utf-8", "replace")) if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded") else {}
        if not form and query and "Action=" in query:
            form = parse_qs(query)
        operation = operation_name(service, method, path, target, form)
        if operation == "AssumeRoleWithWebIdentity":
            # Unsigned, as the SDKs send it: the token is the credential.
            service = "sts"
            try:
                self.identities.check_web_identity(form.get("RoleArn", [""])[0], form.get("WebIdentityToken", [""])[0])
            except IdentityError as e:
                status, headers, payload = sts_error(e)
                self.record("sts", operation, region, status, received, denied="sts:AssumeRoleWithWebIdentity")
                start_response(f"{status} Error", list(headers.items()))
                return [payload]

        principal = self.authorizer.principal(environ.get("HTTP_AUTHORIZATION", ""))
        if principal is not None:
            json_protocol = bool(target) or service == "eks"
            try:
                params = json.loads(body or b"{}") if json_protocol else {k: v[0] for k, v in form.items()}
            except ValueError:
                params = {}
            denial = self.authorizer.decide(principal, service, "us-east-1" if service in ("iam",) else region, operation, params, path, method)
            if denial is not None:
                status, headers, payload = denial_response(service, denial, json_protocol)
                self.record(service, operation, region, status, received, principal=principal.arn, denied=denial.check.action)
                start_response(f"{status} Error", list(headers.items()))
                return [payload]
        if service == "sts" and operation == "DecodeAuthorizationMessage":
            return self.decode_authorization_message(form, region, start_response, received)

        if service == "ec2" and operation == "CreateFleet":
            return self.create_fleet(environ, region, form, start_response, received)

        answer = self.injected_fault(service, operation)
        if answer is None:
            answer = self.gap(service, region, method, path, query, body, operation)
        if answer is not None:
            status, headers, payload = answer
            self.record(service, operation, region, status, received)
            start_response(f"{status} {'OK' if status < 400 else 'Error'}", list(headers.items()))
            return [payload]

        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = b"".join(self.moto_app(environ, capture))
        status_code = int(captured["status"].split()[0])
        headers = captured["headers"]
        if service == "eks" and operation == "DescribeCluster" and status_code == 200:
            chunks = self.with_access_config(region, chunks)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(chunks)))]
        if service == "eks" and operation == "UpdateNodegroupConfig" and status_code == 200:
            # EKS moves the group's instances to the new scaling config (node_groups.py).
            parts = path.split("/")
            node_groups.reconcile(self.endpoint, self.facts, region, unquote(parts[2]), unquote(parts[4]))
        self.record(service, operation, region, status_code, received)
        start_response(captured["status"], headers)
        return [chunks]

    def create_fleet(self, environ: dict[str, Any], region: str, form: dict[str, list[str]], start_response: Callable, received: float | None = None) -> Any:
        """CreateFleet through moto, with capacity faults applied and the launch template's
        instance profile and security groups given to what it launched."""
        from urllib.parse import urlencode

        from moto.backends import get_backend

        answer = self.injected_fault("ec2", "CreateFleet")
        tags = fleet_instance_tags(form)
        if answer is not None:
            status, headers, payload = answer
            self.record("ec2", "CreateFleet", region, status, received, tags=tags)
            start_response(f"{status} Error", list(headers.items()))
            return [payload]
        backend = get_backend("ec2")[ACCOUNT_ID][region]
        params = {k: v[0] for k, v in form.items()}
        refused = self.capacity_refusals(params, backend)
        errors = []
        if refused:
            params, errors = drop_overrides(params, refused, backend)
        if errors and not any(k.startswith("LaunchTemplateConfigs.") and ".Overrides." in k for k in params):
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                f"<requestId>sandbox-ice</requestId><fleetId>fleet-{os.urandom(16).hex()}</fleetId>{error_set(errors)}<fleetInstanceSet/></CreateFleetResponse>"
            ).encode()
            self.record("ec2", "CreateFleet", region, 200, received, tags=tags)
            start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
            return [body]
        encoded = urlencode(params).encode()
        environ["wsgi.input"] = io.BytesIO(encoded)
        environ["CONTENT_LENGTH"] = str(len(encoded))
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = b"".join(self.moto_app(environ, capture))
        status_code = int(captured["status"].split()[0])
        headers = captured["headers"]
        if status_code == 200:
            self.give_launch_template_settings(chunks.decode("utf-8", "replace"), params, backend)
            if errors:
                chunks = re.sub(rb"(<CreateFleetResponse[^>]*>)", lambda m: m.group(1) + error_set(errors).encode(), chunks, count=1)
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(chunks)))]
        self.record("ec2", "CreateFleet", region, status_code, received, tags=tags)
        start_response(captured["status"], headers)
        return [chunks]

    def pod_identity(self, token: str, start_response: Callable) -> Any:
        """The EKS Pod Identity agent's credentials endpoint (identity.py)."""
        try:
            creds = self.identities.pod_identity_credentials(token)
            status, doc = 200, creds
        except IdentityError as e:
            status, doc = e.status, {"code": e.code, "message": e.message}
        self.record("eks-auth", "AssumeRoleForPodIdentity", "", status)
        start_response(f"{status} {'OK' if status == 200 else 'Error'}", [("Content-Type", "application/json")])
        return [json.dumps(doc).encode()]

    def decode_authorization_message(self, form: dict[str, list[str]], region: str, start_response: Callable, received: float) -> Any:
        """sts:DecodeAuthorizationMessage for the messages this endpoint's EC2 denials carry."""
        from xml.sax.saxutils import escape

        try:
            decoded = decode_message(form.get("EncodedMessage", [""])[0])
            status = 200
            body = (
                '<DecodeAuthorizationMessageResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><DecodeAuthorizationMessageResult>'
                f"<DecodedMessage>{escape(decoded)}</DecodedMessage></DecodeAuthorizationMessageResult><ResponseMetadata><RequestId>{os.urandom(8).hex()}</RequestId></ResponseMetadata></DecodeAuthorizationMessageResponse>"
            )
        except ValueError:
            status = 400
            body = '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidAuthorizationMessageException</Code><Message>The message is not one this endpoint encoded</Message></Error></ErrorResponse>'
        self.record("sts", "DecodeAuthorizationMessage", region, status, received)
        start_response(f"{status} {'OK' if status == 200 else 'Error'}", [("Content-Type", "text/xml")])
        return [body.encode()]

    def capacity_refusals(self, params: dict[str, str], backend: Any) -> set[tuple[str, str]]:
        """The (type, zone) pairs an active capacity fault refuses among this call's overrides;
        uses up one count of each fault that refused something."""
        asked = {override_offering(o, backend) for o in overrides(params).values()}
        refused: set[tuple[str, str]] = set()
        with self.lock:
            for fault in list(self.faults):
                if fault.service == "ec2" and fault.operation == "CreateFleet#capacity" and fault.count > 0:
                    hit = asked & set(fault.offerings)
                    if hit:
                        refused |= hit
                        fault.count -= 1
                        if fault.count == 0:
                            self.faults.remove(fault)
        return refused

    def give_launch_template_settings(self, response: str, params: dict[str, str], backend: Any) -> None:
        """moto launches fleet instances without the template's IamInstanceProfile and
        SecurityGroupIds; AWS applies both."""
        by_template: dict[str, Any] = {}
        for key, value in params.items():
            m = re.match(r"LaunchTemplateConfigs\.(\d+)\.LaunchTemplateSpecification\.LaunchTemplate(Name|Id)$", key)
            if m:
                try:
                    template = backend.get_launch_template_by_name(value) if m.group(2) == "Name" else backend.get_launch_template(value)
                except Exception:
                    continue
                by_template[template.id] = template
        for item in re.finditer(r"<launchTemplateId>([^<]+)</launchTemplateId>.*?<instanceIds>(.*?)</instanceIds>", response, re.S):
            template = by_template.get(item.group(1))
            if template is None:
                continue
            data = template.latest_version().data
            profile = data.get("IamInstanceProfile") or {}
            groups = data.get("SecurityGroupIds") or []
            for instance_id in re.findall(r"(i-[0-9a-f]+)", item.group(2)):
                if profile and instance_id not in backend.iam_instance_profile_associations:
                    backend.associate_iam_instance_profile(instance_id, iam_instance_profile_name=profile.get("Name"), iam_instance_profile_arn=profile.get("Arn"))
                if groups:
                    instance = backend.get_instance(instance_id)
                    instance.security_groups = [backend.get_security_group_from_id(g) for g in groups if backend.get_security_group_from_id(g)]

    def record(self, service: str, operation: str, region: str, status: int, received: float | None = None, **extra: Any) -> None:
        """One answered call: `time` when it was answered, `received` when it arrived (both
        Unix seconds), plus per-operation fields (CreateFleet: the instances' `tags`, which
        name the NodeClaim, so benchmarks can tie a launch to the pods that asked for it)."""
        with self.lock:
            now = time.time()
            self.calls.append({"service": service, "operation": operation, "region": region, "status": status, "mutating": is_mutating(operation), "time": now, "received": received or now, **extra})

    def injected_fault(self, service: str, operation: str) -> tuple[int, dict[str, str], bytes] | None:
        with self.lock:
            for fault in self.faults:
                if fault.service == service and fault.operation == operation and fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault.response()
        return None

    def gap(self, service: str, region: str, method: str, path: str, query: str, body: bytes, operation: str):
        if service == "eks":
            if operation == "UpdateClusterConfig":
                payload = json.loads(body or b"{}")
                if "accessConfig" in payload:
                    return self.update_access_config(region, unquote(path.split("/")[2]), payload["accessConfig"])
            status, headers, payload = self.eks.handle(region, method, path, query, body)
            if status:
                return status, headers, payload
        if service == "pricing":
            try:
                result = self.pricing.handle(operation, json.loads(body or b"{}"))
                return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(result).encode()
            except PricingError as e:
                return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps({"__type": e.error_type, "message": e.message}).encode()
        return None

    def with_access_config(self, region: str, payload: bytes) -> bytes:
        doc = json.loads(payload)
        cluster = doc.get("cluster", {})
        cluster["accessConfig"] = {
            "authenticationMode": self.eks.auth_mode(region, cluster.get("name", "")),
            "bootstrapClusterCreatorAdminPermissions": True,
        }
        return json.dumps(doc).encode()

    def update_access_config(self, region: str, cluster: str, access: dict[str, Any]):
        order = ["CONFIG_MAP", "API_AND_CONFIG_MAP", "API"]
        current = self.eks.auth_mode(region, cluster)
        wanted = access.get("authenticationMode", current)
        if wanted not in order:
            return 400, {"x-amzn-ErrorType": "InvalidParameterException"}, json.dumps({"message": f"Unsupported authenticationMode {wanted}"}).encode()
        if order.index(wanted) < order.index(current):
            return 400, {"x-amzn-ErrorType": "InvalidRequestException"}, json.dumps({"message": f"Unsupported authentication mode update from {current} to {wanted}"}).encode()
        self.eks.set_auth_mode(region, cluster, wanted)
        update = {"id": os.urandom(16).hex(), "status": "Successful", "type": "AccessConfigUpdate", "params": [{"type": "AuthenticationMode", "value": wanted}], "createdAt": time.time(), "errors": []}
        return 200, {"Content-Type": "application/json"}, json.dumps({"update": update}).encode()

    def control(self, method: str, path: str, body: bytes, start_response: Callable):
        def reply(status: int, doc: Any):
            start_response(f"{status} OK", [("Content-Type", "application/json")])
            return [json.dumps(doc).encode()]

        if path == "/_sandbox/health":
            return reply(200 if self.ready else 503, {"ready": self.ready})
        if path == "/_sandbox/calls":
            with self.lock:
                if method == "DELETE":
                    self.calls.clear()
                    return reply(200, {"calls": []})
                return reply(200, {"calls": list(self.calls)})
        if path == "/_sandbox/faults":
            with self.lock:
                if method == "POST":
                    fault = Fault(json.loads(body))
                    if fault.service == "ec2" and fault.operation == "CreateFleet" and fault.offerings:
                        fault.operation = "CreateFleet#capacity"
                    self.faults.append(fault)
                elif method == "DELETE":
                    self.faults.clear()
                return reply(200, {"faults": [vars(f) for f in self.faults]})
        if path == "/_sandbox/guardrails":
            # Deny-only policies over every evaluated principal, as an organization's SCPs are.
            with self.lock:
                if method == "POST":
                    self.authorizer.guardrails.append(json.loads(body))
                elif method == "DELETE":
                    self.authorizer.guardrails.clear()
                return reply(200, {"guardrails": self.authorizer.guardrails})
        if path == "/_sandbox/denials":
            with self.lock:
                if method == "DELETE":
                    self.authorizer.denials.clear()
                return reply(200, {"denials": list(self.authorizer.denials)})
        if path == "/_sandbox/auth-mode" and method == "POST":
            # Test-only: set a cluster's authentication mode in any direction (EKS itself only
            # moves it forward), so one sandbox can exercise both aws-auth and access entries.
            doc = json.loads(body)
            if doc.get("mode") not in ("CONFIG_MAP", "API_AND_CONFIG_MAP", "API"):
                return reply(400, {"error": f"unknown mode {doc.get('mode')!r}"})
            with self.lock:
                self.eks.set_auth_mode(doc["region"], doc["cluster"], doc["mode"])
            return reply(200, {"mode": doc["mode"]})
        if path == "/_sandbox/nodegroups" and method == "POST":
            # {"name", "instance_type", "count", "max_size", "min_size"?, "labels"?, "taints"?}:
            # a managed node group as EKS builds one (seed.add_managed_node_group).
            doc = json.loads(body or b"{}")
            missing = [k for k in ("name", "instance_type", "count", "max_size") if doc.get(k) in (None, "")]
            if missing:
                return reply(400, {"error": f"missing {', '.join(missing)}"})
            try:
                created = seed.add_managed_node_group(self.endpoint, self.facts, self.data_dir, doc["name"], doc["instance_type"], int(doc["count"]), int(doc["max_size"]), doc.get("labels"), doc.get("taints"), doc.get("min_size"))
            except Exception as e:
                return reply(400, {"error": f"creating node group {doc['name']!r}: {e}"})
            return reply(200, created)
        if path == "/_sandbox/interrupt":
            if method == "GET":
                return reply(200, self.interruptions.describe())
            if method == "POST":
                # {"region", "instance", "kind", "delay"?}: the events go through the
                # account's EventBridge rules; a delayed action runs on a timer here.
                doc = json.loads(body or b"{}")
                missing = [k for k in ("region", "instance", "kind") if not doc.get(k)]
                if missing:
                    return reply(400, {"error": f"missing {', '.join(missing)}"})
                delay = doc.get("delay")
                try:
                    result = self.interruptions.interrupt(doc["region"], doc["instance"], doc["kind"], None if delay is None else float(delay))
                except InterruptError as e:
                    return reply(e.status, {"error": str(e)})
                return reply(200, result)
        return reply(404, {"error": f"no control route {method} {path}"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=Path, required=True, help="JSON: the EKS-shaped account to create")
    parser.add_argument("--data", type=Path, required=True, help="directory with instance-types.json and prices")
    parser.add_argument("--service-account-key", type=Path, help="the cluster's service-account public key (PEM): web identity tokens are checked against it")
    args = parser.parse_args()
    seed_config = json.loads(args.seed.read_text())

    from moto.backends import get_backend

    def cluster_exists(region: str, name: str) -> bool:
        return name in get_backend("eks")[ACCOUNT_ID][region].clusters

    eks = EksGaps(ACCOUNT_ID, cluster_exists, seed_config.get("auth_mode", "API_AND_CONFIG_MAP"))
    pricing = Pricing(args.data / "ondemand-prices-us-east-1.json", args.data / "instance-types.json")
    app = SandboxAws(DomainDispatcherApplication(create_backend_app), eks, pricing, service_account_key=args.service_account_key)
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    try:
        summary = seed.seed_account(f"http://127.0.0.1:{args.port}", seed_config, args.data)
    except Exception as e:  # a failed seed must fail `up`, loudly
        print(f"seeding the sandbox account failed: {e!r}", file=sys.stderr, flush=True)
        server.shutdown()
        return 1
    app.endpoint, app.facts, app.data_dir = f"http://127.0.0.1:{args.port}", summary, args.data
    with app.lock:
        app.calls.clear()
    app.ready = True
    print(json.dumps({"ready": True, **summary}), flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

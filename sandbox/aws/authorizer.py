"""The sandbox endpoint's IAM authorizer: every call signed by a principal other than the
account's admin is decided as IAM decides it, and a denial answers in the service's own wire
format.

Who is evaluated: credentials STS issued (AssumeRole, AssumeRoleWithWebIdentity, and the Pod
Identity endpoint, all through moto's STS) and IAM users' access keys. The admin's static
test keys (`testing`) and keys nobody issued keep doing anything, as before: the seed, the
tests' own set-up calls and `karpctl` run as the admin unless a test gives them a narrower
principal.

What is evaluated: the role's (or user's and its groups') inline and attached managed
policies, the resource's policy where one matters (SQS queue policies), and account
guardrails (Deny-only policies a test sets through `POST /_sandbox/guardrails`, standing in
for an organization's SCPs). Each call becomes one or more authorization requests (`Check`):
its action on each resource it touches, with the request context AWS documents for it:
- every call: `aws:RequestedRegion`, `aws:SecureTransport` (true: the endpoint stands in
  for AWS's TLS endpoints), `aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:PrincipalType`,
  `aws:userid`, `aws:username` (users), `aws:PrincipalTag/*`, `aws:CurrentTime`,
  `aws:EpochTime`, `aws:SourceIp`;
- tags: `aws:RequestTag/*` and `aws:TagKeys` for tags a call sets, `aws:ResourceTag/*` for
  the tags a resource has;
- EC2's launches (RunInstances, CreateFleet) as EC2 authorizes them: one check per resource
  they create (fleet, instance, volume, network-interface, spot-instances-request; request
  tags from the call's TagSpecifications joined with the launch template's) and per resource
  they use (launch template with its tags, image, subnet, security group), `ec2:CreateTags`
  with `ec2:CreateAction` for every created resource that gets tags, and `iam:PassRole` with
  `iam:PassedToService` for the instance profile's role;
- `iam:PassRole` wherever AWS requires it (AddRoleToInstanceProfile, EKS Pod Identity
  associations), `iam:PolicyARN` on attach/detach, `iam:AWSServiceName` on service-linked roles.
Calls the table below does not know get their action on `*` (as actions without
resource-level permissions are), so an unknown case errs toward a denial, never a grant.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

from iam_policy import Decision, Outcome, Request, evaluate

ADMIN_KEYS = {"testing"}
AWS_KEY = re.compile(r"Credential=([^/]+)/")
# IAM is global: its calls are signed for us-east-1 whatever the client's region.
GLOBAL_SERVICES = {"iam", "sts"}


@dataclass
class Principal:
    arn: str  # the caller as AWS names it (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION or ...:user/NAME)
    identity_arn: str  # the role or user whose policies apply
    kind: str  # "AssumedRole" or "User"
    policies: list[Any]
    tags: dict[str, str] = field(default_factory=dict)
    user_id: str = ""
    session_tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Check:
    """One authorization request a call makes."""

    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)
    resource_policy: Any = None


@dataclass
class Denial:
    principal: Principal
    check: Check
    outcome: Outcome

    def reason(self) -> str:
        kind = "an explicit deny in an identity-based policy" if self.outcome.decision is Decision.EXPLICIT_DENY else f"no identity-based policy allows the {self.check.action} action"
        if self.outcome.decision is Decision.EXPLICIT_DENY and self.outcome.statement and self.outcome.statement.startswith("guardrail:"):
            kind = "an explicit deny in a service control policy"
        return f"User: {self.principal.arn} is not authorized to perform: {self.check.action} on resource: {self.check.resource} because {kind}"


def tag_dict(tags: Any) -> dict[str, str]:
    """moto keeps tags as {key: {"Key","Value"}}, [{"Key","Value"}] or [{"key","value"}]."""
    out: dict[str, str] = {}
    if isinstance(tags, dict):
        for k, v in tags.items():
            out[k] = v.get("Value", "") if isinstance(v, dict) else str(v)
    elif isinstance(tags, list):
        for t in tags:
            k = t.get("Key", t.get("key"))
            if k is not None:
                out[k] = t.get("Value", t.get("value", ""))
    return out


def request_tag_context(tags: dict[str, str]) -> dict[str, Any]:
    ctx: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    ctx["aws:TagKeys"] = list(tags)
    return ctx


def resource_tag_context(tags: dict[str, str]) -> dict[str, Any]:
    return {f"aws:ResourceTag/{k}": v for k, v in tags.items()}


def indexed(params: dict[str, str], prefix: str) -> list[str]:
    """`Prefix.1`, `Prefix.2`, ... in order."""
    found = []
    for k, v in params.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)", k)
        if m:
            found.append((int(m.group(1)), v))
    return [v for _, v in sorted(found)]


def query_tags(params: dict[str, str], prefix: str) -> dict[str, str]:
    """Tags in query form: `{prefix}.N.Key`/`{prefix}.N.Value`."""
    tags = {}
    for k, v in params.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.Key", k)
        if m:
            tags[v] = params.get(f"{prefix}.{m.group(1)}.Value", "")
    return tags


def tag_specifications(params: dict[str, str], prefix: str = "TagSpecification") -> dict[str, dict[str, str]]:
    specs: dict[str, dict[str, str]] = {}
    for k, v in params.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.ResourceType", k)
        if m:
            specs.setdefault(v, {}).update(query_tags(params, f"{prefix}.{m.group(1)}.Tag"))
    return specs


EC2_ID_TYPES = {
    "i": "instance", "vol": "volume", "eni": "network-interface", "lt": "launch-template", "fleet": "fleet",
    "sir": "spot-instances-request", "sg": "security-group", "subnet": "subnet", "ami": "image", "snap": "snapshot",
    "vpc": "vpc", "igw": "internet-gateway", "rtb": "route-table", "key": "key-pair",
}


class Authorizer:
    """Decides calls against moto's IAM, STS, EC2 and SQS state (read through `backend`)."""

    def __init__(self, account: str, backend: Callable[[str, str], Any]):
        self.account = account
        self.backend = backend  # (service, region) -> moto backend
        self.guardrails: list[Any] = []
        self.denials: list[dict[str, Any]] = []

    # Principals ---------------------------------------------------------------------------

    def principal(self, authorization: str) -> Principal | None:
        m = AWS_KEY.search(authorization or "")
        if not m or m.group(1) in ADMIN_KEYS:
            return None
        key = m.group(1)
        iam = self.backend("iam", "global")
        sts = self.backend("sts", "global")
        assumed = sts.get_assumed_role_from_access_key(key)
        if assumed is not None:
            role_name = assumed.role_arn.split("/")[-1]
            try:
                role = iam.get_role(role_name)
            except Exception:
                return Principal(assumed.arn, assumed.role_arn, "AssumedRole", [])
            policies = [json.loads(unquote(d)) if isinstance(d, str) else d for d in role.policies.values()]
            policies += [self.managed_document(p) for p in role.managed_policies.values()]
            return Principal(assumed.arn, role.arn, "AssumedRole", policies, tag_dict(role.tags), f"{role.id}:{assumed.session_name}")
        user = iam.get_user_from_access_key_id(key)
        if user is not None:
            policies = [json.loads(unquote(d)) if isinstance(d, str) else d for d in user.policies.values()]
            policies += [self.managed_document(p) for p in user.managed_policies.values()]
            for group in iam.get_groups_for_user(user.name):
                policies += [json.loads(unquote(d)) if isinstance(d, str) else d for d in group.policies.values()]
                policies += [self.managed_document(p) for p in group.managed_policies.values()]
            return Principal(user.arn, user.arn, "User", policies, tag_dict(user.tags), user.id)
        return None

    @staticmethod
    def managed_document(policy: Any) -> Any:
        for version in policy.versions:
            if version.version_id == policy.default_version_id:
                doc = version.document
                return json.loads(unquote(doc)) if isinstance(doc, str) else doc
        return {}

    # Decisions ----------------------------------------------------------------------------

    def decide(self, principal: Principal, service: str, region: str, operation: str, params: dict[str, Any], path: str = "", method: str = "") -> Denial | None:
        """The first denial among the call's checks, or None when all are allowed."""
        checks = self.checks(principal, service, region, operation, params, path, method)
        base = self.global_context(principal, region)
        for check in checks:
            request = Request(check.action, check.resource, {**base, **check.context}, {"AWS": [principal.identity_arn, principal.arn]})
            guard = self.guardrail(request) if self.guardrails else None
            if guard is not None:
                return self.denied(principal, check, guard)
            outcome = evaluate(principal.policies, request, [check.resource_policy] if check.resource_policy else None)
            if not outcome.allowed:
                return self.denied(principal, check, outcome)
        return None

    def guardrail(self, request: Request) -> Outcome | None:
        for i, policy in enumerate(self.guardrails):
            deny_only = {"Statement": [s for s in (policy.get("Statement") if isinstance(policy.get("Statement"), list) else [policy.get("Statement")]) if s and s.get("Effect") == "Deny"]}
            outcome = evaluate([deny_only], request)
            if outcome.decision is Decision.EXPLICIT_DENY:
                return Outcome(Decision.EXPLICIT_DENY, f"guardrail:{i}:{outcome.statement}")
        return None

    def denied(self, principal: Principal, check: Check, outcome: Outcome) -> Denial:
        d = Denial(principal, check, outcome)
        self.denials.append({"time": time.time(), "principal": principal.arn, "action": check.action, "resource": check.resource, "decision": outcome.decision.value, "statement": outcome.statement})
        return d

    def global_context(self, principal: Principal, region: str) -> dict[str, Any]:
        now = time.time()
        ctx: dict[str, Any] = {
            "aws:RequestedRegion": region,
            "aws:SecureTransport": "true",
            "aws:PrincipalArn": principal.identity_arn,
            "aws:PrincipalAccount": self.account,
            "aws:PrincipalType": principal.kind,
            "aws:userid": principal.user_id,
            "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "aws:EpochTime": str(int(now)),
            "aws:SourceIp": "127.0.0.1",
        }
        if principal.kind == "User":
            ctx["aws:username"] = principal.identity_arn.rsplit("/", 1)[-1]
        for k, v in principal.tags.items():
            ctx[f"aws:PrincipalTag/{k}"] = v
        return ctx

    # Calls -> checks ------------------------------------------------------------------------

    def checks(self, principal: Principal, service: str, region: str, operation: str, params: dict[str, Any], path: str, method: str) -> list[Check]:
        if service == "sts" and operation in ("GetCallerIdentity",):
            return []  # needs no permission, as in AWS
        handler = getattr(self, f"{service}_checks", None)
        if handler is not None:
            found = handler(region, operation, params, path, method)
            if found is not None:
                return found
        prefix = {"monitoring": "cloudwatch"}.get(service, service)
        return [Check(f"{prefix}:{operation}", "*")]

    # EC2 ----------------------------------------------------------------------------------

    def ec2_arn(self, region: str, resource_type: str, rid: str) -> str:
        account = "" if resource_type in ("image", "snapshot") else self.account
        return f"arn:aws:ec2:{region}:{account}:{resource_type}/{rid}"

    def ec2_tags(self, region: str, rid: str) -> dict[str, str]:
        try:
            return tag_dict(self.backend("ec2", region).describe_tags(filters={"resource-id": [rid]}))
        except Exception:
            return {}

    def launch_template(self, region: str, name: str | None, tid: str | None) -> Any:
        ec2 = self.backend("ec2", region)
        try:
            return ec2.get_launch_template_by_name(name) if name else ec2.get_launch_template(tid) if tid else None
        except Exception:
            return None

    def ec2_checks(self, region: str, operation: str, params: dict[str, str], path: str, method: str) -> list[Check] | None:
        action = f"ec2:{operation}"
        if operation in ("CreateFleet", "RunInstances"):
            return self.launch_checks(region, operation, params)
        if operation == "CreateLaunchTemplate":
            tags = tag_specifications(params).get("launch-template", {})
            checks = [Check(action, self.ec2_arn(region, "launch-template", "*"), request_tag_context(tags))]
            if tags:
                checks.append(Check("ec2:CreateTags", self.ec2_arn(region, "launch-template", "*"), {**request_tag_context(tags), "ec2:CreateAction": operation}))
            return checks
        if operation in ("DeleteLaunchTemplate", "CreateLaunchTemplateVersion", "ModifyLaunchTemplate"):
            template = self.launch_template(region, params.get("LaunchTemplateName"), params.get("LaunchTemplateId"))
            rid = template.id if template is not None else "*"
            return [Check(action, self.ec2_arn(region, "launch-template", rid), resource_tag_context(self.ec2_tags(region, rid)))]
        if operation in ("TerminateInstances", "StopInstances", "StartInstances", "RebootInstances"):
            return [Check(action, self.ec2_arn(region, "instance", i), resource_tag_context(self.ec2_tags(region, i))) for i in indexed(params, "InstanceId")]
        if operation in ("CreateTags", "DeleteTags"):
            tags = query_tags(params, "Tag")
            checks = []
            for rid in indexed(params, "ResourceId"):
                rtype = EC2_ID_TYPES.get(rid.split("-", 1)[0], "*")
                checks.append(Check(action, self.ec2_arn(region, rtype, rid), {**resource_tag_context(self.ec2_tags(region, rid)), **request_tag_context(tags)}))
            return checks
        return None

    def launch_checks(self, region: str, operation: str, params: dict[str, str]) -> list[Check]:
        """RunInstances/CreateFleet as EC2 authorizes them: every resource created and used."""
        action = f"ec2:{operation}"
        ec2 = self.backend("ec2", region)
        specs = tag_specifications(params)
        if operation == "CreateFleet":
            refs = []
            for k, v in params.items():
                m = re.fullmatch(r"LaunchTemplateConfigs\.(\d+)\.LaunchTemplateSpecification\.LaunchTemplate(Name|Id)", k)
                if m:
                    refs.append((v, None) if m.group(2) == "Name" else (None, v))
            subnets = {v for k, v in params.items() if re.fullmatch(r"LaunchTemplateConfigs\.\d+\.Overrides\.\d+\.SubnetId", k)}
            images = {v for k, v in params.items() if re.fullmatch(r"LaunchTemplateConfigs\.\d+\.Overrides\.\d+\.ImageId", k)}
            spot = params.get("TargetCapacitySpecification.DefaultTargetCapacityType") == "spot"
        else:
            refs = [(params.get("LaunchTemplate.LaunchTemplateName"), params.get("LaunchTemplate.LaunchTemplateId"))] if any(k.startswith("LaunchTemplate.") for k in params) else []
            subnets = {params["SubnetId"]} if params.get("SubnetId") else set()
            images = {params["ImageId"]} if params.get("ImageId") else set()
            spot = params.get("InstanceMarketOptions.MarketType") == "spot"
        groups: set[str] = set(indexed(params, "SecurityGroupId"))
        profiles: set[str] = set()
        if params.get("IamInstanceProfile.Name"):
            profiles.add(params["IamInstanceProfile.Name"])
        checks: list[Check] = []
        template_specs: dict[str, dict[str, str]] = {}
        for name, tid in refs:
            template = self.launch_template(region, name, tid)
            if template is None:
                continue  # EC2 answers the missing template itself
            checks.append(Check(action, self.ec2_arn(region, "launch-template", template.id), resource_tag_context(self.ec2_tags(region, template.id))))
            data = template.latest_version().data
            if not images and data.get("ImageId"):
                images.add(data["ImageId"])
            groups |= set(data.get("SecurityGroupIds") or data.get("SecurityGroupId") or [])
            profile = data.get("IamInstanceProfile") or {}
            if profile.get("Name"):
                profiles.add(profile["Name"])
            elif profile.get("Arn"):
                profiles.add(profile["Arn"].rsplit("/", 1)[-1])
            for spec in data.get("TagSpecifications") or data.get("TagSpecification") or []:
                if spec.get("ResourceType") == "launch-template":
                    continue  # moto keeps the template's own tags here too
                template_specs.setdefault(spec.get("ResourceType", ""), {}).update(tag_dict(spec.get("Tags") or spec.get("Tag") or []))
        created = ["instance", "volume", "network-interface"] + (["fleet"] if operation == "CreateFleet" else []) + (["spot-instances-request"] if spot else [])
        for rtype in created:
            tags = {**template_specs.get(rtype, {}), **specs.get(rtype, {})}
            checks.append(Check(action, self.ec2_arn(region, rtype, "*"), request_tag_context(tags)))
            if tags:
                checks.append(Check("ec2:CreateTags", self.ec2_arn(region, rtype, "*"), {**request_tag_context(tags), "ec2:CreateAction": operation}))
        for image in sorted(images):
            checks.append(Check(action, self.ec2_arn(region, "image", image)))
        for subnet in sorted(subnets):
            checks.append(Check(action, self.ec2_arn(region, "subnet", subnet), resource_tag_context(self.ec2_tags(region, subnet))))
        for group in sorted(groups):
            checks.append(Check(action, self.ec2_arn(region, "security-group", group), resource_tag_context(self.ec2_tags(region, group))))
        iam = self.backend("iam", "global")
        for profile in sorted(profiles):
            try:
                roles = iam.get_instance_profile(profile).roles
            except Exception:
                continue
            for role in roles:
                checks.append(Check("iam:PassRole", role.arn, {"iam:PassedToService": "ec2.amazonaws.com", **resource_tag_context(tag_dict(role.tags))}))
        del ec2
        return checks

    # IAM ----------------------------------------------------------------------------------

    def iam_role(self, name: str) -> tuple[str, dict[str, str]]:
        try:
            role = self.backend("iam", "global").get_role(name)
            return role.arn, tag_dict(role.tags)
        except Exception:
            return f"arn:aws:iam::{self.account}:role/{name}", {}

    def iam_checks(self, region: str, operation: str, params: dict[str, str], path: str, method: str) -> list[Check] | None:
        action = f"iam:{operation}"
        iam = self.backend("iam", "global")
        request_tags = query_tags(params, "Tags.member")
        if operation.startswith("List") and operation not in ("ListRolePolicies", "ListAttachedRolePolicies", "ListInstanceProfilesForRole", "ListRoleTags", "ListInstanceProfileTags", "ListPolicyVersions", "ListOpenIDConnectProviderTags", "ListPolicyTags", "ListEntitiesForPolicy", "ListAttachedUserPolicies", "ListAttachedGroupPolicies", "ListUserPolicies", "ListGroupPolicies"):
            return [Check(action, "*")]
        if "InstanceProfileName" in params:
            name = params["InstanceProfileName"]
            try:
                profile = iam.get_instance_profile(name)
                arn, tags = profile.arn, tag_dict(profile.tags)
            except Exception:
                arn, tags = f"arn:aws:iam::{self.account}:instance-profile{params.get('Path', '/')}{name}", {}
            ctx = resource_tag_context(tags)
            if operation in ("CreateInstanceProfile", "TagInstanceProfile"):
                ctx.update(request_tag_context(request_tags))
            checks = [Check(action, arn, ctx)]
            if operation == "AddRoleToInstanceProfile" and params.get("RoleName"):
                role_arn, role_tags = self.iam_role(params["RoleName"])
                checks.append(Check("iam:PassRole", role_arn, {"iam:PassedToService": "ec2.amazonaws.com", **resource_tag_context(role_tags)}))
            return checks
        if operation == "CreateServiceLinkedRole":
            service = params.get("AWSServiceName", "")
            role = {"spot.amazonaws.com": "AWSServiceRoleForEC2Spot"}.get(service, "*")
            return [Check(action, f"arn:aws:iam::{self.account}:role/aws-service-role/{service}/{role}", {"iam:AWSServiceName": service})]
        if "RoleName" in params:
            if operation == "CreateRole":
                arn, tags = f"arn:aws:iam::{self.account}:role{params.get('Path', '/')}{params['RoleName']}", {}
            else:
                arn, tags = self.iam_role(params["RoleName"])
            ctx = resource_tag_context(tags)
            if operation in ("CreateRole", "TagRole", "UntagRole"):
                ctx.update(request_tag_context(request_tags))
            if operation == "UntagRole":
                ctx["aws:TagKeys"] = indexed(params, "TagKeys.member")
            if "PolicyArn" in params:
                ctx["iam:PolicyARN"] = params["PolicyArn"]
            return [Check(action, arn, ctx)]
        if operation in ("AttachUserPolicy", "DetachUserPolicy", "AttachGroupPolicy", "DetachGroupPolicy"):
            kind, key = ("user", "UserName") if "User" in operation else ("group", "GroupName")
            return [Check(action, f"arn:aws:iam::{self.account}:{kind}/{params.get(key, '')}", {"iam:PolicyARN": params.get("PolicyArn", "")})]
        if operation == "CreatePolicy":
            return [Check(action, f"arn:aws:iam::{self.account}:policy{params.get('Path', '/')}{params.get('PolicyName', '')}", request_tag_context(request_tags))]
        if "PolicyArn" in params:
            try:
                tags = tag_dict(iam.get_policy(params["PolicyArn"]).tags)
            except Exception:
                tags = {}
            ctx = resource_tag_context(tags)
            if operation in ("TagPolicy",):
                ctx.update(request_tag_context(request_tags))
            return [Check(action, params["PolicyArn"], ctx)]
        if "OpenIDConnectProviderArn" in params:
            return [Check(action, params["OpenIDConnectProviderArn"])]
        if operation == "CreateOpenIDConnectProvider":
            url = params.get("Url", "").removeprefix("https://")
            return [Check(action, f"arn:aws:iam::{self.account}:oidc-provider/{url}", request_tag_context(request_tags))]
        for key, kind in (("UserName", "user"), ("GroupName", "group")):
            if key in params:
                ctx = {"iam:PolicyARN": params["PolicyArn"]} if "PolicyArn" in params else {}
                return [Check(action, f"arn:aws:iam::{self.account}:{kind}/{params[key]}", ctx)]
        return None

    # SQS, SSM, EventBridge, EKS, STS --------------------------------------------------------

    def sqs_checks(self, region: str, operation: str, params: dict[str, Any], path: str, method: str) -> list[Check] | None:
        action = f"sqs:{operation}"
        if operation == "ListQueues":
            return [Check(action, "*")]
        url = params.get("QueueUrl") or ""
        name = params.get("QueueName") or url.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            return None
        arn = f"arn:aws:sqs:{region}:{self.account}:{name}"
        ctx: dict[str, Any] = {}
        policy = None
        try:
            queue = self.backend("sqs", region).get_queue(name)
            ctx = resource_tag_context(dict(queue.tags or {}))
            policy = json.loads(queue.policy) if queue.policy else None
        except Exception:
            pass
        tags = dict(params.get("tags") or params.get("Tags") or {})
        if operation in ("CreateQueue", "TagQueue"):
            ctx.update(request_tag_context(tags))
        checks = [Check(action, arn, ctx, policy)]
        if operation == "CreateQueue" and tags:
            # SQS documents it: tagging a queue on creation needs sqs:TagQueue as well.
            checks.append(Check("sqs:TagQueue", arn, ctx, policy))
        return checks

    def ssm_checks(self, region: str, operation: str, params: dict[str, Any], path: str, method: str) -> list[Check] | None:
        names = params.get("Names") or ([params["Name"]] if params.get("Name") else [])
        if not names:
            return None
        checks = []
        for name in names:
            public = name.startswith("/aws/service/")
            account = "" if public else self.account
            checks.append(Check(f"ssm:{operation}", f"arn:aws:ssm:{region}:{account}:parameter/{name.lstrip('/')}"))
        return checks

    def events_checks(self, region: str, operation: str, params: dict[str, Any], path: str, method: str) -> list[Check] | None:
        if params.get("ResourceARN"):
            return [Check(f"events:{operation}", params["ResourceARN"], request_tag_context({t["Key"]: t["Value"] for t in params.get("Tags") or []}) if operation == "TagResource" else {})]
        name = params.get("Name") or params.get("Rule")
        if operation.startswith("List") and not name:
            return [Check(f"events:{operation}", "*")]
        if not name:
            return None
        ctx: dict[str, Any] = {}
        if operation == "PutRule":
            ctx.update(request_tag_context({t["Key"]: t["Value"] for t in params.get("Tags") or []}))
        return [Check(f"events:{operation}", f"arn:aws:events:{region}:{self.account}:rule/{name}", ctx)]

    def eks_checks(self, region: str, operation: str, params: dict[str, Any], path: str, method: str) -> list[Check] | None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        action = f"eks:{operation}"
        if len(parts) >= 2 and parts[0] == "tags":
            arn = unquote("/".join(path.strip("/").split("/")[1:]))
            return [Check(action, arn, request_tag_context(dict(params.get("tags") or {})) if operation == "TagResource" else {})]
        if len(parts) < 2 or parts[0] != "clusters":
            return [Check(action, "*")]
        cluster = parts[1]
        cluster_arn = f"arn:aws:eks:{region}:{self.account}:cluster/{cluster}"
        if len(parts) >= 4 and parts[2] == "access-entries":
            return [Check(action, f"arn:aws:eks:{region}:{self.account}:access-entry/{cluster}/*", {"eks:principalArn": parts[3]})]
        if len(parts) >= 4 and parts[2] == "pod-identity-associations":
            checks = [Check(action, f"arn:aws:eks:{region}:{self.account}:podidentityassociation/{cluster}/{parts[3]}")]
            if operation == "UpdatePodIdentityAssociation" and params.get("roleArn"):
                checks.append(Check("iam:PassRole", params["roleArn"], {"iam:PassedToService": "pods.eks.amazonaws.com"}))
            return checks
        if len(parts) >= 4 and parts[2] == "addons":
            return [Check(action, f"arn:aws:eks:{region}:{self.account}:addon/{cluster}/{parts[3]}/*")]
        checks = [Check(action, cluster_arn)]
        if operation == "CreatePodIdentityAssociation" and params.get("roleArn"):
            checks.append(Check("iam:PassRole", params["roleArn"], {"iam:PassedToService": "pods.eks.amazonaws.com"}))
        return checks

    def sts_checks(self, region: str, operation: str, params: dict[str, str], path: str, method: str) -> list[Check] | None:
        if operation in ("AssumeRole", "AssumeRoleWithWebIdentity") and params.get("RoleArn"):
            return [Check(f"sts:{operation}", params["RoleArn"])]
        return None


# Wire formats ------------------------------------------------------------------------------

QUERY_XMLNS = {"iam": "https://iam.amazonaws.com/doc/2010-05-08/", "sts": "https://sts.amazonaws.com/doc/2011-06-15/"}


def encode_message(denial: Denial) -> str:
    """EC2's "encoded authorization failure message": here base64 JSON in the shape
    `sts:DecodeAuthorizationMessage` returns (AWS encrypts it; the sandbox need not)."""
    doc = {
        "allowed": False,
        "explicitDeny": denial.outcome.decision is Decision.EXPLICIT_DENY,
        "matchedStatements": {"items": [{"statementId": denial.outcome.statement}] if denial.outcome.statement else []},
        "failures": {"items": []},
        "context": {
            "principal": {"arn": denial.principal.arn},
            "action": denial.check.action,
            "resource": denial.check.resource,
            "conditions": {"items": [{"key": k, "values": {"items": [{"value": v} for v in (v if isinstance(v, list) else [v])]}} for k, v in sorted(denial.check.context.items())]},
        },
    }
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def decode_message(encoded: str) -> str:
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def denial_response(service: str, denial: Denial, json_protocol: bool) -> tuple[int, dict[str, str], bytes]:
    """The denial as the service answers it on the wire."""
    request_id = str(uuid.uuid4())
    if service == "ec2":
        message = f"You are not authorized to perform this operation. {denial.reason()}. Encoded authorization failure message: {encode_message(denial)}"
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>{xml_escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>'
        return 403, {"Content-Type": "text/xml;charset=UTF-8"}, body.encode()
    if service == "sqs":
        message = denial.reason()
        if json_protocol:
            headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": "AccessDenied;Sender", "x-amzn-RequestId": request_id}
            return 403, headers, json.dumps({"__type": "com.amazon.coral.service#AccessDeniedException", "message": message}).encode()
        body = f'<?xml version="1.0"?><ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{xml_escape(message)}</Message><Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>'
        return 403, {"Content-Type": "text/xml"}, body.encode()
    if not json_protocol and service != "eks":
        xmlns = QUERY_XMLNS.get(service, f"https://{service}.amazonaws.com/doc/")
        body = f'<ErrorResponse xmlns="{xmlns}"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{xml_escape(denial.reason())}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>'
        return 403, {"Content-Type": "text/xml"}, body.encode()
    if service == "eks":
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": "AccessDeniedException", "x-amzn-RequestId": request_id}
        return 403, headers, json.dumps({"message": denial.reason()}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": request_id}
    return 400, headers, json.dumps({"__type": "AccessDeniedException", "Message": denial.reason()}).encode()

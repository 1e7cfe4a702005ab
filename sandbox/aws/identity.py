"""How a pod gets AWS credentials in the sandbox, as it does on EKS: the Pod Identity agent's
credentials endpoint, and IRSA's `AssumeRoleWithWebIdentity`. Both take a projected
service-account token the sandbox's kube-apiserver signed, check it as AWS does (signature
with the cluster's service-account key, issuer = the cluster's OIDC issuer, audience, expiry),
then check the role's trust policy with the same evaluator as every other call
(iam_policy.py), and only then mint credentials through moto's STS, so every call the pod
makes afterwards is authorized as that role (authorizer.py).

- Pod Identity (`GET /_sandbox/pod-identity/v1/credentials`, the token in `Authorization`, as
  the SDKs' container credential provider sends it): the token's audience must be
  `pods.eks.amazonaws.com`; the association for its namespace and service account names the
  role; the trust policy must let the service principal `pods.eks.amazonaws.com` do
  `sts:AssumeRole` and `sts:TagSession`, with `aws:SourceAccount`, `aws:SourceArn` (the
  cluster) and the session tags EKS sets (`aws:RequestTag/kubernetes-namespace`,
  `kubernetes-service-account`, `eks-cluster-name`, `eks-cluster-arn`, `kubernetes-pod-name`,
  `kubernetes-pod-uid`) in the request context.
- IRSA: an IAM OIDC provider for the issuer must exist and list the token's audience; the
  trust policy must let `Federated: <provider ARN>` do `sts:AssumeRoleWithWebIdentity`, with
  `<issuer host/path>:sub`, `:aud` and `:amr` in the context.
Errors say which principal, role and check failed, in STS's wire format for IRSA and as JSON
for the agent endpoint.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from iam_policy import Request, evaluate

POD_IDENTITY_AUDIENCE = "pods.eks.amazonaws.com"


class IdentityError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Token:
    claims: dict[str, Any]

    @property
    def subject(self) -> str:
        return self.claims.get("sub", "")

    @property
    def audiences(self) -> list[str]:
        aud = self.claims.get("aud", [])
        return aud if isinstance(aud, list) else [aud]

    def service_account(self) -> tuple[str, str]:
        parts = self.subject.split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            raise IdentityError(400, "InvalidIdentityToken", f"the token's subject {self.subject!r} is not a service account")
        return parts[2], parts[3]

    def pod(self) -> tuple[str, str]:
        pod = (self.claims.get("kubernetes.io") or {}).get("pod") or {}
        return pod.get("name", ""), pod.get("uid", "")


def verify_token(raw: str, key_path: Path | None, issuer: str, *, now: float | None = None) -> Token:
    """A service-account JWT (RS256 or ES256) checked as AWS checks it: signature, issuer, expiry."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    raw = raw.strip()
    if not raw:
        raise IdentityError(400, "InvalidIdentityToken", "no web identity token was given")
    try:
        header_b64, payload_b64, signature_b64 = raw.split(".")
        header = json.loads(b64url(header_b64))
        claims = json.loads(b64url(payload_b64))
        signature = b64url(signature_b64)
    except (ValueError, json.JSONDecodeError) as e:
        raise IdentityError(400, "InvalidIdentityToken", f"the web identity token is not a JWT ({e})") from e
    if header.get("alg") not in ("RS256", "ES256"):
        raise IdentityError(400, "InvalidIdentityToken", f"the web identity token's algorithm {header.get('alg')!r} is neither RS256 nor ES256")
    if key_path is None or not key_path.exists():
        raise IdentityError(400, "InvalidIdentityToken", "the cluster's service-account signing key is not known to this endpoint")
    key = serialization.load_pem_public_key(key_path.read_bytes())
    signed = f"{header_b64}.{payload_b64}".encode()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and header["alg"] == "ES256" and len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey) and header["alg"] == "RS256":
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise InvalidSignature()
    except InvalidSignature as e:
        raise IdentityError(400, "InvalidIdentityToken", "the web identity token's signature does not verify against the cluster's OIDC keys") from e
    if claims.get("iss") != issuer:
        raise IdentityError(400, "InvalidIdentityToken", f"the web identity token's issuer {claims.get('iss')!r} is not the cluster's OIDC issuer {issuer!r}")
    now = time.time() if now is None else now
    if float(claims.get("exp", 0)) <= now:
        expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(claims.get("exp", 0))))
        raise IdentityError(400, "ExpiredTokenException", f"Token expired: current date/time {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))} must be before the expiration date/time {expired}")
    if float(claims.get("nbf", 0)) > now + 60:
        raise IdentityError(400, "InvalidIdentityToken", "the web identity token is not valid yet")
    return Token(claims)


def trust_policy(role: Any) -> Any:
    doc = role.assume_role_policy_document
    return json.loads(unquote(doc)) if isinstance(doc, str) else doc


class Identities:
    """Credentials for pods: Pod Identity and IRSA, over moto's IAM/STS and the EKS gaps."""

    def __init__(self, account: str, backend: Callable[[str, str], Any], associations: Callable[[str, str], dict[str, dict[str, Any]]], key_path: Path | None):
        self.account = account
        self.backend = backend
        self.associations = associations  # (region, cluster) -> {id: association}
        self.key_path = key_path

    def clusters(self) -> list[tuple[str, Any]]:
        """(region, cluster) for every EKS cluster moto knows."""
        from moto.backends import get_backend

        found = []
        for region, backend in get_backend("eks")[self.account].items():
            for cluster in backend.clusters.values():
                found.append((region, cluster))
        return found

    @staticmethod
    def issuer(cluster: Any) -> str:
        identity = getattr(cluster, "identity", None) or {}
        return ((identity.get("oidc") or {}).get("issuer")) or ""

    def role(self, arn: str) -> Any:
        try:
            return self.backend("iam", "global").get_role_by_arn(arn)
        except Exception as e:
            raise IdentityError(403, "AccessDenied", f"role {arn} does not exist") from e

    # Pod Identity -------------------------------------------------------------------------

    def pod_identity_credentials(self, raw_token: str) -> dict[str, Any]:
        token: Token | None = None
        cluster = region = None
        errors = []
        for r, c in self.clusters():
            try:
                token = verify_token(raw_token, self.key_path, self.issuer(c))
                cluster, region = c, r
                break
            except IdentityError as e:
                errors.append(e)
        if token is None or cluster is None or region is None:
            raise errors[-1] if errors else IdentityError(400, "InvalidIdentityToken", "no EKS cluster in this account")
        if POD_IDENTITY_AUDIENCE not in token.audiences:
            raise IdentityError(400, "InvalidIdentityToken", f"the token's audience {token.audiences} does not include {POD_IDENTITY_AUDIENCE}")
        namespace, service_account = token.service_account()
        association = next((a for a in self.associations(region, cluster.name).values() if a["namespace"] == namespace and a["serviceAccount"] == service_account), None)
        if association is None:
            raise IdentityError(400, "InvalidParameterException", f"no Pod Identity association for service account {namespace}/{service_account} in cluster {cluster.name}")
        role = self.role(association["roleArn"])
        pod_name, pod_uid = token.pod()
        cluster_arn = f"arn:aws:eks:{region}:{self.account}:cluster/{cluster.name}"
        session_tags = {} if association.get("disableSessionTags") else {
            "eks-cluster-arn": cluster_arn,
            "eks-cluster-name": cluster.name,
            "kubernetes-namespace": namespace,
            "kubernetes-service-account": service_account,
            "kubernetes-pod-name": pod_name,
            "kubernetes-pod-uid": pod_uid,
        }
        context: dict[str, Any] = {"aws:SourceAccount": self.account, "aws:SourceArn": cluster_arn, **{f"aws:RequestTag/{k}": v for k, v in session_tags.items()}}
        if session_tags:
            context["aws:TagKeys"] = list(session_tags)
        for action in ("sts:AssumeRole", "sts:TagSession"):
            outcome = evaluate([], Request(action, role.arn, context, {"Service": [POD_IDENTITY_AUDIENCE]}), [trust_policy(role)])
            if not outcome.allowed:
                raise IdentityError(403, "AccessDeniedException", f"the trust policy of role {role.arn} does not let {POD_IDENTITY_AUDIENCE} perform {action} for service account {namespace}/{service_account} of cluster {cluster.name} ({outcome.decision.value})")
        session = f"eks-{cluster.name}-{pod_name or service_account}"[:64]
        assumed = self.backend("sts", "global").assume_role(region_name=region, role_session_name=session, role_arn=role.arn, policy=None, duration=6 * 3600, external_id=None)
        return {
            "AccessKeyId": assumed.access_key_id,
            "SecretAccessKey": assumed.secret_access_key,
            "Token": assumed.session_token,
            "AccountId": self.account,
            "Expiration": assumed.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    # IRSA ---------------------------------------------------------------------------------

    def check_web_identity(self, role_arn: str, raw_token: str) -> None:
        """Raises unless `AssumeRoleWithWebIdentity` with this token may assume the role."""
        claims: dict[str, Any] = {}
        try:
            _, payload, _ = raw_token.strip().split(".")
            claims = json.loads(b64url(payload))
        except (ValueError, json.JSONDecodeError):
            pass
        issuer = claims.get("iss", "")
        host_path = issuer.removeprefix("https://")
        iam = self.backend("iam", "global")
        provider_arn = f"arn:aws:iam::{self.account}:oidc-provider/{host_path}"
        provider = iam.open_id_providers.get(provider_arn)
        if provider is None:
            raise IdentityError(400, "InvalidIdentityToken", f"No OpenIDConnect provider found in your account for {issuer}")
        token = verify_token(raw_token, self.key_path, issuer)
        if not set(token.audiences) & set(provider.client_id_list):
            raise IdentityError(400, "InvalidIdentityToken", f"Incorrect token audience: {token.audiences} is not among the provider's client IDs {provider.client_id_list}")
        role = self.role(role_arn)
        context = {f"{host_path}:sub": token.subject, f"{host_path}:aud": token.audiences, f"{host_path}:amr": ["authenticated"]}
        outcome = evaluate([], Request("sts:AssumeRoleWithWebIdentity", role.arn, context, {"Federated": [provider_arn]}), [trust_policy(role)])
        if not outcome.allowed:
            raise IdentityError(403, "AccessDenied", f"Not authorized to perform sts:AssumeRoleWithWebIdentity: the trust policy of role {role.arn} does not let {token.subject} (issuer {issuer}) assume it")


def sts_error(error: IdentityError) -> tuple[int, dict[str, str], bytes]:
    from xml.sax.saxutils import escape

    body = f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{error.code}</Code><Message>{escape(error.message)}</Message></Error><RequestId>sandbox-identity</RequestId></ErrorResponse>'
    return error.status, {"Content-Type": "text/xml"}, body.encode()

"""Pod credentials as EKS issues them (aws/identity.py), through the endpoint in-process:
the Pod Identity agent route and IRSA's AssumeRoleWithWebIdentity, each with a service-account
token signed like the sandbox apiserver's (ES256), and every bad input the issue names:
expired or missing tokens, the wrong audience or issuer, a forged signature, a trust policy
for another service account."""

import base64
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "aws"))
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from eks_gaps import EksGaps  # noqa: E402
from server import ACCOUNT_ID, SandboxAws  # noqa: E402

REGION = "us-west-2"
CLUSTER = "identity"
ADMIN = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def token(issuer, sub="system:serviceaccount:karpenter:karpenter", aud="pods.eks.amazonaws.com", exp_in=3600, key=KEY):
    header = b64(json.dumps({"alg": "ES256", "kid": "k"}).encode())
    now = int(time.time())
    claims = {"iss": issuer, "sub": sub, "aud": [aud], "exp": now + exp_in, "iat": now, "nbf": now, "kubernetes.io": {"namespace": "karpenter", "pod": {"name": "karpenter-abc", "uid": "u-1"}}}
    payload = b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{header}.{payload}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    pub = tmp_path_factory.mktemp("pki") / "sa.pub"
    pub.write_bytes(KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    from moto.backends import get_backend

    eks = EksGaps(ACCOUNT_ID, lambda r, n: n in get_backend("eks")[ACCOUNT_ID][r].clusters, "API")
    app = SandboxAws(DomainDispatcherApplication(create_backend_app), eks, None, service_account_key=pub)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    c = boto3.client("eks", region_name=REGION, endpoint_url=url, **ADMIN)
    c.create_cluster(name=CLUSTER, roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/eks", resourcesVpcConfig={})
    issuer = c.describe_cluster(name=CLUSTER)["cluster"]["identity"]["oidc"]["issuer"]
    yield url, issuer
    server.shutdown()


def admin(url, service):
    return boto3.client(service, region_name=REGION, endpoint_url=url, **ADMIN)


def role(url, name, trust, policy=None):
    iam = admin(url, "iam")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(policy or {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeSubnets", "Resource": "*"}]}))
    return arn


def pod_identity_trust(namespace="karpenter", service_account="karpenter", cluster=CLUSTER):
    """The hardened trust policy: the account, the cluster, the namespace and service account."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID, "aws:RequestTag/kubernetes-namespace": namespace, "aws:RequestTag/kubernetes-service-account": service_account},
                      "ArnEquals": {"aws:SourceArn": f"arn:aws:eks:{REGION}:{ACCOUNT_ID}:cluster/{cluster}"}}}]}


def credentials(url, raw):
    req = urllib.request.Request(f"{url}/_sandbox/pod-identity/v1/credentials", headers={"Authorization": raw})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def associate(url, namespace, service_account, role_arn):
    admin(url, "eks").create_pod_identity_association(clusterName=CLUSTER, namespace=namespace, serviceAccount=service_account, roleArn=role_arn)


def test_pod_identity_issues_credentials_of_the_associated_role(endpoint):
    url, issuer = endpoint
    arn = role(url, "pi-controller", pod_identity_trust())
    associate(url, "karpenter", "karpenter", arn)
    status, creds = credentials(url, token(issuer))
    assert status == 200, creds
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url, aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["Token"])
    ec2.describe_subnets()  # the role's policy allows it
    with pytest.raises(ClientError) as e:
        ec2.describe_instances()  # and nothing more
    assert e.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert "assumed-role/pi-controller/eks-identity-karpenter-abc" in e.value.response["Error"]["Message"]


@pytest.mark.parametrize("case,make,code", [
    ("expired", lambda i: token(i, exp_in=-10), "ExpiredTokenException"),
    ("missing", lambda i: "", "InvalidIdentityToken"),
    ("wrong audience", lambda i: token(i, aud="sts.amazonaws.com"), "InvalidIdentityToken"),
    ("another issuer", lambda i: token("https://oidc.example/other"), "InvalidIdentityToken"),
    ("forged signature", lambda i: token(i, key=OTHER_KEY), "InvalidIdentityToken"),
    ("no association", lambda i: token(i, sub="system:serviceaccount:default:nobody"), "InvalidParameterException"),
])
def test_pod_identity_refuses_bad_tokens_with_a_reason(endpoint, case, make, code):
    url, issuer = endpoint
    status, doc = credentials(url, make(issuer))
    assert status in (400, 403) and doc["code"] == code, (case, doc)


def test_pod_identity_refuses_a_trust_policy_for_another_service_account(endpoint):
    url, issuer = endpoint
    arn = role(url, "pi-other-sa", pod_identity_trust(service_account="someone-else"))
    associate(url, "karpenter", "mismatched", arn)
    status, doc = credentials(url, token(issuer, sub="system:serviceaccount:karpenter:mismatched"))
    assert status == 403 and doc["code"] == "AccessDeniedException"
    assert "pi-other-sa" in doc["message"] and "karpenter/mismatched" in doc["message"] and "sts:AssumeRole" in doc["message"]


def irsa_trust(issuer, sub="system:serviceaccount:karpenter:karpenter"):
    host = issuer.removeprefix("https://")
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{host}"}, "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{host}:sub": sub, f"{host}:aud": "sts.amazonaws.com"}}}]}


def test_irsa_checks_the_provider_the_token_and_the_trust_policy(endpoint):
    url, issuer = endpoint
    arn = role(url, "irsa-controller", irsa_trust(issuer))
    sts = boto3.client("sts", region_name=REGION, endpoint_url=url, **ADMIN)
    good = token(issuer, aud="sts.amazonaws.com")
    with pytest.raises(ClientError) as e:
        sts.assume_role_with_web_identity(RoleArn=arn, RoleSessionName="controller", WebIdentityToken=good)
    assert e.value.response["Error"]["Code"] == "InvalidIdentityToken"
    assert "No OpenIDConnect provider" in e.value.response["Error"]["Message"]
    admin(url, "iam").create_open_id_connect_provider(Url=issuer, ClientIDList=["sts.amazonaws.com"], ThumbprintList=["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"])
    creds = sts.assume_role_with_web_identity(RoleArn=arn, RoleSessionName="controller", WebIdentityToken=good)["Credentials"]
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url, aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
    ec2.describe_subnets()
    for bad, code in [
        (token(issuer, aud="sts.amazonaws.com", sub="system:serviceaccount:default:other"), "AccessDenied"),
        (token(issuer, aud="sts.amazonaws.com", exp_in=-5), "ExpiredTokenException"),
        (token(issuer, aud="pods.eks.amazonaws.com"), "InvalidIdentityToken"),
        (token(issuer, aud="sts.amazonaws.com", key=OTHER_KEY), "InvalidIdentityToken"),
    ]:
        with pytest.raises(ClientError) as e:
            sts.assume_role_with_web_identity(RoleArn=arn, RoleSessionName="controller", WebIdentityToken=bad)
        assert e.value.response["Error"]["Code"] == code, e.value.response

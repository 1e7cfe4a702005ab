"""IAM policy evaluation (aws/iam_policy.py), case by case against what AWS documents.

Each row names the documented rule it checks: the IAM User Guide's "Policy evaluation logic",
"IAM JSON policy elements" (Action, NotAction, Resource, NotResource, Principal, Condition),
"Condition operators" (including "...IfExists", "Null", and "Set operators for multivalued
context keys") and "Policy variables".
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "aws"))
from iam_policy import Decision, Request, evaluate  # noqa: E402

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/KarpenterController"


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action="*", resource="*", **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action="*", resource="*", **extra):
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def req(action="ec2:RunInstances", resource=f"arn:aws:ec2:us-west-2:{ACCOUNT}:instance/*", **context):
    return Request(action, resource, {k.replace("__", "/").replace("_colon_", ":"): v for k, v in context.items()}, {"AWS": [ROLE]})


LT_OWNED = {"StringEquals": {"aws:ResourceTag/kubernetes.io/cluster/sandbox": "owned"}, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}

CASES = [
    # Evaluation logic
    ("no statement matches: implicit deny", [policy(allow("s3:GetObject"))], req(), Decision.IMPLICIT_DENY),
    ("an Allow that matches allows", [policy(allow("ec2:RunInstances"))], req(), Decision.ALLOW),
    ("an explicit Deny overrides any Allow", [policy(allow()), policy(deny("ec2:*"))], req(), Decision.EXPLICIT_DENY),
    ("an explicit Deny in the same policy overrides its Allow", [policy(allow(), deny("ec2:RunInstances"))], req(), Decision.EXPLICIT_DENY),
    ("a Deny whose condition fails does not deny", [policy(allow(), deny(Condition={"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}))], req(**{"aws:RequestedRegion": "us-west-2"}), Decision.ALLOW),
    ("no policies at all: implicit deny", [], req(), Decision.IMPLICIT_DENY),
    # Action / NotAction
    ("actions match case-insensitively", [policy(allow("EC2:runinstances"))], req(), Decision.ALLOW),
    ("an action wildcard matches a prefix", [policy(allow("ec2:Run*"))], req(), Decision.ALLOW),
    ("? matches one character", [policy(allow("ec2:RunInstance?"))], req(), Decision.ALLOW),
    ("a service wildcard does not cross services", [policy(allow("iam:*"))], req(), Decision.IMPLICIT_DENY),
    ("NotAction allows everything but what it names", [policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})], req(), Decision.ALLOW),
    ("NotAction excludes what it names", [policy({"Effect": "Allow", "NotAction": "ec2:*", "Resource": "*"})], req(), Decision.IMPLICIT_DENY),
    # Resource / NotResource
    ("a resource ARN wildcard matches within its segment", [policy(allow(resource="arn:aws:ec2:us-west-2:*:instance/*"))], req(), Decision.ALLOW),
    ("a resource in another region does not match", [policy(allow(resource="arn:aws:ec2:eu-west-1:*:instance/*"))], req(), Decision.IMPLICIT_DENY),
    ("resource types are distinct", [policy(allow(resource="arn:aws:ec2:us-west-2:*:volume/*"))], req(), Decision.IMPLICIT_DENY),
    ("resource ARNs match case-sensitively", [policy(allow(resource="arn:aws:ec2:us-west-2:*:Instance/*"))], req(), Decision.IMPLICIT_DENY),
    ("an empty account segment is matched by the ARN of a public image", [policy(allow(resource="arn:aws:ec2:us-west-2::image/*"))], req(resource="arn:aws:ec2:us-west-2::image/ami-1"), Decision.ALLOW),
    ("NotResource allows all but what it names", [policy({"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:ec2:*:*:volume/*"})], req(), Decision.ALLOW),
    ("NotResource excludes what it names", [policy({"Effect": "Allow", "Action": "*", "NotResource": "arn:aws:ec2:*:*:instance/*"})], req(), Decision.IMPLICIT_DENY),
    ("several resources are alternatives", [policy(allow(resource=["arn:aws:ec2:*:*:volume/*", "arn:aws:ec2:*:*:instance/*"]))], req(), Decision.ALLOW),
    # String operators
    ("StringEquals matches exactly", [policy(allow(Condition={"StringEquals": {"aws:RequestTag/eks:eks-cluster-name": "sandbox"}}))], req(**{"aws:RequestTag/eks:eks-cluster-name": "sandbox"}), Decision.ALLOW),
    ("StringEquals is case-sensitive in its values", [policy(allow(Condition={"StringEquals": {"aws:RequestTag/eks:eks-cluster-name": "sandbox"}}))], req(**{"aws:RequestTag/eks:eks-cluster-name": "Sandbox"}), Decision.IMPLICIT_DENY),
    ("condition key names are case-insensitive", [policy(allow(Condition={"StringEquals": {"AWS:requestedregion": "us-west-2"}}))], req(**{"aws:RequestedRegion": "us-west-2"}), Decision.ALLOW),
    ("StringEqualsIgnoreCase ignores case", [policy(allow(Condition={"StringEqualsIgnoreCase": {"aws:RequestTag/team": "ops"}}))], req(**{"aws:RequestTag/team": "OPS"}), Decision.ALLOW),
    ("several values of one key are OR-ed", [policy(allow(Condition={"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateFleet"]}}))], req(**{"ec2:CreateAction": "CreateFleet"}), Decision.ALLOW),
    ("several keys are AND-ed", [policy(allow(Condition={"StringEquals": {"aws:RequestTag/a": "1", "aws:RequestTag/b": "2"}}))], req(**{"aws:RequestTag/a": "1"}), Decision.IMPLICIT_DENY),
    ("several operators are AND-ed", [policy(allow(Condition={**LT_OWNED}))], req(**{"aws:ResourceTag/kubernetes.io/cluster/sandbox": "owned"}), Decision.IMPLICIT_DENY),
    ("StringLike * needs the key present", [policy(allow(Condition={"StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}))], req(), Decision.IMPLICIT_DENY),
    ("StringLike * matches any present value", [policy(allow(Condition={"StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}))], req(**{"aws:RequestTag/karpenter.sh/nodepool": "default"}), Decision.ALLOW),
    ("StringLike ? is one character", [policy(allow(Condition={"StringLike": {"aws:RequestTag/x": "a?c"}}))], req(**{"aws:RequestTag/x": "abbc"}), Decision.IMPLICIT_DENY),
    ("a key missing from the request fails a positive operator", [policy(allow(Condition={"StringEquals": {"aws:RequestTag/eks:eks-cluster-name": "sandbox"}}))], req(), Decision.IMPLICIT_DENY),
    ("a key missing from the request satisfies a negated operator", [policy(allow(Condition={"StringNotEquals": {"aws:RequestTag/team": "ops"}}))], req(), Decision.ALLOW),
    ("StringNotEquals fails on any listed value", [policy(allow(Condition={"StringNotEquals": {"aws:RequestTag/team": ["ops", "dev"]}}))], req(**{"aws:RequestTag/team": "dev"}), Decision.IMPLICIT_DENY),
    ("StringNotLike holds when no pattern matches", [policy(allow(Condition={"StringNotLike": {"aws:RequestTag/team": "o*"}}))], req(**{"aws:RequestTag/team": "dev"}), Decision.ALLOW),
    # IfExists
    ("...IfExists holds when the key is missing", [policy(allow(Condition={"StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": "sandbox"}}))], req(), Decision.ALLOW),
    ("...IfExists checks a present key", [policy(allow(Condition={"StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": "sandbox"}}))], req(**{"aws:RequestTag/eks:eks-cluster-name": "other"}), Decision.IMPLICIT_DENY),
    # Null
    ("Null true holds when the key is missing", [policy(allow(Condition={"Null": {"aws:RequestTag/team": "true"}}))], req(), Decision.ALLOW),
    ("Null true fails when the key is present", [policy(allow(Condition={"Null": {"aws:RequestTag/team": "true"}}))], req(**{"aws:RequestTag/team": "x"}), Decision.IMPLICIT_DENY),
    ("Null false needs the key present", [policy(allow(Condition={"Null": {"aws:RequestTag/team": "false"}}))], req(), Decision.IMPLICIT_DENY),
    # Bool, Numeric, Date, IP, ARN
    ("Bool compares true/false", [policy(deny(Condition={"Bool": {"aws:SecureTransport": "false"}}), allow())], req(**{"aws:SecureTransport": "true"}), Decision.ALLOW),
    ("Bool with a JSON boolean", [policy(deny(Condition={"Bool": {"aws:SecureTransport": False}}), allow())], req(**{"aws:SecureTransport": "false"}), Decision.EXPLICIT_DENY),
    ("NumericLessThan compares numbers", [policy(allow(Condition={"NumericLessThan": {"ec2:VolumeSize": "100"}}))], req(**{"ec2:VolumeSize": "20"}), Decision.ALLOW),
    ("a number that does not parse does not match", [policy(allow(Condition={"NumericLessThan": {"ec2:VolumeSize": "100"}}))], req(**{"ec2:VolumeSize": "big"}), Decision.IMPLICIT_DENY),
    ("DateLessThan compares ISO times", [policy(allow(Condition={"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}))], req(**{"aws:CurrentTime": "2026-12-07T12:00:00Z"}), Decision.ALLOW),
    ("IpAddress matches a CIDR", [policy(allow(Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}))], req(**{"aws:SourceIp": "127.0.0.1"}), Decision.ALLOW),
    ("NotIpAddress excludes a CIDR", [policy(allow(Condition={"NotIpAddress": {"aws:SourceIp": "127.0.0.0/8"}}))], req(**{"aws:SourceIp": "127.0.0.1"}), Decision.IMPLICIT_DENY),
    ("ArnLike matches segment by segment", [policy(allow(Condition={"ArnLike": {"aws:SourceArn": "arn:aws:events:us-west-2:123456789012:rule/Karpenter-*"}}))], req(**{"aws:SourceArn": "arn:aws:events:us-west-2:123456789012:rule/Karpenter-sandbox-spot"}), Decision.ALLOW),
    ("ArnLike wildcards do not cross segments", [policy(allow(Condition={"ArnLike": {"aws:SourceArn": "arn:aws:events:*"}}))], req(**{"aws:SourceArn": "arn:aws:events:us-west-2:123456789012:rule/x"}), Decision.IMPLICIT_DENY),
    ("ArnNotEquals holds for another ARN", [policy(allow(Condition={"ArnNotEquals": {"aws:SourceArn": "arn:aws:events:us-west-2:123456789012:rule/a"}}))], req(**{"aws:SourceArn": "arn:aws:events:us-west-2:123456789012:rule/b"}), Decision.ALLOW),
    # Set operators
    ("ForAllValues holds when every request value is listed", [policy(allow(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]}}))], req(**{"aws:TagKeys": ["Name", "karpenter.sh/nodeclaim"]}), Decision.ALLOW),
    ("ForAllValues fails on one value not listed", [policy(allow(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]}}))], req(**{"aws:TagKeys": ["Name", "karpenter.sh/nodepool"]}), Decision.IMPLICIT_DENY),
    ("ForAllValues holds when the key is missing (AWS's documented pitfall)", [policy(allow(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]}}))], req(), Decision.ALLOW),
    ("ForAllValues holds for an empty list", [policy(allow(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["Name"]}}))], req(**{"aws:TagKeys": []}), Decision.ALLOW),
    ("ForAnyValue holds when one value is listed", [policy(allow(Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["Name"]}}))], req(**{"aws:TagKeys": ["x", "Name"]}), Decision.ALLOW),
    ("ForAnyValue fails when the key is missing", [policy(allow(Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["Name"]}}))], req(), Decision.IMPLICIT_DENY),
    ("ForAnyValue:StringLike with wildcards", [policy(allow(Condition={"ForAnyValue:StringLike": {"aws:TagKeys": ["karpenter.*"]}}))], req(**{"aws:TagKeys": ["x", "karpenter.sh/nodepool"]}), Decision.ALLOW),
    ("ForAllValues:StringNotEquals: no value may be listed", [policy(allow(Condition={"ForAllValues:StringNotEquals": {"aws:TagKeys": ["kubernetes.io/cluster/sandbox"]}}))], req(**{"aws:TagKeys": ["Name", "kubernetes.io/cluster/sandbox"]}), Decision.IMPLICIT_DENY),
    # Policy variables
    ("a policy variable resolves from the request", [policy(allow(resource="arn:aws:iam::123456789012:user/${aws:username}"))], req("iam:GetUser", "arn:aws:iam::123456789012:user/alice", **{"aws:username": "alice"}), Decision.ALLOW),
    ("a policy variable whose key is missing matches nothing", [policy(allow(resource="arn:aws:iam::123456789012:user/${aws:username}"))], req("iam:GetUser", "arn:aws:iam::123456789012:user/alice"), Decision.IMPLICIT_DENY),
    ("${*} is a literal asterisk", [policy(allow(Condition={"StringLike": {"aws:RequestTag/x": "a${*}"}}))], req(**{"aws:RequestTag/x": "abc"}), Decision.IMPLICIT_DENY),
    # A statement needs a resource in an identity policy
    ("an identity statement without Resource grants nothing", [policy({"Effect": "Allow", "Action": "*"})], req(), Decision.IMPLICIT_DENY),
]


@pytest.mark.parametrize("name,policies,request_,expected", CASES, ids=[c[0] for c in CASES])
def test_documented_case(name, policies, request_, expected):
    assert evaluate(policies, request_).decision is expected


QUEUE = "arn:aws:sqs:us-west-2:123456789012:Karpenter-sandbox"


def test_a_resource_policy_alone_can_allow_within_the_account():
    queue_policy = policy({"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "sqs:ReceiveMessage", "Resource": QUEUE})
    assert evaluate([], req("sqs:ReceiveMessage", QUEUE), [queue_policy]).decision is Decision.ALLOW


def test_a_resource_policy_for_another_principal_does_not_allow():
    queue_policy = policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/other"}, "Action": "sqs:*", "Resource": QUEUE})
    assert evaluate([], req("sqs:ReceiveMessage", QUEUE), [queue_policy]).decision is Decision.IMPLICIT_DENY


def test_an_explicit_deny_in_a_resource_policy_beats_an_identity_allow():
    queue_policy = policy({"Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": QUEUE, "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    identity = [policy(allow("sqs:*", QUEUE))]
    assert evaluate(identity, req("sqs:ReceiveMessage", QUEUE, **{"aws:SecureTransport": "false"}), [queue_policy]).decision is Decision.EXPLICIT_DENY
    assert evaluate(identity, req("sqs:ReceiveMessage", QUEUE, **{"aws:SecureTransport": "true"}), [queue_policy]).decision is Decision.ALLOW


def test_an_account_principal_names_every_principal_of_that_account():
    queue_policy = policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sqs:*", "Resource": QUEUE})
    assert evaluate([], req("sqs:ReceiveMessage", QUEUE), [queue_policy]).decision is Decision.ALLOW

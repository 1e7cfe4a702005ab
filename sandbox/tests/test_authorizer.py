"""The endpoint's authorizer (aws/authorizer.py) through the real SDK: the controller's
policies from templates/iam, unchanged, on a role assumed through STS; each call decided as
IAM decides it, and each denial parsed by botocore from the service's own wire format."""

import json
import re
import sys
import threading
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "sandbox" / "aws"))
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from eks_gaps import EksGaps  # noqa: E402
from server import ACCOUNT_ID, SandboxAws  # noqa: E402

REGION = "us-west-2"
CLUSTER = "authz"
NODE_ROLE = f"KarpenterNodeRole-{CLUSTER}"
CONTROLLER_ROLE = f"KarpenterControllerRole-{CLUSTER}"
QUEUE = f"Karpenter-{CLUSTER}"
ADMIN = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def render(template: str, **values: str) -> dict:
    text = (ROOT / "templates" / "iam" / template).read_text()
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)
    return json.loads(text)


@pytest.fixture(scope="module")
def endpoint():
    app = SandboxAws(DomainDispatcherApplication(create_backend_app), EksGaps(ACCOUNT_ID, lambda r, n: False, "API"), None)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    app.ready = True
    yield app, url
    server.shutdown()


def client(url, service, creds=None, region=REGION):
    return boto3.client(service, region_name=region, endpoint_url=url, **(creds or ADMIN))


@pytest.fixture(scope="module")
def account(endpoint):
    """What `karpctl init` leaves: node role and profile, the controller role with its five
    policies, the queue; a subnet, a security group and an image to launch from."""
    app, url = endpoint
    iam = client(url, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}, "Action": "sts:AssumeRole"}]}
    node_role = iam.create_role(RoleName=NODE_ROLE, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))["Role"]
    iam.create_role(RoleName=CONTROLLER_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    sqs = client(url, "sqs")
    queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    values = {"partition": "aws", "region": REGION, "account": ACCOUNT_ID, "cluster": CLUSTER, "node_role_arn": node_role["Arn"], "queue_arn": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{QUEUE}", "ec2_principal": "ec2.amazonaws.com"}
    for name in ("node-lifecycle", "iam-integration", "eks-integration", "interruption", "resource-discovery"):
        arn = iam.create_policy(PolicyName=f"KarpenterController-{name}-{CLUSTER}", PolicyDocument=json.dumps(render(f"{name}.json.hbs", **values)))["Policy"]["Arn"]
        iam.attach_role_policy(RoleName=CONTROLLER_ROLE, PolicyArn=arn)
    profile = f"{CLUSTER}_profile"
    iam.create_instance_profile(InstanceProfileName=profile, Tags=[{"Key": f"kubernetes.io/cluster/{CLUSTER}", "Value": "owned"}, {"Key": "topology.kubernetes.io/region", "Value": REGION}, {"Key": "karpenter.k8s.aws/ec2nodeclass", "Value": "default"}])
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=NODE_ROLE)
    ec2 = client(url, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="authz", Description="authz", VpcId=vpc)["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    creds = client(url, "sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{CONTROLLER_ROLE}", RoleSessionName="controller")["Credentials"]
    role = {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"], "aws_session_token": creds["SessionToken"]}
    return {"role": role, "profile": profile, "subnet": subnet, "group": group, "image": image, "queue_url": queue_url, "url": url, "app": app}


def owned_tags(pool="default", **extra):
    tags = {f"kubernetes.io/cluster/{CLUSTER}": "owned", "eks:eks-cluster-name": CLUSTER, "karpenter.k8s.aws/ec2nodeclass": "default", **extra}
    if pool is not None:
        tags["karpenter.sh/nodepool"] = pool
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def launch_template(a, name, tags, data_tags=None):
    ec2 = client(a["url"], "ec2", a["role"])
    data = {"ImageId": a["image"], "SecurityGroupIds": [a["group"]], "IamInstanceProfile": {"Name": a["profile"]}}
    if data_tags is not None:
        data["TagSpecifications"] = data_tags
    return ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data, TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}])


def fleet(a, template, resources, capacity="on-demand"):
    ec2 = client(a["url"], "ec2", a["role"])
    return ec2.create_fleet(
        Type="instant",
        TargetCapacitySpecification={"TotalTargetCapacity": 1, "DefaultTargetCapacityType": capacity},
        LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateName": template, "Version": "$Latest"}, "Overrides": [{"InstanceType": "m5.large", "SubnetId": a["subnet"]}]}],
        TagSpecifications=[{"ResourceType": r, "Tags": owned_tags(Name="default/claim")} for r in resources],
    )


def denied(excinfo) -> dict:
    return excinfo.value.response


def test_the_admin_is_never_evaluated(account):
    ec2 = client(account["url"], "ec2")
    ec2.create_launch_template(LaunchTemplateName="admin-untagged", LaunchTemplateData={"ImageId": account["image"]})


def test_a_launch_template_without_the_nodepool_tag_is_denied_in_ec2s_wire_format(account):
    with pytest.raises(ClientError) as e:
        launch_template(account, "karpenter.k8s.aws/untagged", owned_tags(pool=None))
    error = denied(e)["Error"]
    assert error["Code"] == "UnauthorizedOperation"
    assert denied(e)["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert f"assumed-role/{CONTROLLER_ROLE}/controller is not authorized to perform: ec2:CreateLaunchTemplate on resource: arn:aws:ec2:{REGION}:{ACCOUNT_ID}:launch-template/*" in error["Message"]
    encoded = error["Message"].rsplit("Encoded authorization failure message: ", 1)[1]
    decoded = json.loads(client(account["url"], "sts").decode_authorization_message(EncodedMessage=encoded)["DecodedMessage"])
    assert decoded["allowed"] is False and decoded["context"]["action"] == "ec2:CreateLaunchTemplate"
    keys = {c["key"] for c in decoded["context"]["conditions"]["items"]}
    assert "aws:RequestTag/eks:eks-cluster-name" in keys and "aws:RequestTag/karpenter.sh/nodepool" not in keys


def test_a_fleet_tagged_as_upstream_tags_it_launches(account):
    ni = [{"ResourceType": "network-interface", "Tags": owned_tags()}]
    launch_template(account, "karpenter.k8s.aws/od", owned_tags(), ni)
    result = fleet(account, "karpenter.k8s.aws/od", ["instance", "volume", "fleet"])
    assert [i["InstanceIds"] for i in result["Instances"]], result


@pytest.mark.parametrize("missing", ["fleet", "volume", "instance"])
def test_each_created_resource_is_authorized_on_its_own_tags(account, missing):
    launch_template(account, f"karpenter.k8s.aws/no-{missing}", owned_tags(), [{"ResourceType": "network-interface", "Tags": owned_tags()}])
    with pytest.raises(ClientError) as e:
        fleet(account, f"karpenter.k8s.aws/no-{missing}", [r for r in ("instance", "volume", "fleet") if r != missing])
    assert f":{missing}/*" in denied(e)["Error"]["Message"]


def test_the_network_interface_needs_the_launch_templates_tags(account):
    launch_template(account, "karpenter.k8s.aws/no-eni", owned_tags())
    with pytest.raises(ClientError) as e:
        fleet(account, "karpenter.k8s.aws/no-eni", ["instance", "volume", "fleet"])
    assert ":network-interface/* because no identity-based policy allows" in denied(e)["Error"]["Message"]


def test_a_spot_fleet_needs_its_spot_request_tagged(account):
    launch_template(account, "karpenter.k8s.aws/spot-untagged", owned_tags(), [{"ResourceType": "network-interface", "Tags": owned_tags()}])
    with pytest.raises(ClientError) as e:
        fleet(account, "karpenter.k8s.aws/spot-untagged", ["instance", "volume", "fleet"], capacity="spot")
    assert ":spot-instances-request/*" in denied(e)["Error"]["Message"]
    data_tags = [{"ResourceType": r, "Tags": owned_tags()} for r in ("network-interface", "spot-instances-request")]
    launch_template(account, "karpenter.k8s.aws/spot", owned_tags(), data_tags)
    fleet(account, "karpenter.k8s.aws/spot", ["instance", "volume", "fleet"], capacity="spot")


def test_a_launch_template_not_of_this_cluster_cannot_be_launched_or_deleted(account):
    client(account["url"], "ec2").create_launch_template(LaunchTemplateName="someone-elses", LaunchTemplateData={"ImageId": account["image"]}, TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "karpenter.sh/nodepool", "Value": "x"}]}])
    with pytest.raises(ClientError) as e:
        fleet(account, "someone-elses", ["instance", "volume", "fleet"])
    assert ":launch-template/lt-" in denied(e)["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        client(account["url"], "ec2", account["role"]).delete_launch_template(LaunchTemplateName="someone-elses")
    assert denied(e)["Error"]["Code"] == "UnauthorizedOperation"


def test_terminating_an_instance_needs_it_owned(account):
    ec2 = client(account["url"], "ec2")
    foreign = ec2.run_instances(ImageId=account["image"], MinCount=1, MaxCount=1, InstanceType="m5.large")["Instances"][0]["InstanceId"]
    with pytest.raises(ClientError) as e:
        client(account["url"], "ec2", account["role"]).terminate_instances(InstanceIds=[foreign])
    assert f"instance/{foreign}" in denied(e)["Error"]["Message"]


def test_iam_denials_are_access_denied_in_iams_wire_format(account):
    iam = client(account["url"], "iam", account["role"])
    with pytest.raises(ClientError) as e:
        iam.create_role(RoleName="escalate", AssumeRolePolicyDocument="{}")
    assert denied(e)["Error"]["Code"] == "AccessDenied"
    assert denied(e)["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert f"is not authorized to perform: iam:CreateRole on resource: arn:aws:iam::{ACCOUNT_ID}:role/escalate" in denied(e)["Error"]["Message"]


def test_instance_profiles_need_the_node_classes_tags_and_pass_role(account):
    iam = client(account["url"], "iam", account["role"])
    tags = [{"Key": f"kubernetes.io/cluster/{CLUSTER}", "Value": "owned"}, {"Key": "eks:eks-cluster-name", "Value": CLUSTER}, {"Key": "topology.kubernetes.io/region", "Value": REGION}, {"Key": "karpenter.k8s.aws/ec2nodeclass", "Value": "default"}]
    iam.create_instance_profile(InstanceProfileName="authz_tagged", Tags=tags)
    iam.add_role_to_instance_profile(InstanceProfileName="authz_tagged", RoleName=NODE_ROLE)
    with pytest.raises(ClientError) as e:
        iam.create_instance_profile(InstanceProfileName="authz_untagged")
    assert "iam:CreateInstanceProfile" in denied(e)["Error"]["Message"]
    client(account["url"], "iam").create_role(RoleName="admin-like", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    with pytest.raises(ClientError) as e:
        iam.add_role_to_instance_profile(InstanceProfileName="authz_tagged", RoleName="admin-like")
    assert "iam:PassRole on resource: arn:aws:iam::123456789012:role/admin-like" in denied(e)["Error"]["Message"]


def test_sqs_and_ssm_calls_beyond_the_policy_are_denied(account):
    sqs = client(account["url"], "sqs", account["role"])
    sqs.receive_message(QueueUrl=account["queue_url"], WaitTimeSeconds=0)
    with pytest.raises(ClientError) as e:
        sqs.send_message(QueueUrl=account["queue_url"], MessageBody="forged")
    assert denied(e)["Error"]["Code"] in ("AccessDenied", "AccessDeniedException")
    assert "sqs:SendMessage" in denied(e)["Error"]["Message"]
    client(account["url"], "ssm").put_parameter(Name="/private/secret", Value="x", Type="String")
    with pytest.raises(ClientError) as e:
        client(account["url"], "ssm", account["role"]).get_parameter(Name="/private/secret")
    assert denied(e)["Error"]["Code"] == "AccessDeniedException"


def test_reads_in_another_region_are_denied(account):
    client(account["url"], "ec2", account["role"]).describe_subnets()
    with pytest.raises(ClientError) as e:
        client(account["url"], "ec2", account["role"], region="eu-west-1").describe_subnets()
    assert "ec2:DescribeSubnets on resource: *" in denied(e)["Error"]["Message"]


def test_a_guardrail_deny_beats_the_roles_allow_and_says_so(account):
    import urllib.request

    guard = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "ec2:DescribeSubnets", "Resource": "*"}]}
    req = urllib.request.Request(f"{account['url']}/_sandbox/guardrails", data=json.dumps(guard).encode(), method="POST")
    urllib.request.urlopen(req).read()
    try:
        with pytest.raises(ClientError) as e:
            client(account["url"], "ec2", account["role"]).describe_subnets()
        assert "because an explicit deny in a service control policy" in denied(e)["Error"]["Message"]
        client(account["url"], "ec2").describe_subnets()  # the admin is not subject to it
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{account['url']}/_sandbox/guardrails", method="DELETE")).read()

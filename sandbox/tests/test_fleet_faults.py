"""CreateFleet capacity faults (server.py): refused overrides are cut from the request moto
sees, and answered in EC2's `errorSet` wire format. The path through the SDK is tested from
Rust in controller/aws/tests/sandbox.rs."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "aws"))
from server import drop_overrides, error_set, overrides  # noqa: E402


class Subnet:
    def __init__(self, zone):
        self.availability_zone = zone


class Backend:
    """Only what the fault code asks of moto's EC2 backend: a subnet's zone."""

    def get_subnet(self, subnet_id):
        return Subnet({"subnet-a": "us-west-2a", "subnet-b": "us-west-2b"}[subnet_id])


PARAMS = {
    "Action": "CreateFleet",
    "Type": "instant",
    "LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName": "lt-one",
    "LaunchTemplateConfigs.1.LaunchTemplateSpecification.Version": "$Latest",
    "LaunchTemplateConfigs.1.Overrides.1.InstanceType": "m5.large",
    "LaunchTemplateConfigs.1.Overrides.1.SubnetId": "subnet-a",
    "LaunchTemplateConfigs.1.Overrides.2.InstanceType": "c5.large",
    "LaunchTemplateConfigs.1.Overrides.2.SubnetId": "subnet-b",
    "LaunchTemplateConfigs.2.LaunchTemplateSpecification.LaunchTemplateName": "lt-two",
    "LaunchTemplateConfigs.2.Overrides.1.InstanceType": "m6g.large",
    "LaunchTemplateConfigs.2.Overrides.1.SubnetId": "subnet-a",
}


def test_refused_overrides_are_dropped_and_renumbered():
    params, errors = drop_overrides(PARAMS, {("m5.large", "us-west-2a")}, Backend())
    assert params["Type"] == "instant"
    assert params["LaunchTemplateConfigs.1.Overrides.1.InstanceType"] == "c5.large"
    assert "LaunchTemplateConfigs.1.Overrides.2.InstanceType" not in params
    assert params["LaunchTemplateConfigs.2.Overrides.1.InstanceType"] == "m6g.large"
    assert [(e["InstanceType"], e["AvailabilityZone"], e["LaunchTemplateName"]) for e in errors] == [("m5.large", "us-west-2a", "lt-one")]


def test_a_config_left_without_overrides_is_dropped():
    params, errors = drop_overrides(PARAMS, {("m5.large", "us-west-2a"), ("c5.large", "us-west-2b")}, Backend())
    assert params["LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName"] == "lt-two"
    assert not any(k.startswith("LaunchTemplateConfigs.2.") for k in params)
    assert [o["InstanceType"] for o in overrides(params).values()] == ["m6g.large"]
    assert len(errors) == 2


def test_error_set_is_ec2_wire_format():
    _, errors = drop_overrides(PARAMS, {("m5.large", "us-west-2a")}, Backend())
    item = ET.fromstring(error_set(errors)).find("item")
    assert item.findtext("errorCode") == "InsufficientInstanceCapacity"
    assert item.findtext("launchTemplateAndOverrides/overrides/instanceType") == "m5.large"
    assert item.findtext("launchTemplateAndOverrides/overrides/availabilityZone") == "us-west-2a"
    assert item.findtext("launchTemplateAndOverrides/launchTemplateSpecification/launchTemplateName") == "lt-one"

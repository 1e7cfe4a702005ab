"""Seed an account that looks like a real EKS setup, as eksctl or the console would leave it.

Most of it goes through the public API (boto3 against this very endpoint), so it is what
any client would see. Three things cannot, and are written into moto's backends directly:
the cluster's endpoint, CA and OIDC issuer must point at the sandbox apiserver (moto makes
up its own); EKS-optimized AMIs are owned by Amazon, not by the caller; and public SSM
parameters under /aws/service are read-only through the API, as on AWS.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from pathlib import Path
from typing import Any

import boto3

ACCOUNT_ID = "123456789012"
EKS_AMI_OWNER = "602401143452"  # the account that publishes amazon-eks-node-* AMIs
BOTTLEROCKET_OWNER = "092701018921"
AMI_RELEASE = "v20261115"
MANAGED_NODE_POLICIES = [
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
]


def client(service: str, endpoint: str, region: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def tags_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def al2023_user_data(cluster: dict[str, Any], labels: dict[str, str], max_pods: int, taints: list[dict[str, str]] | None = None) -> str:
    """The MIME multipart NodeConfig an EKS managed node group's launch template carries."""
    node_labels = ",".join(f"{k}={v}" for k, v in labels.items())
    taint_flags = [f'    - "--register-with-taints={",".join(t["key"] + ("=" + t["value"] if t.get("value") else "") + ":" + t["effect"] for t in taints)}"'] if taints else []
    return "\n".join(
        [
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="//"',
            "",
            "--//",
            "Content-Type: application/node.eks.aws",
            "",
            "---",
            "apiVersion: node.eks.aws/v1alpha1",
            "kind: NodeConfig",
            "spec:",
            "  cluster:",
            f"    apiServerEndpoint: {cluster['endpoint']}",
            f"    certificateAuthority: {cluster['ca_b64']}",
            f"    cidr: {cluster['service_cidr']}",
            f"    name: {cluster['name']}",
            "  kubelet:",
            "    config:",
            f"      maxPods: {max_pods}",
            "      clusterDNS:",
            f"      - {cluster['dns_ip']}",
            "    flags:",
            f'    - "--node-labels={node_labels}"',
            *taint_flags,
            "",
            "--//--",
            "",
        ]
    )


def seed_account(endpoint: str, config: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    from moto.backends import get_backend
    from moto.ec2.models.amis import Ami
    from moto.ssm.models import Parameter

    name = config["cluster_name"]
    region = config["region"]
    k8s = config["kubernetes_version"]
    ec2 = client("ec2", endpoint, region)
    iam = client("iam", endpoint, region)
    eks = client("eks", endpoint, region)
    asg = client("autoscaling", endpoint, region)
    owned = {f"kubernetes.io/cluster/{name}": "owned"}

    # Network: one VPC, three private subnets in three zones, the cluster security group.
    vpc = ec2.create_vpc(
        CidrBlock="10.0.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": tags_list({"Name": f"eksctl-{name}-cluster/VPC"})}],
    )["Vpc"]["VpcId"]
    subnets = []
    for i, zone in enumerate(["a", "b", "c"]):
        subnet = ec2.create_subnet(
            VpcId=vpc,
            CidrBlock=f"10.0.{32 * (i + 1)}.0/19",
            AvailabilityZone=f"{region}{zone}",
            TagSpecifications=[
                {
                    "ResourceType": "subnet",
                    "Tags": tags_list({"Name": f"eksctl-{name}-cluster/SubnetPrivate{region.replace('-', '').upper()}{zone.upper()}", "kubernetes.io/role/internal-elb": "1"}),
                }
            ],
        )["Subnet"]
        subnets.append(subnet)
    suffix = uuid.uuid4().hex[:10]
    cluster_sg = ec2.create_security_group(
        GroupName=f"eks-cluster-sg-{name}-{suffix}",
        Description="EKS created security group applied to ENI that is attached to EKS Control Plane master nodes, as well as any managed workloads.",
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags_list({"Name": f"eks-cluster-sg-{name}-{suffix}", "aws:eks:cluster-name": name, **owned})}],
    )["GroupId"]

    # IAM: the cluster role, and the system node group's role with its instance profile.
    def role(role_name: str, service: str, policies: list[str]) -> str:
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}
        arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        for policy in policies:
            iam.attach_role_policy(RoleName=role_name, PolicyArn=f"arn:aws:iam::aws:policy/{policy}")
        return arn

    cluster_role = role(f"eksctl-{name}-cluster-ServiceRole", "eks.amazonaws.com", ["AmazonEKSClusterPolicy"])
    node_role_name = f"eksctl-{name}-nodegroup-system-NodeInstanceRole"
    node_role = role(node_role_name, "ec2.amazonaws.com", MANAGED_NODE_POLICIES)
    profile_name = f"eks-{uuid.uuid4()}"
    profile = iam.create_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=profile_name, RoleName=node_role_name)

    # The cluster, then what moto cannot know: where its apiserver really is.
    eks.create_cluster(
        name=name,
        version=k8s,
        roleArn=cluster_role,
        resourcesVpcConfig={"subnetIds": [s["SubnetId"] for s in subnets], "securityGroupIds": [], "endpointPublicAccess": True, "endpointPrivateAccess": True},
        kubernetesNetworkConfig={"serviceIpv4Cidr": config["service_cidr"], "ipFamily": "ipv4"},
        tags={"alpha.eksctl.io/cluster-name": name},
    )
    cluster = get_backend("eks")[ACCOUNT_ID][region].clusters[name]
    cluster.endpoint = config["apiserver_endpoint"]
    cluster.certificate_authority = {"data": config["ca_b64"]}
    cluster.identity = {"oidc": {"issuer": config["oidc_issuer"]}}
    cluster.kubernetes_network_config = {"serviceIpv4Cidr": config["service_cidr"], "ipFamily": "ipv4", "elasticLoadBalancing": {"enabled": False}}
    cluster.resources_vpc_config = {
        "subnetIds": [s["SubnetId"] for s in subnets],
        "securityGroupIds": [],
        "clusterSecurityGroupId": cluster_sg,
        "vpcId": vpc,
        "endpointPublicAccess": True,
        "endpointPrivateAccess": True,
        "publicAccessCidrs": ["0.0.0.0/0"],
    }
    cluster.platformVersion = "eks.3"

    # EKS-optimized AMIs, owned by Amazon and published under the SSM names EKS documents.
    ec2_backend = get_backend("ec2")[ACCOUNT_ID][region]
    ssm_backend = get_backend("ssm")[ACCOUNT_ID][region]
    now = datetime.datetime.now(datetime.timezone.utc)
    amis: dict[str, str] = {}

    def publish(ssm_name: str, value: str) -> None:
        ssm_backend._parameters[ssm_name].append(
            Parameter(account_id=ACCOUNT_ID, name=ssm_name, value=value, parameter_type="String", description=None, allowed_pattern=None, keyid=None, last_modified_date=now, version=1, data_type="aws:ec2:image" if ssm_name.endswith("image_id") else "text")
        )

    def ami(ami_name: str, arch: str, owner: str) -> str:
        ami_id = "ami-" + uuid.uuid4().hex[:17]
        image = Ami(ec2_backend, ami_id, name=ami_name, description=f"EKS Kubernetes Worker AMI ({ami_name})", owner_id=owner, owner_alias="amazon", public=True, virtualization_type="hvm", architecture=arch, root_device_type="ebs", root_device_name="/dev/xvda", hypervisor="xen", creation_date=now, region_name=region)
        ec2_backend.amis[ami_id] = image
        amis[ami_name] = ami_id
        return ami_id

    for arch in ("x86_64", "arm64"):
        for variant in ("standard", "nvidia", "neuron") if arch == "x86_64" else ("standard", "nvidia"):
            ami_name = f"amazon-eks-node-al2023-{arch}-{variant}-{k8s}-{AMI_RELEASE}"
            ami_id = ami(ami_name, arch, EKS_AMI_OWNER)
            base = f"/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{arch}/{variant}"
            publish(f"{base}/recommended/image_id", ami_id)
            publish(f"{base}/recommended/release_version", f"{k8s}.2-{AMI_RELEASE[1:]}")
            publish(f"{base}/{ami_name}/image_id", ami_id)
        al2_path = {"x86_64": "amazon-linux-2", "arm64": "amazon-linux-2-arm64"}[arch]
        al2_id = ami(f"amazon-eks-{'arm64-' if arch == 'arm64' else ''}node-{k8s}-{AMI_RELEASE}", arch, EKS_AMI_OWNER)
        publish(f"/aws/service/eks/optimized-ami/{k8s}/{al2_path}/recommended/image_id", al2_id)
        publish(f"/aws/service/eks/optimized-ami/{k8s}/{al2_path}/amazon-eks-{'arm64-' if arch == 'arm64' else ''}node-{k8s}-{AMI_RELEASE}/image_id", al2_id)
        for flavour in ("", "-nvidia"):
            br_name = f"bottlerocket-aws-k8s-{k8s}{flavour}-{arch}-v1.52.0-6c8e5a3b"
            br_id = ami(br_name, arch, BOTTLEROCKET_OWNER)
            publish(f"/aws/service/bottlerocket/aws-k8s-{k8s}{flavour}/{arch}/latest/image_id", br_id)
            publish(f"/aws/service/bottlerocket/aws-k8s-{k8s}{flavour}/{arch}/1.52.0-6c8e5a3b/image_id", br_id)
    al2_gpu = ami(f"amazon-eks-gpu-node-{k8s}-{AMI_RELEASE}", "x86_64", EKS_AMI_OWNER)
    publish(f"/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2-gpu/recommended/image_id", al2_gpu)

    # The managed node group `system`: launch template, EKS node group, and its ASG, whose
    # instances the registrar turns into Nodes exactly as their user data says.
    facts = {
        "cluster": name,
        "region": region,
        "kubernetes_version": k8s,
        "apiserver_endpoint": config["apiserver_endpoint"],
        "ca_b64": config["ca_b64"],
        "service_cidr": config["service_cidr"],
        "dns_ip": config["dns_ip"],
        "subnets": [s["SubnetId"] for s in subnets],
        "cluster_security_group": cluster_sg,
        "node_role": node_role,
        "instance_profile": profile,
        "ami": amis[f"amazon-eks-node-al2023-x86_64-standard-{k8s}-{AMI_RELEASE}"],
    }
    count = config["system_nodes"]
    system = add_managed_node_group(endpoint, facts, data_dir, "system", config["system_instance_type"], count, count + 1)

    return {
        **facts,
        "vpc": vpc,
        "system_asg": system["asg"],
        "system_node_role": node_role,
        "amis": amis,
    }


def add_managed_node_group(
    endpoint: str,
    facts: dict[str, Any],
    data_dir: Path,
    group: str,
    instance_type: str,
    count: int,
    max_size: int,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    min_size: int | None = None,
) -> dict[str, Any]:
    """One EKS managed node group as EKS builds it: a launch template whose user data carries
    the group's labels and taints, the node group, and an Auto Scaling group with Cluster
    Autoscaler's auto-discovery tags holding `count` running instances (one per zone in turn).
    Used by the seed (`system`) and by the `cas` scenario (`workers`)."""
    from moto.backends import get_backend

    name, region = facts["cluster"], facts["region"]
    ec2 = client("ec2", endpoint, region)
    eks = client("eks", endpoint, region)
    asg = client("autoscaling", endpoint, region)
    owned = {f"kubernetes.io/cluster/{name}": "owned"}
    instance_types = json.loads((data_dir / "instance-types.json").read_text())
    if instance_type not in instance_types:
        raise ValueError(f"unknown instance type {instance_type!r}")
    node_labels = {
        "eks.amazonaws.com/nodegroup-image": facts["ami"],
        "eks.amazonaws.com/capacityType": "ON_DEMAND",
        "eks.amazonaws.com/nodegroup": group,
        **(labels or {}),
    }
    user_data = al2023_user_data({"name": name, "endpoint": facts["apiserver_endpoint"], "ca_b64": facts["ca_b64"], "service_cidr": facts["service_cidr"], "dns_ip": facts["dns_ip"]}, node_labels, instance_types[instance_type]["eni_limited_max_pods"], taints or [])
    lt = ec2.create_launch_template(
        LaunchTemplateName=f"eks-{uuid.uuid4()}",
        LaunchTemplateData={
            "ImageId": facts["ami"],
            "InstanceType": instance_type,
            "IamInstanceProfile": {"Arn": facts["instance_profile"]},
            "SecurityGroupIds": [facts["cluster_security_group"]],
            "UserData": base64.b64encode(user_data.encode()).decode(),
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
            "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20, "VolumeType": "gp3"}}],
        },
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags_list({"eks:cluster-name": name, "eks:nodegroup-name": group})}],
    )["LaunchTemplate"]
    minimum = count if min_size is None else min_size
    eks.create_nodegroup(
        clusterName=name,
        nodegroupName=group,
        scalingConfig={"minSize": minimum, "maxSize": max_size, "desiredSize": count},
        subnets=facts["subnets"],
        nodeRole=facts["node_role"],
        launchTemplate={"id": lt["LaunchTemplateId"], "version": "1"},
        capacityType="ON_DEMAND",
        labels=labels or {},
        taints=[{"key": t["key"], "value": t.get("value", ""), "effect": EKS_TAINT_EFFECTS[t["effect"]]} for t in taints or []],
        tags={"alpha.eksctl.io/nodegroup-name": group},
    )
    asg_name = f"eks-{group}-{uuid.uuid4().hex[:24]}"
    propagate = {
        "eks:cluster-name": name,
        "eks:nodegroup-name": group,
        "k8s.io/cluster-autoscaler/enabled": "true",
        f"k8s.io/cluster-autoscaler/{name}": "owned",
        **owned,
    }
    # Instances go one per zone (moto's ASG would stack them in the first subnet), then join
    # the ASG, as a managed node group's instances are.
    asg.create_auto_scaling_group(
        AutoScalingGroupName=asg_name,
        LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"], "Version": "1"},
        MinSize=0,
        MaxSize=max_size,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(facts["subnets"]),
        Tags=[{"ResourceId": asg_name, "ResourceType": "auto-scaling-group", "Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in propagate.items()],
    )
    launch_into_group(endpoint, facts, asg_name, count)
    asg.update_auto_scaling_group(AutoScalingGroupName=asg_name, MinSize=minimum)
    nodegroup = get_backend("eks")[ACCOUNT_ID][region].clusters[name].nodegroups[group]
    nodegroup.resources = {"autoScalingGroups": [{"name": asg_name}], "remoteAccessSecurityGroup": None}
    nodegroup.instance_types = [instance_type]
    return {"name": group, "asg": asg_name, "launch_template": lt["LaunchTemplateId"]}


# EKS's taint effects as CreateNodegroup spells them.
EKS_TAINT_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}


def launch_into_group(endpoint: str, facts: dict[str, Any], asg_name: str, count: int) -> list[str]:
    """Launch `count` instances from the group's launch template, spread over the zones the
    group has fewest in, and attach them (the ASG's desired capacity grows by `count`)."""
    if count <= 0:
        return []
    region = facts["region"]
    ec2 = client("ec2", endpoint, region)
    asg = client("autoscaling", endpoint, region)
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])["AutoScalingGroups"][0]
    template = group["LaunchTemplate"]
    tags = {t["Key"]: t["Value"] for t in group.get("Tags", []) if t.get("PropagateAtLaunch")}
    subnets = group["VPCZoneIdentifier"].split(",")
    zone_of = {s["SubnetId"]: s["AvailabilityZone"] for s in ec2.describe_subnets(SubnetIds=subnets)["Subnets"]}
    per_zone = {zone_of[s]: 0 for s in subnets}
    for i in group.get("Instances", []):
        per_zone[i["AvailabilityZone"]] = per_zone.get(i["AvailabilityZone"], 0) + 1
    if group["MaxSize"] < len(group.get("Instances", [])) + count:
        asg.update_auto_scaling_group(AutoScalingGroupName=asg_name, MaxSize=len(group.get("Instances", [])) + count)
    launched = []
    for _ in range(count):
        subnet = min(subnets, key=lambda s: (per_zone[zone_of[s]], subnets.index(s)))
        per_zone[zone_of[subnet]] += 1
        instance = ec2.run_instances(
            MinCount=1,
            MaxCount=1,
            LaunchTemplate={"LaunchTemplateId": template["LaunchTemplateId"], "Version": template.get("Version", "1")},
            IamInstanceProfile={"Arn": facts["instance_profile"]},
            SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags_list({**tags, "aws:autoscaling:groupName": asg_name, "Name": f"{facts['cluster']}-{tags.get('eks:nodegroup-name', 'group')}-Node"})}],
        )["Instances"][0]
        launched.append(instance["InstanceId"])
    asg.attach_instances(AutoScalingGroupName=asg_name, InstanceIds=launched)
    return launched



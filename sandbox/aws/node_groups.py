"""Managed node groups whose scaling config really moves their instances.

moto's `UpdateNodegroupConfig` only rewrites the node group's record; on EKS the group's Auto
Scaling group follows, so instances launch (and register as Nodes through the registrar) or
terminate (and their Nodes leave). After moto accepts an update, `reconcile` brings the
group's ASG to the new min/max/desired: new instances come from the group's launch template
into the zones it has fewest in; on scale-in the ASG's default termination policy picks the
instances — the zone with most instances first, then the oldest launch (the real policy's
last tie-breaks, "closest to the next billing hour" and random, are not modelled). A client
that wants chosen instances gone terminates them itself with
`TerminateInstanceInAutoScalingGroup --should-decrement-desired-capacity`, as Cluster
Autoscaler does, and the reconcile then has nothing left to do.
"""

from __future__ import annotations

from typing import Any

import seed


def scale_in_victims(instances: list[dict[str, Any]], count: int) -> list[str]:
    """Which `count` instances the default termination policy removes: one at a time from the
    zone holding the most (ties: the zone sorting first), the oldest launch there."""
    left = sorted(instances, key=lambda i: (str(i["launch_time"]), i["id"]))
    victims: list[str] = []
    for _ in range(min(count, len(left))):
        per_zone: dict[str, int] = {}
        for i in left:
            per_zone[i["zone"]] = per_zone.get(i["zone"], 0) + 1
        zone = min(per_zone, key=lambda z: (-per_zone[z], z))
        victim = next(i for i in left if i["zone"] == zone)
        victims.append(victim["id"])
        left.remove(victim)
    return victims


def reconcile(endpoint: str, facts: dict[str, Any], region: str, cluster: str, group: str) -> dict[str, Any]:
    """Bring the node group's ASG to its scaling config; returns what was launched/terminated."""
    eks = seed.client("eks", endpoint, region)
    asg = seed.client("autoscaling", endpoint, region)
    ec2 = seed.client("ec2", endpoint, region)
    ng = eks.describe_nodegroup(clusterName=cluster, nodegroupName=group)["nodegroup"]
    scaling = ng["scalingConfig"]
    names = [g["name"] for g in (ng.get("resources") or {}).get("autoScalingGroups") or []]
    if not names:
        return {"launched": [], "terminated": []}
    name = names[0]
    current = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]
    members = [i for i in current.get("Instances", []) if i.get("LifecycleState", "InService") not in ("Terminating", "Terminated")]
    desired, low, high = scaling["desiredSize"], scaling["minSize"], scaling["maxSize"]
    # Bounds that admit both the current and the new count while instances change.
    asg.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=min(low, len(members)), MaxSize=max(high, len(members)))
    launched: list[str] = []
    terminated: list[str] = []
    if desired > len(members):
        launched = seed.launch_into_group(endpoint, {**facts, "cluster": cluster, "region": region}, name, desired - len(members))
    elif desired < len(members):
        ids = [i["InstanceId"] for i in members]
        described = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        facts_by_id = {i["InstanceId"]: {"id": i["InstanceId"], "zone": i["Placement"]["AvailabilityZone"], "launch_time": i["LaunchTime"]} for r in described for i in r["Instances"]}
        for victim in scale_in_victims([facts_by_id[i] for i in ids], len(members) - desired):
            asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
            terminated.append(victim)
    asg.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=low, MaxSize=high)
    return {"launched": launched, "terminated": terminated}

"""Scale-in choice of the node-group reconcile (node_groups.py): the ASG default termination
policy's zone balance, then the oldest launch. The end-to-end path (UpdateNodegroupConfig
moving instances and Nodes) is tested from Rust in tests/migrate.rs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "aws"))
from node_groups import scale_in_victims  # noqa: E402


def inst(i, zone, t):
    return {"id": i, "zone": zone, "launch_time": f"2026-12-07T10:0{t}:00Z"}


def test_the_zone_with_most_instances_loses_one_first():
    instances = [inst("i-a1", "a", 1), inst("i-b1", "b", 0), inst("i-b2", "b", 2), inst("i-c1", "c", 3)]
    assert scale_in_victims(instances, 1) == ["i-b1"]


def test_zones_stay_balanced_and_the_oldest_goes_within_a_zone():
    instances = [inst("i-a1", "a", 5), inst("i-a2", "a", 1), inst("i-b1", "b", 2), inst("i-b2", "b", 3)]
    assert scale_in_victims(instances, 2) == ["i-a2", "i-b1"]


def test_asking_for_more_than_there_are_removes_all():
    instances = [inst("i-a1", "a", 1)]
    assert scale_in_victims(instances, 3) == ["i-a1"]
    assert scale_in_victims([], 2) == []

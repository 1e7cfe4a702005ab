"""Interruptions (aws/interruption.py) against moto in-process: each kind lands exactly one
AWS-shaped message per event in a queue wired the way `karpctl init` wires it (queue with
its policy, five rules with `{"source", "detail-type"}` patterns targeting it); no rule or no
queue policy means no message, as in AWS; spot's delayed termination really happens and is
announced by state-change events. The CLI side (`sandbox interrupt`) needs the sandbox up."""

import copy
import json
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "aws"))
import interruption  # noqa: E402
from interruption import InterruptError, Interruptions  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-west-2"
CLUSTER = "sandbox"
QUEUE = f"Karpenter-{CLUSTER}"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}"
# src/plan/init.rs INTERRUPTION_EVENTS: (rule suffix, source, detail-type).
RULES = [
    ("ScheduledChange", "aws.health", "AWS Health Event"),
    ("SpotInterruption", "aws.ec2", "EC2 Spot Instance Interruption Warning"),
    ("Rebalance", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
    ("InstanceStateChange", "aws.ec2", "EC2 Instance State-change Notification"),
    ("CapacityReservationInterruption", "aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
]
# src/plan/init.rs queue_policy.
QUEUE_POLICY = {
    "Version": "2012-10-17",
    "Id": "EC2InterruptionPolicy",
    "Statement": [
        {"Sid": "AllowEventBridgeToSend", "Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
         "Action": "sqs:SendMessage", "Resource": QUEUE_ARN},
        {"Sid": "DenyHTTP", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": QUEUE_ARN,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ],
}
ENVELOPE = ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"]


@pytest.fixture
def aws(monkeypatch):
    # moto intercepts AWS's own endpoints only: a shell pointed at the sandbox must not leak in.
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield {name: boto3.client(name, region_name=REGION) for name in ("ec2", "sqs", "events")}


def create_queue(aws, policy=QUEUE_POLICY):
    attributes = {"MessageRetentionPeriod": "300", "SqsManagedSseEnabled": "true"}
    if policy:
        attributes["Policy"] = json.dumps(policy)
    return aws["sqs"].create_queue(QueueName=QUEUE, Attributes=attributes)["QueueUrl"]


def create_rules(aws, state="ENABLED"):
    for suffix, source, detail_type in RULES:
        name = f"Karpenter-{CLUSTER}-{suffix}"
        aws["events"].put_rule(Name=name, EventPattern=json.dumps({"source": [source], "detail-type": [detail_type]}), State=state)
        aws["events"].put_targets(Rule=name, Targets=[{"Id": "KarpenterInterruptionQueueTarget", "Arn": QUEUE_ARN}])


def wired_as_init_wires_it(aws):
    url = create_queue(aws)
    create_rules(aws)
    return url


def launch(aws, spot=True):
    extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    return aws["ec2"].run_instances(ImageId="ami-0123456789abcdef0", InstanceType="m5.large", MinCount=1, MaxCount=1, **extra)["Instances"][0]["InstanceId"]


def drain(aws, url):
    bodies = []
    while True:
        messages = aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for m in messages:
            bodies.append(json.loads(m["Body"]))
            aws["sqs"].delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def state(aws, instance):
    return aws["ec2"].describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]


def arn(instance):
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}"


class Timers:
    """A schedule that keeps the delayed actions for the test to fire."""

    def __init__(self):
        self.due = []

    def __call__(self, delay, fn):
        self.due.append((delay, fn))

    def fire(self):
        due, self.due = self.due, []
        for _, fn in due:
            fn()


def check_envelope(body, detail_type, source):
    assert list(body) == ENVELOPE
    assert (body["version"], body["detail-type"], body["source"], body["account"], body["region"]) == ("0", detail_type, source, ACCOUNT, REGION)
    assert len(body["id"]) == 36 and body["time"].endswith("Z") and len(body["time"]) == 20


@pytest.mark.parametrize("kind, detail_type, detail", [
    ("rebalance", "EC2 Instance Rebalance Recommendation", lambda i: {"instance-id": i}),
    ("capacity-reservation", "EC2 Capacity Reservation Instance Interruption Warning", lambda i: {"instance-id": i, "instance-action": "terminate"}),
])
def test_an_event_only_kind_lands_one_message_of_its_shape(aws, kind, detail_type, detail):
    url = wired_as_init_wires_it(aws)
    instance = launch(aws)
    result = Interruptions(ACCOUNT).interrupt(REGION, instance, kind, None)
    [body] = drain(aws, url)
    check_envelope(body, detail_type, "aws.ec2")
    assert body["resources"] == [arn(instance)]
    assert body["detail"] == detail(instance)
    assert result["events"][0]["event"] == body and result["scheduled"] is None
    assert result["events"][0]["deliveries"] == [{"rule": f"Karpenter-{CLUSTER}-{'Rebalance' if kind == 'rebalance' else 'CapacityReservationInterruption'}", "target": QUEUE_ARN, "delivered": True}]
    assert state(aws, instance) == "running"


def test_a_scheduled_change_is_an_aws_health_retirement_notice(aws):
    url = wired_as_init_wires_it(aws)
    instance = launch(aws)
    Interruptions(ACCOUNT).interrupt(REGION, instance, "scheduled-change", 3600)
    [body] = drain(aws, url)
    check_envelope(body, "AWS Health Event", "aws.health")
    assert body["resources"] == [instance]
    d = body["detail"]
    assert (d["service"], d["eventTypeCode"], d["eventTypeCategory"]) == ("EC2", "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED", "scheduledChange")
    assert d["affectedEntities"] == [{"entityValue": instance}]
    assert d["startTime"].endswith(" GMT") and d["eventArn"].startswith(f"arn:aws:health:{REGION}::event/EC2/")
    assert state(aws, instance) == "running"


@pytest.mark.parametrize("kind, states, end", [
    ("stop", ["stopping", "stopped"], "stopped"),
    ("terminate", ["shutting-down", "terminated"], "terminated"),
])
def test_stop_and_terminate_act_at_once_with_their_state_change_events(aws, kind, states, end):
    url = wired_as_init_wires_it(aws)
    instance = launch(aws, spot=False)
    Interruptions(ACCOUNT).interrupt(REGION, instance, kind, None)
    bodies = drain(aws, url)
    for body in bodies:
        check_envelope(body, "EC2 Instance State-change Notification", "aws.ec2")
        assert body["resources"] == [arn(instance)]
    assert [b["detail"] for b in bodies] == [{"instance-id": instance, "state": s} for s in states]
    assert state(aws, instance) == end


def test_a_spot_warning_comes_first_and_the_termination_after_the_delay(aws):
    url = wired_as_init_wires_it(aws)
    instance = launch(aws)
    timers = Timers()
    result = Interruptions(ACCOUNT, schedule=timers).interrupt(REGION, instance, "spot", None)
    [warning] = drain(aws, url)
    check_envelope(warning, "EC2 Spot Instance Interruption Warning", "aws.ec2")
    assert warning["resources"] == [arn(instance)]
    assert warning["detail"] == {"instance-id": instance, "instance-action": "terminate"}
    assert [d for d, _ in timers.due] == [120.0] and result["scheduled"]["action"] == "terminate"
    assert state(aws, instance) == "running"
    timers.fire()
    assert [b["detail"]["state"] for b in drain(aws, url)] == ["shutting-down", "terminated"]
    assert state(aws, instance) == "terminated"


def test_the_delayed_spot_termination_runs_on_a_real_timer(aws):
    url = wired_as_init_wires_it(aws)
    instance = launch(aws)
    interruptions = Interruptions(ACCOUNT)
    interruptions.interrupt(REGION, instance, "spot", 0.2)
    interruptions.join(timeout=10)
    bodies = drain(aws, url)
    assert [(b["detail-type"], b["detail"].get("state")) for b in bodies] == [
        ("EC2 Spot Instance Interruption Warning", None),
        ("EC2 Instance State-change Notification", "shutting-down"),
        ("EC2 Instance State-change Notification", "terminated"),
    ]
    assert state(aws, instance) == "terminated"
    assert interruptions.describe()["pending"] == []


def test_an_instance_gone_before_the_delay_is_left_alone(aws):
    url = wired_as_init_wires_it(aws)
    instance = launch(aws)
    timers = Timers()
    Interruptions(ACCOUNT, schedule=timers).interrupt(REGION, instance, "spot", 30)
    aws["ec2"].terminate_instances(InstanceIds=[instance])
    drain(aws, url)
    timers.fire()
    assert drain(aws, url) == []


def test_without_rules_nothing_is_delivered(aws):
    url = create_queue(aws)
    instance = launch(aws)
    result = Interruptions(ACCOUNT).interrupt(REGION, instance, "spot", 30)
    assert drain(aws, url) == []
    assert result["events"][0]["deliveries"] == []


def test_disabled_rules_deliver_nothing(aws):
    url = create_queue(aws)
    create_rules(aws, state="DISABLED")
    instance = launch(aws)
    Interruptions(ACCOUNT).interrupt(REGION, instance, "rebalance", None)
    assert drain(aws, url) == []


def test_a_queue_without_a_policy_for_eventbridge_receives_nothing(aws):
    url = create_queue(aws, policy=None)
    create_rules(aws)
    instance = launch(aws)
    result = Interruptions(ACCOUNT).interrupt(REGION, instance, "rebalance", None)
    assert drain(aws, url) == []
    [delivery] = result["events"][0]["deliveries"]
    assert not delivery["delivered"] and "no policy" in delivery["reason"]


@pytest.mark.parametrize("policy, allowed", [
    (QUEUE_POLICY, True),
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:*", "Resource": "*",
                     "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:events:us-west-2:123456789012:rule/r"}}}]}, True),
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": QUEUE_ARN,
                     "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:events:us-west-2:123456789012:rule/other"}}}]}, False),
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": QUEUE_ARN}]}, False),
    ({"Statement": [QUEUE_POLICY["Statement"][0], {"Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage", "Resource": QUEUE_ARN}]}, False),
])
def test_the_queue_policy_is_read_as_aws_reads_it_for_eventbridge(policy, allowed):
    ok, _ = interruption.queue_policy_allows(json.dumps(policy), QUEUE_ARN, "arn:aws:events:us-west-2:123456789012:rule/r", ACCOUNT)
    assert ok == allowed


def test_an_unknown_instance_is_a_clear_error(aws):
    with pytest.raises(InterruptError) as e:
        Interruptions(ACCOUNT).interrupt(REGION, "i-0123456789abcdef0", "spot", None)
    assert e.value.status == 404 and "i-0123456789abcdef0" in str(e.value)


def test_ec2_warns_of_spot_interruptions_only_for_spot_instances(aws):
    instance = launch(aws, spot=False)
    with pytest.raises(InterruptError, match="on-demand"):
        Interruptions(ACCOUNT).interrupt(REGION, instance, "spot", None)


def test_a_delay_for_an_event_only_kind_is_refused(aws):
    instance = launch(aws)
    with pytest.raises(InterruptError, match="no meaning"):
        Interruptions(ACCOUNT).interrupt(REGION, instance, "rebalance", 5)


def test_the_control_route_answers_with_what_was_sent(aws):
    from server import SandboxAws

    url = wired_as_init_wires_it(aws)
    instance = launch(aws)
    app = SandboxAws(None, None, None)
    answered = {}

    def call(method, doc=None):
        raw = json.dumps(doc).encode() if doc is not None else b""
        return json.loads(b"".join(app.control(method, "/_sandbox/interrupt", raw, lambda status, headers: answered.update(status=status))))

    result = call("POST", {"region": REGION, "instance": instance, "kind": "terminate"})
    assert answered["status"].startswith("200")
    assert [e["event"] for e in result["events"]] == drain(aws, url)
    assert len(call("GET")["published"]) == 2
    assert "no instance" in call("POST", {"region": REGION, "instance": "i-00000000000000000", "kind": "stop"})["error"]
    assert answered["status"].startswith("404")


def test_the_hardened_queue_policy_lets_only_this_clusters_rules_deliver(aws):
    """init's queue policy names its five rules (aws:SourceArn): another rule in the account
    that targets the queue — a forged interruption — is refused, the cluster's own lands."""
    rule_arns = [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/Karpenter-{CLUSTER}-{suffix}" for suffix, _, _ in RULES]
    hardened = copy.deepcopy(QUEUE_POLICY)
    hardened["Statement"][0]["Condition"] = {"ArnEquals": {"aws:SourceArn": rule_arns}}
    url = create_queue(aws, policy=hardened)
    create_rules(aws)
    aws["events"].put_rule(Name="Forger", EventPattern=json.dumps({"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]}))
    aws["events"].put_targets(Rule="Forger", Targets=[{"Id": "q", "Arn": QUEUE_ARN}])
    instance = launch(aws)
    result = Interruptions(ACCOUNT).interrupt(REGION, instance, "rebalance", None)
    assert len(drain(aws, url)) == 1
    by_rule = {d["rule"]: d for d in result["events"][0]["deliveries"]}
    assert by_rule[f"Karpenter-{CLUSTER}-Rebalance"]["delivered"]
    assert not by_rule["Forger"]["delivered"] and "rule/Forger" in by_rule["Forger"]["reason"]

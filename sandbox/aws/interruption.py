"""Interruptions as EC2 and AWS Health deliver them: real EventBridge events, routed by the
account's rules to their targets, and the instance actions EC2 takes after a warning.

Karpenter learns of spot interruptions, rebalance recommendations, scheduled maintenance and
instance state changes only through EventBridge rules that forward them to its SQS queue
(`karpctl init` creates the queue and one rule per event type). To test that path end to end,
the sandbox has to publish events the way AWS does: with AWS's envelope and detail fields,
through the account's enabled rules and their event patterns, into the targets those rules
name. moto 5.2.5's PutEvents falls short of that in three ways, filled here:
- its SQS message body drops the envelope's `account` field (its default input template
  has no `account`), so a consumer would never see one;
- it delivers through DISABLED rules;
- it ignores the queue's resource policy, so a queue EventBridge may not write to (the
  classic missing-policy bug) would still receive messages.
Matching stays moto's (`EventPattern.matches_event`), so a pattern moto cannot match fails
here too. Targets other than a plain SQS queue (log groups, input transformers, ...) are
handed to moto's own delivery.

EC2's side: a spot interruption warning is followed, `delay` seconds later (120 in EC2), by
the instance being terminated (the default interruption behaviour), announced by state-change
events (shutting-down, then terminated); `stop` and `terminate` do what their names say with
their state-change events. The delayed action runs on a timer in the endpoint process and
does nothing if the instance is already gone by then.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
import uuid
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any, Callable

from iam_policy import Decision, Request, evaluate

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
CAPACITY_RESERVATION_WARNING = "EC2 Capacity Reservation Instance Interruption Warning"
HEALTH_EVENT = "AWS Health Event"
RETIREMENT = "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED"


@dataclass(frozen=True)
class Kind:
    """One kind of interruption: the warning event (if any), the action EC2 takes (if any),
    what `delay` means for it and its default."""

    warning: str | None
    action: str | None  # "terminate" or "stop", taken after `delay`
    default_delay: float | None  # None: `delay` has no meaning for this kind
    delay_means: str


KINDS: dict[str, Kind] = {
    # EC2 warns two minutes ahead, then takes the instance (default behaviour: terminate).
    "spot": Kind(SPOT_WARNING, "terminate", 120.0, "seconds from the warning to the termination"),
    "rebalance": Kind(REBALANCE, None, None, ""),
    # AWS Health announces a retirement; startTime is `delay` ahead (EC2 gives about two weeks).
    "scheduled-change": Kind(HEALTH_EVENT, None, 14 * 24 * 3600.0, "seconds until the event's startTime"),
    "stop": Kind(None, "stop", 0.0, "seconds until the instance is stopped"),
    "terminate": Kind(None, "terminate", 0.0, "seconds until the instance is terminated"),
    "capacity-reservation": Kind(CAPACITY_RESERVATION_WARNING, None, None, ""),
}

# The state-change events EC2 emits on the way to each action's end state.
ACTION_STATES = {"terminate": ["shutting-down", "terminated"], "stop": ["stopping", "stopped"]}


class InterruptError(Exception):
    """A request the sandbox refuses, as `status` (HTTP) and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# Event bodies ------------------------------------------------------------------------------


def event_time(at: datetime.datetime) -> str:
    return at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def instance_arn(region: str, account: str, instance_id: str) -> str:
    return f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"


def envelope(detail_type: str, source: str, region: str, account: str, at: datetime.datetime, resources: list[str], detail: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge event as targets receive it, fields in AWS's order."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": event_time(at),
        "region": region,
        "resources": resources,
        "detail": detail,
    }


def ec2_event(detail_type: str, region: str, account: str, instance_id: str, at: datetime.datetime, **detail: Any) -> dict[str, Any]:
    return envelope(detail_type, "aws.ec2", region, account, at, [instance_arn(region, account, instance_id)], {"instance-id": instance_id, **detail})


def spot_warning(region: str, account: str, instance_id: str, at: datetime.datetime) -> dict[str, Any]:
    return ec2_event(SPOT_WARNING, region, account, instance_id, at, **{"instance-action": "terminate"})


def rebalance_recommendation(region: str, account: str, instance_id: str, at: datetime.datetime) -> dict[str, Any]:
    return ec2_event(REBALANCE, region, account, instance_id, at)


def state_change(region: str, account: str, instance_id: str, state: str, at: datetime.datetime) -> dict[str, Any]:
    return ec2_event(STATE_CHANGE, region, account, instance_id, at, state=state)


def capacity_reservation_warning(region: str, account: str, instance_id: str, at: datetime.datetime) -> dict[str, Any]:
    return ec2_event(CAPACITY_RESERVATION_WARNING, region, account, instance_id, at, **{"instance-action": "terminate"})


def scheduled_retirement(region: str, account: str, instance_id: str, at: datetime.datetime, start: datetime.datetime) -> dict[str, Any]:
    """AWS Health's instance-retirement notice. Health names affected resources by ID, not
    ARN, and writes its times in RFC 1123 form."""
    http_date = lambda t: format_datetime(t.astimezone(datetime.timezone.utc), usegmt=True)  # noqa: E731
    detail = {
        "eventArn": f"arn:aws:health:{region}::event/EC2/{RETIREMENT}/{RETIREMENT}_{uuid.uuid4().hex[:20]}",
        "service": "EC2",
        "eventTypeCode": RETIREMENT,
        "eventTypeCategory": "scheduledChange",
        "eventScopeCode": "ACCOUNT_SPECIFIC",
        "startTime": http_date(start),
        "lastUpdatedTime": http_date(at),
        "statusCode": "upcoming",
        "eventRegion": region,
        "eventDescription": [{
            "language": "en_US",
            "latestDescription": (
                f"EC2 has detected degradation of the underlying hardware hosting your Amazon EC2 instance {instance_id} "
                f"in the {region} region. We will stop your instance after {http_date(start)}."
            ),
        }],
        "affectedEntities": [{"entityValue": instance_id}],
        "affectedAccount": account,
    }
    return envelope(HEALTH_EVENT, "aws.health", region, account, at, [instance_id], detail)


def warning_event(kind: str, region: str, account: str, instance_id: str, at: datetime.datetime, delay: float) -> dict[str, Any]:
    if kind == "spot":
        return spot_warning(region, account, instance_id, at)
    if kind == "rebalance":
        return rebalance_recommendation(region, account, instance_id, at)
    if kind == "scheduled-change":
        return scheduled_retirement(region, account, instance_id, at, at + datetime.timedelta(seconds=delay))
    if kind == "capacity-reservation":
        return capacity_reservation_warning(region, account, instance_id, at)
    raise ValueError(f"{kind!r} has no warning event")


# Delivery ----------------------------------------------------------------------------------

def queue_policy_allows(policy: str | None, queue_arn: str, rule_arn: str, account: str) -> tuple[bool, str]:
    """Whether the queue's resource policy lets this rule's EventBridge deliveries in, decided
    as IAM decides it (iam_policy.py): EventBridge sends over TLS, as the service principal
    `events.amazonaws.com`, with the rule as `aws:SourceArn` and its account as
    `aws:SourceAccount`."""
    if not policy:
        return False, "the queue has no policy letting events.amazonaws.com send to it"
    request = Request("sqs:SendMessage", queue_arn, {"aws:SecureTransport": "true", "aws:SourceArn": rule_arn, "aws:SourceAccount": account}, {"Service": ["events.amazonaws.com"]})
    outcome = evaluate([], request, [json.loads(policy)])
    if outcome.decision is Decision.EXPLICIT_DENY:
        return False, "the queue policy denies events.amazonaws.com sqs:SendMessage"
    if outcome.allowed:
        return True, ""
    return False, f"the queue policy does not allow events.amazonaws.com sqs:SendMessage for {rule_arn}"


def plain_sqs_target(target: dict[str, Any]) -> bool:
    """An SQS target that receives the event itself (no input customisation)."""
    return ":sqs:" in target["Arn"] and not any(k in target for k in ("Input", "InputPath", "InputTransformer"))


def deliver(event: dict[str, Any], account: str, region: str) -> list[dict[str, Any]]:
    """Route one event through the default bus's enabled rules, as EventBridge does; one
    entry per matching (rule, target) saying whether it was delivered and, if not, why."""
    from moto.backends import get_backend

    events = get_backend("events")[account][region]
    sqs = get_backend("sqs")[account][region]
    bus = events.describe_event_bus("default")
    deliveries = []
    for rule in list(bus.rules.values()):
        if rule.state != "ENABLED" or not rule.event_pattern.matches_event(event):
            continue
        others = []
        for target in rule.targets:
            entry = {"rule": rule.name, "target": target["Arn"], "delivered": False}
            deliveries.append(entry)
            if not plain_sqs_target(target):
                others.append((target, entry))
                continue
            queue_name = target["Arn"].rsplit(":", 1)[-1]
            try:
                queue = sqs.get_queue(queue_name)
            except Exception:
                entry["reason"] = f"queue {queue_name} does not exist"
                continue
            allowed, reason = queue_policy_allows(queue.policy, queue.queue_arn, rule.arn, account)
            if not allowed:
                entry["reason"] = reason
                continue
            group = (target.get("SqsParameters") or {}).get("MessageGroupId")
            sqs.send_message(queue_name=queue_name, message_body=json.dumps(event), group_id=group)
            entry["delivered"] = True
        if others:
            # moto delivers these itself; it wants `time` in Unix seconds.
            view = copy.copy(rule)
            view.targets = [t for t, _ in others]
            sent_at = datetime.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
            moto_event = {**event, "time": sent_at.timestamp()}
            try:
                view.send_to_targets(moto_event)
                for _, entry in others:
                    entry["delivered"] = True
            except Exception as e:
                for _, entry in others:
                    entry["reason"] = f"moto could not deliver: {e!r}"
    return deliveries


# Interruptions -----------------------------------------------------------------------------


class Interruptions:
    """Publishes interruption events and carries out EC2's delayed actions on timers.
    `clock` and `schedule(delay, fn) -> cancel` are injectable for tests."""

    def __init__(self, account: str, clock: Callable[[], datetime.datetime] | None = None, schedule: Callable[[float, Callable[[], None]], Any] | None = None):
        self.account = account
        self.clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc))
        self.schedule = schedule or self._timer
        self.lock = threading.Lock()
        self.published: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []
        self._timers: list[threading.Timer] = []

    def _timer(self, delay: float, fn: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return timer

    def join(self, timeout: float) -> None:
        """Wait for the timers started so far (tests)."""
        for timer in list(self._timers):
            timer.join(timeout)

    def interrupt(self, region: str, instance_id: str, kind_name: str, delay: float | None) -> dict[str, Any]:
        kind = KINDS.get(kind_name)
        if kind is None:
            raise InterruptError(400, f"unknown kind {kind_name!r}; one of {', '.join(KINDS)}")
        if delay is not None and kind.default_delay is None:
            raise InterruptError(400, f"--delay has no meaning for {kind_name}: EC2 only sends the event")
        if delay is not None and delay < 0:
            raise InterruptError(400, f"--delay must be 0 or more, got {delay}")
        delay = kind.default_delay if delay is None else delay
        state = self.instance_state(region, instance_id)
        allowed = ("pending", "running", "stopped") if kind_name == "terminate" else ("pending", "running")
        if state not in allowed:
            raise InterruptError(409, f"instance {instance_id} is {state}; EC2 sends no {kind_name} event for it")
        if kind_name == "spot":
            lifecycle = self.instance_lifecycle(region, instance_id)
            if lifecycle != "spot":
                raise InterruptError(409, f"instance {instance_id} is an on-demand instance; EC2 sends spot interruption warnings only for spot instances")
        now = self.clock()
        result: dict[str, Any] = {"instance": instance_id, "kind": kind_name, "region": region, "events": [], "scheduled": None}
        if kind.warning:
            result["events"].append(self.publish(region, warning_event(kind_name, region, self.account, instance_id, now, delay or 0.0)))
        if kind.action:
            if delay:
                at = now + datetime.timedelta(seconds=delay)
                job = {"instance": instance_id, "action": kind.action, "region": region, "at": event_time(at)}
                result["scheduled"] = job
                with self.lock:
                    self.pending.append(job)

                def run() -> None:
                    with self.lock:
                        if job in self.pending:
                            self.pending.remove(job)
                    try:
                        self.act(region, instance_id, kind.action)
                    except Exception as e:  # a timer thread has no caller to tell
                        print(json.dumps({"interrupt": "delayed action failed", "instance": instance_id, "action": kind.action, "error": repr(e)}), flush=True)

                self.schedule(delay, run)
            else:
                result["events"].extend(self.act(region, instance_id, kind.action))
        return result

    def act(self, region: str, instance_id: str, action: str) -> list[dict[str, Any]]:
        """Stop or terminate the instance with EC2's state-change events; nothing if it is
        already gone (or, for stop, no longer running)."""
        from moto.backends import get_backend

        ec2 = get_backend("ec2")[self.account][region]
        state = self.instance_state(region, instance_id, missing_ok=True)
        if state in (None, "shutting-down", "terminated") or (action == "stop" and state not in ("pending", "running")):
            return []
        first, last = ACTION_STATES[action]
        sent = [self.publish(region, state_change(region, self.account, instance_id, first, self.clock()))]
        if action == "terminate":
            ec2.terminate_instances([instance_id])
        else:
            ec2.stop_instances([instance_id])
        sent.append(self.publish(region, state_change(region, self.account, instance_id, last, self.clock())))
        return sent

    def publish(self, region: str, event: dict[str, Any]) -> dict[str, Any]:
        record = {"event": event, "deliveries": deliver(event, self.account, region)}
        with self.lock:
            self.published.append(record)
        return record

    def instance_state(self, region: str, instance_id: str, missing_ok: bool = False) -> str | None:
        instance = self._instance(region, instance_id, missing_ok)
        return instance.state if instance is not None else None

    def instance_lifecycle(self, region: str, instance_id: str) -> str:
        return getattr(self._instance(region, instance_id, False), "lifecycle", None) or "on-demand"

    def _instance(self, region: str, instance_id: str, missing_ok: bool) -> Any:
        from moto.backends import get_backend

        try:
            return get_backend("ec2")[self.account][region].get_instance(instance_id)
        except Exception:
            if missing_ok:
                return None
            raise InterruptError(404, f"no instance {instance_id} in {region}")

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {"published": list(self.published), "pending": list(self.pending)}

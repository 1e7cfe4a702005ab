"""IAM policy evaluation as AWS documents it, for the sandbox's authorizer (authorizer.py).

Why our own: moto's `access_control` matches actions only (its own TODO says Resource and
Condition are not evaluated, and conditions only for trust policies); the maintained,
complete simulator (@cloud-copilot/iam-simulate) is a Node library; the Python ones either
lint policies (parliament, policy_sentry, policyuniverse) or stopped in 2022
(principalmapper). What AWS documents fits in this module, and the table in
`tests/test_iam_policy.py` checks it case by case against the documentation:

- a request is allowed when some statement allows it and none denies it (explicit Deny over
  Allow; no match at all is an implicit deny); identity and resource policies of one account
  are joined: either may allow, any Deny wins;
- `Action`/`NotAction` (case-insensitive, `*` and `?`), `Resource`/`NotResource` (ARNs matched
  segment by segment, case-sensitive, wildcards within a segment), `Principal` for resource
  and trust policies;
- every condition operator (String*, Numeric*, Date*, Bool, Binary, IpAddress, Arn*, Null), the
  `IfExists` suffix, the `ForAllValues:`/`ForAnyValue:` set qualifiers; values of one key are
  OR-ed (a negated operator: none may match), keys and operators AND-ed; a key missing from
  the request fails a positive operator and satisfies a negated one; policy variables
  (`${aws:username}`, `${*}`) in resources and string/ARN values.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable


class Decision(Enum):
    ALLOW = "allow"
    IMPLICIT_DENY = "implicit-deny"
    EXPLICIT_DENY = "explicit-deny"


@dataclass
class Request:
    """One authorization question: may `principal` do `action` on `resource`?

    `context` maps condition keys (any case) to a string or a list of strings; a key that is
    not there is absent from the request, as in AWS.
    """

    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)
    principal: dict[str, list[str]] = field(default_factory=dict)  # {"AWS": [arn], "Service": [...], "Federated": [...]}

    def value(self, key: str) -> list[str] | None:
        lowered = key.lower()
        for k, v in self.context.items():
            if k.lower() == lowered:
                if v is None:
                    return None
                return [str(x) for x in v] if isinstance(v, (list, tuple, set)) else [str(v)]
        return None


@dataclass
class Outcome:
    decision: Decision
    statement: str | None = None  # the Sid (or index) of the deciding statement, if any

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


def listify(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def wildcard(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("^" + "".join(parts) + "$", re.S | (re.I if ignore_case else 0))


VARIABLE = re.compile(r"\$\{([^}]+)\}")


def substitute(text: str, request: Request) -> str | None:
    """Policy variables: `${key}` becomes the request's value; `${*}`, `${?}`, `${$}` the
    literal characters. A variable whose key is missing (and has no default) makes the
    element match nothing, as AWS documents."""
    missing = False

    def one(m: re.Match[str]) -> str:
        nonlocal missing
        name = m.group(1)
        if name in ("*", "?", "$"):
            return "\u0000" + name  # a literal, escaped from wildcard meaning below
        key, _, default = name.partition(",")
        values = request.value(key.strip())
        if values and len(values) == 1:
            return values[0]
        if default:
            return default.strip().strip("'")
        missing = True
        return ""

    out = VARIABLE.sub(one, text)
    return None if missing else out


def like(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """`*`/`?` wildcards; characters that came from `${*}`/`${?}` are literal."""
    parts = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\u0000" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return re.match("^" + "".join(parts) + "$", value, re.S | (re.I if ignore_case else 0)) is not None


def literal(text: str) -> str:
    return text.replace("\u0000", "")


def action_matches(pattern: str, action: str) -> bool:
    return pattern == "*" or wildcard(pattern, ignore_case=True).match(action) is not None


def arn_matches(pattern: str, arn: str) -> bool:
    """ARN matching: `*` alone matches anything; otherwise the six colon-separated parts match
    one by one (wildcards stay within a part, the last part may hold colons)."""
    if pattern == "*":
        return True
    p = pattern.split(":", 5)
    a = arn.split(":", 5)
    if len(p) != 6 or len(a) != 6:
        return False  # not an ARN: only `*` matches across
    return all(like(pp, aa) for pp, aa in zip(p, a))


def resource_matches(pattern: str, resource: str, request: Request) -> bool:
    resolved = substitute(pattern, request)
    if resolved is None:
        return False
    return arn_matches(resolved, resource)


def principal_matches(element: Any, request: Request) -> bool:
    if element == "*":
        return True
    if not isinstance(element, dict):
        return False
    for kind, wanted in element.items():
        asked = request.principal.get(kind, [])
        for w in listify(wanted):
            if w == "*" and asked:
                return True
            for a in asked:
                if w == a:
                    return True
                # An account (or its root ARN) names every principal of that account.
                if kind == "AWS" and (re.fullmatch(r"\d{12}", w) or w.endswith(":root")):
                    account = w if re.fullmatch(r"\d{12}", w) else w.split(":")[4]
                    if a.split(":")[4:5] == [account]:
                        return True
    return False


# Conditions ---------------------------------------------------------------------------------


def parse_number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse_date(text: str) -> dt.datetime | None:
    try:
        if re.fullmatch(r"\d+", text):
            return dt.datetime.fromtimestamp(int(text), dt.timezone.utc)
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    except (TypeError, ValueError):
        return None


def compare(kind: str, asked: str, wanted: str, request: Request) -> bool:
    """One request value against one policy value under a (positive) operator family."""
    if kind in ("StringEquals", "StringLike", "StringEqualsIgnoreCase", "ArnEquals", "ArnLike"):
        resolved = substitute(wanted, request)
        if resolved is None:
            return False
        if kind == "StringEquals":
            return literal(resolved) == asked
        if kind == "StringEqualsIgnoreCase":
            return literal(resolved).lower() == asked.lower()
        if kind == "StringLike":
            return like(resolved, asked)
        return arn_matches(resolved, asked)  # ArnEquals and ArnLike behave alike, as in AWS
    if kind.startswith("Numeric"):
        a, w = parse_number(asked), parse_number(wanted)
        if a is None or w is None:
            return False
        return {"NumericEquals": a == w, "NumericLessThan": a < w, "NumericLessThanEquals": a <= w, "NumericGreaterThan": a > w, "NumericGreaterThanEquals": a >= w}[kind]
    if kind.startswith("Date"):
        a, w = parse_date(asked), parse_date(wanted)
        if a is None or w is None:
            return False
        return {"DateEquals": a == w, "DateLessThan": a < w, "DateLessThanEquals": a <= w, "DateGreaterThan": a > w, "DateGreaterThanEquals": a >= w}[kind]
    if kind == "Bool":
        return asked.lower() == str(wanted).lower()
    if kind == "BinaryEquals":
        try:
            return base64.b64decode(asked) == base64.b64decode(wanted)
        except ValueError:
            return False
    if kind == "IpAddress":
        try:
            return ipaddress.ip_address(asked) in ipaddress.ip_network(wanted, strict=False)
        except ValueError:
            return False
    raise ValueError(f"unknown condition operator {kind}")


NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def condition_holds(operator: str, key: str, wanted: Any, request: Request) -> bool:
    qualifier = None
    if ":" in operator:
        qualifier, operator = operator.split(":", 1)
        if qualifier not in ("ForAllValues", "ForAnyValue"):
            raise ValueError(f"unknown set operator {qualifier}")
    if_exists = operator.endswith("IfExists")
    if if_exists:
        operator = operator[: -len("IfExists")]
    wanted_values = [str(w).lower() if isinstance(w, bool) else str(w) for w in listify(wanted)]
    asked = request.value(key)

    if operator == "Null":
        absent = asked is None or asked == []
        return any((w.lower() == "true") == absent for w in wanted_values)

    negated = operator in NEGATED
    kind = NEGATED.get(operator, operator)

    def one(value: str) -> bool:
        hit = any(compare(kind, value, w, request) for w in wanted_values)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        # Every value in the request must match; an absent or empty key matches (AWS's warning).
        return all(one(v) for v in asked or [])
    if qualifier == "ForAnyValue":
        return bool(asked) and any(one(v) for v in asked)
    if asked is None:
        return True if (if_exists or negated) else False
    # A single-valued operator on a multi-valued key: any value may match.
    return any(one(v) for v in asked)


def conditions_hold(block: dict[str, Any] | None, request: Request) -> bool:
    for operator, keys in (block or {}).items():
        for key, wanted in keys.items():
            if not condition_holds(operator, key, wanted, request):
                return False
    return True


# Statements and policies -------------------------------------------------------------------


def statement_applies(statement: dict[str, Any], request: Request, *, resource_policy: bool = False) -> bool:
    if resource_policy or "Principal" in statement or "NotPrincipal" in statement:
        if "Principal" in statement and not principal_matches(statement["Principal"], request):
            return False
        if "NotPrincipal" in statement and principal_matches(statement["NotPrincipal"], request):
            return False
    if "Action" in statement:
        if not any(action_matches(a, request.action) for a in listify(statement["Action"])):
            return False
    elif "NotAction" in statement:
        if any(action_matches(a, request.action) for a in listify(statement["NotAction"])):
            return False
    else:
        return False
    if "Resource" in statement:
        if not any(resource_matches(r, request.resource, request) for r in listify(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(resource_matches(r, request.resource, request) for r in listify(statement["NotResource"])):
            return False
    elif not resource_policy:
        return False  # an identity policy statement without a resource grants nothing
    return conditions_hold(statement.get("Condition"), request)


def statements(policy: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    for i, s in enumerate(listify((policy or {}).get("Statement"))):
        yield str(s.get("Sid") or i), s


def evaluate(identity_policies: list[Any], request: Request, resource_policies: list[Any] | None = None) -> Outcome:
    """The decision for one request, over the principal's identity policies and the
    resource's policies (same account: either may allow; an explicit Deny in any wins)."""
    allow: str | None = None
    for policies, as_resource in ((identity_policies, False), (resource_policies or [], True)):
        for policy in policies:
            for sid, s in statements(policy):
                if not statement_applies(s, request, resource_policy=as_resource):
                    continue
                if s.get("Effect") == "Deny":
                    return Outcome(Decision.EXPLICIT_DENY, sid)
                if s.get("Effect") == "Allow" and allow is None:
                    allow = sid
    return Outcome(Decision.ALLOW, allow) if allow is not None else Outcome(Decision.IMPLICIT_DENY)

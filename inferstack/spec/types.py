"""Constrained scalar types. Each constraint raises an error whose type is a rule id of `RULES`."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from .rules import RULES

# ASCII letters, digits, '-', '_' and CJK ideographs (basic block, extension A, compatibility, extension B-F).
NAME_RE = re.compile(
    r"^[A-Za-z0-9_\-\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]{1,200}$"
)
KEY_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")
ROLE_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PERCENT_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%$")

# A value not known yet (a Pulumi Output during preview). Rules that need it are reported as deferred.
UNKNOWN = "<unknown>"


def check(rule: str, ok: Callable[[Any], bool], message: str) -> AfterValidator:
    """A field validator that raises `rule` (an id of RULES) with `message` when `ok(value)` is false."""
    assert rule in RULES, rule

    def _validate(value: Any) -> Any:
        if value is None or value == UNKNOWN or ok(value):
            return value
        raise PydanticCustomError(rule, message)

    return AfterValidator(_validate)


def _cidr_ok(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _cron_ok(value: str) -> bool:
    return croniter.is_valid(value)


def _tz_ok(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


Name = Annotated[str, check("name.format", lambda v: bool(NAME_RE.match(v)),
                            "must be 1-200 characters of ASCII letters, CJK, digits, '-' or '_'")]
Key = Annotated[str, check("key.format", lambda v: bool(KEY_RE.match(v)),
                           "must match ^[a-z][a-z0-9-]{0,39}$ (lowercase letter first, then lowercase letters, "
                           "digits or '-', at most 40 characters)")]
Ref = Annotated[str, check("ref.format", lambda v: bool(REF_RE.match(v)),
                           "must be 1-128 characters: letters, digits, '.', '_', ':', '/' or '-', starting with a "
                           "letter or digit")]
RoleName = Annotated[str, check("role.name_format", lambda v: bool(ROLE_RE.match(v)),
                                "must match ^[a-z][a-z0-9-]{0,19}$")]
Description = Annotated[str, check("description.length", lambda v: len(v) <= 1024, "must be at most 1024 characters")]
Port = Annotated[int, check("port.range", lambda v: 1 <= v <= 65535, "must be a port from 1 to 65535")]
Cidr = Annotated[str, check("cidr.format", _cidr_ok, "must be a network such as 10.0.0.0/16")]
EnvName = Annotated[str, check("env.name_format", lambda v: bool(ENV_NAME_RE.match(v)),
                               "must match ^[A-Za-z_][A-Za-z0-9_]*$ (letters, digits and '_', not starting with a "
                               "digit)")]
AbsPath = Annotated[str, check("mount.path_absolute", lambda v: v.startswith("/") and "\x00" not in v,
                               "must be an absolute path (starting with '/')")]
Priority = Annotated[int, check("priority.range", lambda v: 1 <= v <= 9, "must be an integer from 1 to 9")]


def _percent_string(value: Any) -> Any:
    """`"25%"` (the Kubernetes habit) is 25; other strings are refused here with the accepted forms named."""
    if not isinstance(value, str):
        return value
    match = PERCENT_RE.match(value)
    if match is None:
        raise PydanticCustomError("field.type", 'must be a percentage: a number from 0 to 100, or a string such as '
                                                '"25%"')
    return float(match.group(1))


Percent = Annotated[float, BeforeValidator(_percent_string, json_schema_input_type=(
    float | Annotated[str, Field(pattern=PERCENT_RE.pattern)])),
    check("rolling_update.percent_range", lambda v: 0 <= v <= 100, "must be a percentage from 0 to 100")]
Count = Annotated[int, check("replicas.min_one", lambda v: v >= 1, "must be at least 1")]
Cron = Annotated[str, check("autoscaling.cron_format", _cron_ok, "must be a cron expression such as '0 9 * * 1-5'")]
TimeZone = Annotated[str, check("autoscaling.timezone_known", _tz_ok, "must be an IANA time zone such as Asia/Shanghai")]
MetricTarget = Annotated[float, check("autoscaling.target_positive", lambda v: v > 0, "must be greater than 0")]
Seconds = Annotated[float, check("probe.timing", lambda v: v >= 0, "must be 0 or more seconds")]
PositiveSeconds = Annotated[float, check("probe.timing", lambda v: v > 0, "must be more than 0 seconds")]
Threshold = Annotated[int, check("probe.timing", lambda v: v >= 1, "must be at least 1")]
GracePeriod = Annotated[float, check("graceful_shutdown.range", lambda v: 0 <= v <= 3600,
                                     "must be from 0 to 3600 seconds")]
Weight = Annotated[float, check("traffic.weight_non_negative", lambda v: v >= 0, "must be a number >= 0")]
MirrorPercent = Annotated[float, check("traffic.mirror_percent_range", lambda v: 0 < v <= 100,
                                       "must be greater than 0 and at most 100")]
Timeout = Annotated[float, check("traffic.timeout_positive", lambda v: v > 0, "must be greater than 0 seconds")]
Retries = Annotated[int, check("traffic.retries_range", lambda v: 0 <= v <= 3, "must be from 0 to 3")]
Resource = Annotated[float, check("compute_spec.resources_positive", lambda v: v > 0, "must be greater than 0")]
NonNegative = Annotated[float, check("compute_spec.resources_positive", lambda v: v >= 0, "must be 0 or more")]
GpuCount = Annotated[int, check("compute_spec.resources_positive", lambda v: v >= 0, "must be 0 or more")]
Currency = Annotated[str, check("compute_spec.currency_code", lambda v: bool(re.fullmatch(r"[A-Z]{3}", v)),
                                "must be an ISO 4217 currency code such as USD or CNY")]
Capacity = Annotated[int, check("queue.capacity_non_negative", lambda v: v >= 0, "must be 0 or more instances")]


class Model(BaseModel):
    """Base of every spec model: unknown keys are errors, and the model's data round-trips through YAML/JSON."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=False, str_strip_whitespace=False)

    def to_data(self) -> dict[str, Any]:
        """Plain data with secrets revealed, for transport (API bodies, Pulumi inputs). Never print it."""
        return self.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True})

    def to_public(self) -> dict[str, Any]:
        """Plain data with secret values masked, for plans, logs and status."""
        return self.model_dump(mode="json", exclude_none=True)

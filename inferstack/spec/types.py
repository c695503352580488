"""Constrained scalar types. Each constraint raises an error whose type is a rule id of `RULES`, and states itself in
the JSON Schema (pattern, range, length — `check(..., **schema)`), so that a value the schema accepts passes every
single-field rule too. Rules across fields and objects live in `validate.py` and cannot be said in a schema.

Numbers are strict: an integer field takes a JSON integer (or an integral float such as `3.0`, which is how the
Pulumi engine sends every number), never `"3"` or `true`; a float field takes any finite number, never a string;
NaN, ±Infinity and literals that overflow (`1e400`) are refused with `number.finite`."""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import available_timezones

from croniter import croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_core import PydanticCustomError, core_schema

from . import limits as L
from .rules import RULES

# Patterns are written with literal characters, not \U escapes: then Python's `re` and ECMA-262 (JSON Schema, with
# the `u` flag) read them alike, and the same string serves validation and the schema.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
NAME_PATTERN = f"^[A-Za-z0-9_\\-{_CJK}]{{1,{L.MAX_NAME}}}$"
KEY_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
REF_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{L.MAX_REF - 1}}}$"
ROLE_PATTERN = r"^[a-z][a-z0-9-]{0,19}$"
ENV_NAME_PATTERN = rf"^[A-Za-z_][A-Za-z0-9_]{{0,{L.MAX_ENV_NAME - 1}}}$"
# An image reference: [scheme://]segment[:port](/segment)*[:tag][@algo:digest]; segments start with a letter or digit,
# so there is no empty segment, no '.' or '..' segment; '..' anywhere is refused besides.
IMAGE_PATTERN = (r"^(?!.*\.\.)(?:[a-z][a-z0-9+.-]*://)?[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]{1,5})?"
                 r"(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                 r"(?:@[a-z0-9]+:[A-Fa-f0-9]{32,128})?$")
HEADER_NAME_PATTERN = rf"^[!#$%&'*+.^_`|~0-9A-Za-z-]{{1,{L.MAX_HEADER_NAME}}}$"
HTTP_PATH_PATTERN = r"^/[!-~]*$"  # '/' then visible ASCII: no space, no control character
# Control characters: NUL never passes through an env value, an argv item or a path; single-line text takes none;
# multi-line text (descriptions) takes tab and line breaks.
NO_NUL_PATTERN = r"^[^\x00]*$"
SINGLE_LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
HEADER_VALUE_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"  # tab allowed, as in HTTP field values
MULTI_LINE_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

NAME_RE = re.compile(NAME_PATTERN)
KEY_RE = re.compile(KEY_PATTERN)
REF_RE = re.compile(REF_PATTERN)
ROLE_RE = re.compile(ROLE_PATTERN)
ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)
IMAGE_RE = re.compile(IMAGE_PATTERN)
HEADER_NAME_RE = re.compile(HEADER_NAME_PATTERN)
HTTP_PATH_RE = re.compile(HTTP_PATH_PATTERN)
PERCENT_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%$")
# What the schema says of a percentage string: the form and the range at once (PERCENT_RE parses; the range rule
# names a "101%" in words).
PERCENT_SCHEMA_PATTERN = r"^(?:100(?:\.0+)?|[0-9]{1,2}(?:\.[0-9]+)?)%$"
SINGLE_LINE_RE = re.compile(SINGLE_LINE_PATTERN)

# A value not known yet (a Pulumi Output during preview). Rules that need it are reported as deferred.
UNKNOWN = "<unknown>"


class Check:
    """A field rule: raises `rule` (an id of RULES) with `message` when `ok(value)` is false, and adds `schema`
    (JSON Schema keywords such as `maxLength`, `pattern`, `maximum`) to the field's schema."""

    def __init__(self, rule: str, ok: Callable[[Any], bool], message: str, schema: dict[str, Any]):
        assert rule in RULES, rule
        self.rule, self.ok, self.message, self.schema = rule, ok, message, schema

    def _validate(self, value: Any) -> Any:
        if value is None or value == UNKNOWN or self.ok(value):
            return value
        raise PydanticCustomError(self.rule, self.message)

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        out = handler(schema)
        out.update({k: v() if callable(v) else v for k, v in self.schema.items()})
        return out


FIELD_RULES: set[str] = {"field.required", "field.unknown", "field.type", "field.enum", "field.invalid",
                         "number.finite"}
"""Rule ids a single field decides (the schema states them all); every other rule looks across fields or objects."""


CHECKS: list[Check] = []
"""Every field rule made by `check`, in this module and others (tests prove each schema implies its rule)."""


def check(rule: str, ok: Callable[[Any], bool], message: str, **schema: Any) -> Check:
    FIELD_RULES.add(rule)
    CHECKS.append(made := Check(rule, ok, message, schema))
    return made


def exact_mapping_keys(schema: Any) -> Any:
    """Pydantic states a mapping whose keys have a pattern as `patternProperties`, which lets keys that do not match
    through (JSON Schema applies no rule to them). Restate it as `propertyNames` (every key matches) plus
    `additionalProperties` (every value), in place, over a whole schema; returns it."""
    if isinstance(schema, dict):
        patterns = schema.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and not schema.get("properties"):
            (pattern, values), = patterns.items()
            del schema["patternProperties"]
            schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
            schema["additionalProperties"] = values
        for value in schema.values():
            exact_mapping_keys(value)
    elif isinstance(schema, list):
        for value in schema:
            exact_mapping_keys(value)
    return schema


def matches(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    return lambda value: bool(pattern.match(value))


# --- numbers -------------------------------------------------------------------------------------------------------

_FINITE_MESSAGE = "must be a finite number (not NaN, Infinity, or a literal too large to represent such as 1e400)"


def _whole_number(value: Any) -> Any:
    """Integer fields: an integral float (`3.0`, how Pulumi sends numbers) becomes an int; others go to the strict
    int validator, which refuses strings and booleans."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("number.finite", _FINITE_MESSAGE)
        if not value.is_integer():
            raise PydanticCustomError("field.invalid", "must be a whole number")
        return int(value)
    return value


def _finite_number(value: Any) -> Any:
    """Float fields: an integer literal past the float range (JSON `1` followed by 400 zeros) is not finite either."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
        raise PydanticCustomError("number.finite", _FINITE_MESSAGE)
    return value


Integer = Annotated[int, BeforeValidator(_whole_number)]
Number = Annotated[float, BeforeValidator(_finite_number)]


def _cidr_ok(value: str) -> bool:
    if len(value) > L.MAX_CIDR:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _cron_ok(value: str) -> bool:
    return len(value) <= L.MAX_CRON and SINGLE_LINE_RE.match(value) is not None and croniter.is_valid(value)


@functools.cache
def time_zones() -> frozenset[str]:
    """The IANA time zones this machine knows (the schema lists them all, so a schema-valid zone is a valid one)."""
    return frozenset(available_timezones())


def _tz_ok(value: str) -> bool:
    return value in time_zones()


_NO_NUL = check("text.control_characters", lambda v: "\x00" not in v, "must not contain NUL characters",
                pattern=NO_NUL_PATTERN)
_SINGLE_LINE = check("text.control_characters", matches(SINGLE_LINE_RE),
                     "must not contain control characters (NUL, line breaks, tabs, escapes)",
                     pattern=SINGLE_LINE_PATTERN)


def _text(limit: int, rule: str = "text.length") -> Check:
    return check(rule, lambda v: len(v) <= limit, f"must be at most {limit} characters", maxLength=limit)


# --- names and references ------------------------------------------------------------------------------------------

Name = Annotated[str, check("name.format", matches(NAME_RE),
                            f"must be 1-{L.MAX_NAME} characters of ASCII letters, CJK, digits, '-' or '_'",
                            pattern=NAME_PATTERN)]
Key = Annotated[str, check("key.format", matches(KEY_RE),
                           "must match ^[a-z][a-z0-9-]{0,39}$ (lowercase letter first, then lowercase letters, "
                           "digits or '-', at most 40 characters)", pattern=KEY_PATTERN)]
Ref = Annotated[str, check("ref.format", matches(REF_RE),
                           f"must be 1-{L.MAX_REF} characters: letters, digits, '.', '_' or '-', starting with a letter "
                           f"or digit (no '/' and no spaces)", pattern=REF_PATTERN)]
ImageName = Annotated[str, _text(L.MAX_IMAGE_REF),
                      check("image.name_format", matches(IMAGE_RE),
                            "must be an image reference such as 'inferstack/echo' or "
                            "'registry.example.com/team/llm:1.4': segments of letters, digits, '.', '_' or '-' "
                            "separated by '/', an optional ':tag' (no spaces, no empty or '..' segments)",
                            pattern=IMAGE_PATTERN)]
MountSource = Annotated[str, check("mount.source_format", matches(REF_RE),
                                   f"must be a file system name of 1-{L.MAX_REF} letters, digits, '.', '_' or '-', "
                                   f"starting with a letter or digit: no '/' and no '..', so a mount cannot leave "
                                   f"its file system", pattern=REF_PATTERN)]
RoleName = Annotated[str, check("role.name_format", matches(ROLE_RE), "must match ^[a-z][a-z0-9-]{0,19}$",
                                pattern=ROLE_PATTERN)]
EnvName = Annotated[str, check("env.name_format", matches(ENV_NAME_RE),
                               f"must match ^[A-Za-z_][A-Za-z0-9_]*$ (letters, digits and '_', not starting with a "
                               f"digit), at most {L.MAX_ENV_NAME} characters", pattern=ENV_NAME_PATTERN)]
HeaderName = Annotated[str, check("header.name_format", matches(HEADER_NAME_RE),
                                  f"must be an HTTP header name: 1-{L.MAX_HEADER_NAME} letters, digits or "
                                  f"!#$%&'*+.^_`|~- (no spaces, no ':')", pattern=HEADER_NAME_PATTERN)]

# --- text ----------------------------------------------------------------------------------------------------------

Description = Annotated[str, _text(L.MAX_DESCRIPTION, "description.length"),
                        check("text.control_characters", matches(re.compile(MULTI_LINE_PATTERN)),
                              "must not contain control characters other than tab and line breaks",
                              pattern=MULTI_LINE_PATTERN)]
Label = Annotated[str, _text(L.MAX_LABEL), _SINGLE_LINE]
HeaderValue = Annotated[str, _text(L.MAX_HEADER_VALUE),
                        check("text.control_characters", matches(re.compile(HEADER_VALUE_PATTERN)),
                              "must not contain control characters other than tab (an HTTP header value cannot)",
                              pattern=HEADER_VALUE_PATTERN)]
AbsPath = Annotated[str, _text(L.MAX_PATH), _SINGLE_LINE,
                    check("mount.path_absolute", lambda v: v.startswith("/"),
                          "must be an absolute path (starting with '/')", pattern="^/")]
HttpPath = Annotated[str, _text(L.MAX_HTTP_PATH),
                     check("probe.http_path_format", matches(HTTP_PATH_RE),
                           "must start with '/' and hold visible ASCII only (no spaces or control characters; "
                           "percent-encode the rest)", pattern=HTTP_PATH_PATTERN)]
EnvValue = Annotated[str, check("env.value_size", lambda v: len(v) <= L.MAX_ENV_VALUE,
                                f"must be at most {L.MAX_ENV_VALUE} characters (an environment variable larger "
                                f"than that cannot be passed to a process; mount a file instead)",
                                maxLength=L.MAX_ENV_VALUE), _NO_NUL]
SecretValue = Annotated[SecretStr,
                        check("env.value_size", lambda v: len(v.get_secret_value()) <= L.MAX_ENV_VALUE,
                              f"must be at most {L.MAX_ENV_VALUE} characters (an environment variable larger than "
                              f"that cannot be passed to a process; mount a file instead)",
                              maxLength=L.MAX_ENV_VALUE),
                        check("text.control_characters", lambda v: "\x00" not in v.get_secret_value(),
                              "must not contain NUL characters", pattern=NO_NUL_PATTERN)]
Arg = Annotated[str, check("command.size", lambda v: len(v) <= L.MAX_ARG, f"must be at most {L.MAX_ARG} characters",
                           maxLength=L.MAX_ARG), _NO_NUL]


def _argv_ok(min_items: int) -> Callable[[list[str]], bool]:
    return lambda v: min_items <= len(v) <= L.MAX_ARGV_ITEMS and sum(len(a) for a in v) <= L.MAX_ARGV_TOTAL


_ARGV_MESSAGE = (f"an argv list has at most {L.MAX_ARGV_ITEMS} items and {L.MAX_ARGV_TOTAL} characters in all "
                 f"(what a process can be started with)")
Command = Annotated[list[Arg], check("command.size", _argv_ok(1), "must not be empty; " + _ARGV_MESSAGE,
                                     minItems=1, maxItems=L.MAX_ARGV_ITEMS)]
ImageCommand = Annotated[list[Arg], check("command.size", _argv_ok(0), _ARGV_MESSAGE, maxItems=L.MAX_ARGV_ITEMS)]
Cidr = Annotated[str, check("cidr.format", _cidr_ok, "must be a network such as 10.0.0.0/16",
                            maxLength=L.MAX_CIDR, pattern=r"^[0-9A-Fa-f.:/]+$")]
Cron = Annotated[str, check("autoscaling.cron_format", _cron_ok, "must be a cron expression such as '0 9 * * 1-5'",
                            maxLength=L.MAX_CRON, pattern=SINGLE_LINE_PATTERN)]
TimeZone = Annotated[str, check("autoscaling.timezone_known", _tz_ok, "must be an IANA time zone such as Asia/Shanghai",
                                enum=lambda: sorted(time_zones()))]


def max_items(limit: int, what: str) -> Check:
    """A list (or mapping) holds at most `limit` entries."""
    return check("list.max_items", lambda v: len(v) <= limit, f"at most {limit} {what}", maxItems=limit)


def max_entries(limit: int, what: str) -> Check:
    return check("list.max_items", lambda v: len(v) <= limit, f"at most {limit} {what}", maxProperties=limit)


# --- numbers with ranges -------------------------------------------------------------------------------------------

Port = Annotated[Integer, check("port.range", lambda v: 1 <= v <= 65535, "must be a port from 1 to 65535",
                                minimum=1, maximum=65535)]
Priority = Annotated[Integer, check("priority.range", lambda v: 1 <= v <= 9, "must be an integer from 1 to 9",
                                    minimum=1, maximum=9)]
def _percent_string(value: Any) -> Any:
    """`"25%"` (the Kubernetes habit) is 25; other strings are refused here with the accepted forms named."""
    if not isinstance(value, str):
        return value
    match = PERCENT_RE.match(value)
    if match is None:
        raise PydanticCustomError("field.type", 'must be a percentage: a number from 0 to 100, or a string such as '
                                                '"25%"')
    return float(match.group(1))


Percent = Annotated[Number, BeforeValidator(_percent_string, json_schema_input_type=(
    float | Annotated[str, Field(pattern=PERCENT_SCHEMA_PATTERN)])),
    check("rolling_update.percent_range", lambda v: 0 <= v <= 100, "must be a percentage from 0 to 100",
          minimum=0, maximum=100)]
Count = Annotated[Integer, check("replicas.min_one", lambda v: v >= 1, "must be at least 1", minimum=1),
                  check("replicas.max", lambda v: v <= L.MAX_REPLICAS,
                        f"must be at most {L.MAX_REPLICAS} instances per role", maximum=L.MAX_REPLICAS)]
MetricTarget = Annotated[Number, check("autoscaling.target_positive", lambda v: v > 0, "must be greater than 0",
                                       exclusiveMinimum=0),
                         check("autoscaling.target_range",
                               lambda v: L.MIN_METRIC_TARGET <= v <= L.MAX_METRIC_TARGET,
                               f"must be from {L.MIN_METRIC_TARGET:g} to {L.MAX_METRIC_TARGET:g}",
                               minimum=L.MIN_METRIC_TARGET, maximum=L.MAX_METRIC_TARGET)]
_PROBE_MAX = f"at most {L.MAX_PROBE_S:g} seconds"
Seconds = Annotated[Number, check("probe.timing", lambda v: 0 <= v <= L.MAX_PROBE_S,
                                  f"must be 0 or more seconds, {_PROBE_MAX}", minimum=0, maximum=L.MAX_PROBE_S)]
PositiveSeconds = Annotated[Number, check("probe.timing", lambda v: 0 < v <= L.MAX_PROBE_S,
                                          f"must be more than 0 seconds, {_PROBE_MAX}", exclusiveMinimum=0,
                                          maximum=L.MAX_PROBE_S)]
Threshold = Annotated[Integer, check("probe.timing", lambda v: 1 <= v <= L.MAX_THRESHOLD,
                                     f"must be from 1 to {L.MAX_THRESHOLD}", minimum=1, maximum=L.MAX_THRESHOLD)]
GracePeriod = Annotated[Number, check("graceful_shutdown.range", lambda v: 0 <= v <= 3600,
                                      "must be from 0 to 3600 seconds", minimum=0, maximum=3600)]
Weight = Annotated[Number, check("traffic.weight_non_negative", lambda v: 0 <= v <= 100,
                                 "must be a number from 0 to 100", minimum=0, maximum=100)]
MirrorPercent = Annotated[Number, check("traffic.mirror_percent_range", lambda v: 0 < v <= 100,
                                        "must be greater than 0 and at most 100", exclusiveMinimum=0, maximum=100)]
Timeout = Annotated[Number, check("traffic.timeout_positive", lambda v: v > 0, "must be greater than 0 seconds",
                                  exclusiveMinimum=0),
                    check("traffic.timeout_max", lambda v: v <= L.MAX_TIMEOUT_S,
                          f"must be at most {L.MAX_TIMEOUT_S:g} seconds (one day)", maximum=L.MAX_TIMEOUT_S)]
Retries = Annotated[Integer, check("traffic.retries_range", lambda v: 0 <= v <= 3, "must be from 0 to 3",
                                   minimum=0, maximum=3)]


def _resource(limit: float, unit: str, positive: bool = True) -> Any:
    low = check("compute_spec.resources_positive", (lambda v: v > 0) if positive else (lambda v: v >= 0),
                "must be greater than 0" if positive else "must be 0 or more",
                **({"exclusiveMinimum": 0} if positive else {"minimum": 0}))
    high = check("compute_spec.resources_max", lambda v: v <= limit, f"must be at most {limit:g} {unit}",
                 maximum=limit)
    return low, high


Cpu = Annotated[Number, *_resource(L.MAX_CPU, "CPUs")]
MemoryGib = Annotated[Number, *_resource(L.MAX_MEMORY_GIB, "GiB")]
Price = Annotated[Number, *_resource(L.MAX_PRICE, "per hour", positive=False)]
GpuCount = Annotated[Integer, *_resource(L.MAX_GPUS, "GPUs", positive=False)]
Currency = Annotated[str, check("compute_spec.currency_code", lambda v: bool(re.fullmatch(r"[A-Z]{3}", v)),
                                "must be an ISO 4217 currency code such as USD or CNY", pattern=r"^[A-Z]{3}$")]
Capacity = Annotated[Integer, check("queue.capacity_non_negative", lambda v: v >= 0, "must be 0 or more instances",
                                    minimum=0),
                     check("queue.capacity_max", lambda v: v <= L.MAX_CAPACITY,
                           f"must be at most {L.MAX_CAPACITY} instances", maximum=L.MAX_CAPACITY)]


class Model(BaseModel):
    """Base of every spec model: unknown keys are errors, types are strict (see the module docstring), numbers are
    finite, and the model's data round-trips through YAML/JSON. A ValidationError's text never quotes the input
    (a secret could be in it, and tracebacks reach logs); findings take the values from `errors()` and mask them."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_default=False, str_strip_whitespace=False,
                              strict=True, allow_inf_nan=False, hide_input_in_errors=True)

    def to_data(self) -> dict[str, Any]:
        """Plain data with secrets revealed, for transport (API bodies, Pulumi inputs). Never print it."""
        return self.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True})

    def to_public(self) -> dict[str, Any]:
        """Plain data with secret values masked, for plans, logs and status."""
        return self.model_dump(mode="json", exclude_none=True)

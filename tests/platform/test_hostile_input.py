"""Hostile input over the live API: every case answers a 4xx with a message (never a 5xx), stores nothing (the
database's logical dump — objects, events, meta — is byte-identical before and after) and echoes no secret.

Cases: non-finite and out-of-range numbers in every kind of numeric field, strict types, deep nesting, lone
surrogates, NUL and control characters, content types, oversized bodies (declared and chunked), bounded query
numbers, HEAD/GET with bodies, unknown methods, path traversal in names, auth, stale versions, size and count
limits, and secrets in places where they could be echoed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from platform_harness import PlatformProcess, deployment, service

from inferstack.spec import limits as L

SECRET = "PLANTED-hostile-7c1e9a"
JSON = {"Content-Type": "application/json"}


@dataclass
class Case:
    """One request and what it must get: `status` (one code or several), and for 422s the rule and path."""

    name: str
    method: str
    path: str
    body: Any = None  # bytes as given; anything else is sent as JSON text
    status: int | tuple[int, ...] = 422
    headers: dict[str, str | bytes] = field(default_factory=dict)
    rule: str | None = None
    at: str | None = None  # a finding's path must end with this
    token: str | None = ""  # "" the real token, None none, else that token

    def content(self) -> bytes | None:
        if self.body is None or isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, allow_nan=True).encode()


DEP = "/v1/services/keep/deployments/stable"
TRAFFIC = "/v1/services/keep/traffic"


def _dep(**extra: Any) -> dict[str, Any]:
    """The stored deployment `stable` (with the planted secret), with `extra` fields over it."""
    return {**deployment("stable", env=[{"name": "TOKEN", "secret": SECRET}, {"name": "MODE", "value": "a"}]),
            **extra}


def _with(text: str, old: str, new: str) -> bytes:
    assert old in text, old
    return text.replace(old, new, 1).encode()


def _non_finite() -> Iterator[Case]:
    """NaN, ±Infinity and overflowing literals, as raw JSON text, in every kind of numeric field."""
    literals = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400")
    traffic = json.dumps({"weights": {"stable": 90, "canary": 10}, "timeout_s": 60, "retries": 1,
                          "mirror": {"deployment": "canary", "percent": 5}})
    for field_, old in (("timeout_s", '"timeout_s": 60'), ("retries", '"retries": 1'),
                        ("weights.stable", '"stable": 90'), ("mirror.percent", '"percent": 5')):
        key = old.split(":")[0]
        for literal in literals:
            yield Case(f"traffic {field_} {literal}", "PUT", TRAFFIC, _with(traffic, old, f"{key}: {literal}"),
                       rule="number.finite", at=field_)
    dep = json.dumps(_dep(graceful_shutdown_s=30, probes={"readiness": {"tcp": {}, "period_s": 1}},
                          ports={"listen": 8080}))
    for field_, old in (("replicas", '"replicas": 1'), ("priority", None), ("graceful_shutdown_s", '"graceful_shutdown_s": 30'),
                        ("rolling_update.max_surge", '"max_surge": 25'),
                        ("probes.readiness.period_s", '"period_s": 1'), ("ports.listen", '"listen": 8080')):
        if old is None:
            text, old = dep.replace('"replicas": 1', '"replicas": 1, "priority": 5'), '"priority": 5'
        else:
            text = dep
        key = old.split(":")[0]
        for literal in ("NaN", "Infinity", "1e400"):
            yield Case(f"deployment {field_} {literal}", "PUT", DEP, _with(text, old, f"{key}: {literal}"),
                       rule="number.finite", at=field_)
    spec = json.dumps({"cpu": 1, "memory_gib": 2, "machine": {"cpu": 32}, "price_per_hour": {"prepaid": 0.5}})
    for field_, old in (("cpu", '"cpu": 1'), ("memory_gib", '"memory_gib": 2'),
                        ("price_per_hour.prepaid", '"prepaid": 0.5')):
        for literal in ("NaN", "1e400"):
            yield Case(f"compute spec {field_} {literal}", "PUT", "/v1/compute-specs/cpu-small",
                       _with(spec, old, f"{old.split(':')[0]}: {literal}"), rule="number.finite", at=field_)
    queue = json.dumps({"resource_group": "rg-default", "zone": "zone-a", "billing": "postpaid",
                        "capacity": {"cpu-small": 64}})
    yield Case("queue capacity Infinity", "PUT", "/v1/queues/q-new", _with(queue, "64", "Infinity"),
               rule="number.finite", at="capacity.cpu-small")
    yield Case("service port NaN", "PUT", "/v1/services/keep",
               _with(json.dumps(service("keep")), "8000", "NaN"), rule="number.finite", at="ports[0]")
    yield Case("a 400-digit integer for a float", "PUT", TRAFFIC,
               _with(traffic, '"timeout_s": 60', '"timeout_s": 1' + "0" * 400), rule="number.finite", at="timeout_s")


def _strict_types() -> Iterator[Case]:
    for field_, value, rule in (("replicas", "2", "field.type"), ("replicas", True, "field.type"),
                                ("replicas", 2.5, "field.invalid"), ("replicas", [], "field.type"),
                                ("replicas", {}, "field.type"), ("priority", "5", "field.type"),
                                ("use_idle", 1, "field.type"), ("use_idle", "true", "field.type"),
                                ("name", 5, "field.type"), ("graceful_shutdown_s", "30", "field.type")):
        yield Case(f"deployment {field_} = {value!r}", "PUT", DEP, _dep(**{field_: value}), rule=rule, at=field_)
    yield Case("port as a string", "PUT", "/v1/services/keep", service("keep", ports=["8000"]), rule="field.type",
               at="ports[0]")
    yield Case("weight as a string", "PUT", TRAFFIC, {"weights": {"stable": "90", "canary": 10}}, rule="field.type",
               at="weights.stable")
    yield Case("timeout as a string", "PUT", TRAFFIC, {"timeout_s": "60"}, rule="field.type", at="timeout_s")
    yield Case("env value as a number", "PUT", DEP, {**_dep(), "env": [{"name": "A", "value": 5}]},
               rule="field.type", at="env[0].value")
    yield Case("secret as a number", "PUT", DEP, {**_dep(), "env": [{"name": "A", "secret": 12345}]},
               rule="field.type", at="env[0].secret")
    yield Case("lends_idle as a number", "PUT", "/v1/queues/q-new", {
        "resource_group": "rg-default", "zone": "zone-a", "billing": "postpaid", "lends_idle": 0},
        rule="field.type", at="lends_idle")


def _structure() -> Iterator[Case]:
    for depth in (MAXD := 33, 1000, 100_000):
        yield Case(f"arrays nested {depth} deep", "PUT", TRAFFIC, b"[" * depth + b"]" * depth, status=400)
        yield Case(f"objects nested {depth} deep", "POST", "/v1/apply",
                   b'{"a":' * depth + b"1" + b"}" * depth, status=400)
    yield Case("nested deep inside a valid key", "PUT", DEP,
               json.dumps({**_dep(), "x": "PLACE"}).replace('"PLACE"', "[" * MAXD + "]" * MAXD).encode(), status=400)
    for root in ([], "text", 1, True):
        yield Case(f"a JSON {type(root).__name__} as the body", "PUT", "/v1/services/keep", root,
                   rule="field.type")
    yield Case("null as the body", "POST", "/v1/apply", b"null", rule="field.type")
    yield Case("a duplicate key", "PUT", "/v1/services/keep",
               b'{"name": "keep", "resource_group": "rg-default", "vpc": "vpc-default", "vpc": "vpc-other"}',
               status=400)
    yield Case("a duplicate key in an env entry", "PUT", DEP,
               json.dumps(_dep()).replace('"name": "MODE"', '"name": "MODE", "name": "OTHER"').encode(), status=400)
    yield Case("invalid UTF-8", "PUT", "/v1/services/keep", b'{"name": "\xff\xfe"}', status=400)
    yield Case("a UTF-8 byte order mark", "PUT", "/v1/services/keep",
               b"\xef\xbb\xbf" + json.dumps(service("keep")).encode(), status=400)
    yield Case("trailing garbage", "PUT", "/v1/services/keep", json.dumps(service("keep")).encode() + b" x",
               status=400)
    yield Case("an empty body", "PUT", "/v1/services/keep", b"", status=400)
    yield Case("a body of spaces", "POST", "/v1/apply", b"   \n ", status=400)
    yield Case("an integer of 5000 digits", "PUT", TRAFFIC, b'{"retries": ' + b"9" * 5000 + b"}", status=400)
    yield Case("a truncated body", "PUT", "/v1/services/keep", b'{"name": "keep", "vpc": ', status=400)


def _surrogates_and_controls() -> Iterator[Case]:
    dep = json.dumps(_dep())
    svc = json.dumps(service("keep", description="PLACE"))
    for where, text, old in (("a name", dep, '"name": "stable"'), ("an env value", dep, '"value": "a"'),
                             ("a secret", dep, f'"secret": "{SECRET}"'), ("a description", svc, '"PLACE"')):
        key = old.split(":")[0]
        yield Case(f"a lone surrogate in {where}", "PUT", DEP if text is dep else "/v1/services/keep",
                   _with(text, old, f'{key}: "x\\ud800y"'), status=400)
    yield Case("a lone surrogate in a key", "PUT", "/v1/services/keep",
               _with(svc, '"description"', '"descr\\udfffiption"'), status=400)
    yield Case("a lone surrogate in a header rule", "PUT", TRAFFIC,
               b'{"header_rules": [{"header": "x", "value": "\\ud83d", "deployment": "stable"}], '
               b'"weights": {"stable": 90, "canary": 10}}', status=400)
    for where, body, path, at in (
            ("an env value", {**_dep(), "env": [{"name": "A", "value": "a\0b"}]}, DEP, "env[0].value"),
            ("a secret", {**_dep(), "env": [{"name": "A", "secret": SECRET + "\0"}]}, DEP, "env[0].secret"),
            ("a command", _dep(command=["serve", "--x\0y"]), DEP, "command[1]"),
            ("a description", service("keep", description="a\0b"), "/v1/services/keep", "description"),
            ("a mount path", _dep(mounts=[{"source": "m", "path": "/m\0"}]), DEP, "mounts[0].path"),
            ("a schedule name", _dep(autoscaling={"schedules": [
                {"name": "a\nb", "start": "0 9 * * *", "end": "0 18 * * *", "replicas": 2}]}), DEP,
             "schedules[0].name"),
            ("a header value", {"header_rules": [{"header": "x", "value": "a\r\nX-Evil: 1", "deployment": "stable"}],
                                "weights": {"stable": 90, "canary": 10}}, TRAFFIC, "header_rules[0].value")):
        yield Case(f"a control character in {where}", "PUT", path, body, rule="text.control_characters", at=at)
    yield Case("NUL in a name", "PUT", DEP, _dep(name="sta\0ble", key="stable"), rule="name.format", at="name")
    yield Case("a space in a probe path", "PUT", DEP, _dep(probes={"readiness": {"http": {"path": "/a b"}}}),
               rule="probe.http_path_format", at="http.path")
    yield Case("a header name with a colon", "PUT", TRAFFIC, {
        "header_rules": [{"header": "x:y", "value": "1", "deployment": "stable"}],
        "weights": {"stable": 90, "canary": 10}}, rule="header.name_format", at="header_rules[0].header")


def _content_types() -> Iterator[Case]:
    body = json.dumps(service("keep")).encode()
    for given in (None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1",
                  "application/xml", "multipart/form-data; boundary=x", "application/json-patch+json"):
        headers = {"Content-Type": given} if given else {}
        yield Case(f"Content-Type {given}", "PUT", "/v1/services/keep", body, status=415, headers=headers)
    yield Case("form-encoded apply", "POST", "/v1/apply", b"services=x", status=415,
               headers={"Content-Type": "application/x-www-form-urlencoded"})


def _sizes() -> Iterator[Case]:
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    yield Case("a 2 MiB body", "PUT", "/v1/services/keep", big, status=413)
    yield Case("a 10 MB env value", "PUT", DEP, {**_dep(), "env": [{"name": "A", "value": "x" * 10_000_000}]},
               status=413)
    yield Case("a 2 MiB apply", "POST", "/v1/apply", big, status=413)
    yield Case("an env value over its limit", "PUT", DEP, {**_dep(), "env": [
        {"name": "A", "value": "x" * (L.MAX_ENV_VALUE + 1)}]}, rule="env.value_size", at="env[0].value")
    yield Case("a secret over its limit", "PUT", DEP, {**_dep(), "env": [
        {"name": "A", "secret": SECRET * 1000}]}, rule="env.value_size", at="env[0].secret")
    yield Case("an environment over its total", "PUT", DEP, {**_dep(), "env": [
        {"name": f"V{i}", "value": "x" * L.MAX_ENV_VALUE} for i in range(5)]}, rule="env.total_size", at="env")
    yield Case("replicas 10^30", "PUT", DEP, _dep(replicas=10**30), rule="replicas.max", at="replicas")
    yield Case("replicas 10^30 as a float", "PUT", DEP, _dep(replicas=1e30), rule="replicas.max", at="replicas")
    yield Case("replicas one over the maximum", "PUT", DEP, _dep(replicas=L.MAX_REPLICAS + 1),
               rule="replicas.max", at="replicas")
    yield Case("autoscaling max 10^9", "PUT", DEP, _dep(autoscaling={"metrics": [
        {"metric": "qps", "target": 5, "max": 10**9}]}), rule="replicas.max", at="metrics[0].max")
    yield Case("a command of 300 items", "PUT", DEP, _dep(command=["x"] * 300), rule="command.size", at="command")
    yield Case("an empty command", "PUT", DEP, _dep(command=[]), rule="command.size", at="command")
    yield Case("a timeout of a year", "PUT", TRAFFIC, {"timeout_s": 3.2e7, "weights": {"stable": 90, "canary": 10}},
               rule="traffic.timeout_max", at="timeout_s")
    yield Case("a probe period of 10^12 s", "PUT", DEP, _dep(probes={"readiness": {"tcp": {}, "period_s": 1e12}}),
               rule="probe.timing", at="period_s")
    yield Case("a metric target of 1e-300", "PUT", DEP, _dep(autoscaling={"metrics": [
        {"metric": "qps", "target": 1e-300, "max": 3}]}), rule="autoscaling.target_range", at="target")
    yield Case("a price of 1e300", "PUT", "/v1/compute-specs/cpu-small", {
        "cpu": 1, "memory_gib": 2, "machine": {"cpu": 32}, "price_per_hour": {"prepaid": 1e300}},
        rule="compute_spec.resources_max", at="prepaid")
    deployments = [deployment(f"d{i}") for i in range(L.MAX_DEPLOYMENTS_PER_SERVICE + 1)]
    yield Case("65 deployments in one service", "POST", "/v1/apply", {"services": [
        {**service("many"), "deployments": deployments, "traffic": {"weights": {"d0": 100}}}]},
        rule="service.deployments_max", at="deployments")
    yield Case("501 services in one apply", "POST", "/v1/apply", {"services": [
        service(f"s{i}") for i in range(L.MAX_SERVICES + 1)]}, rule="stack.services_max", at="services")
    yield Case("17 ports", "PUT", "/v1/services/keep", service("keep", ports=list(range(8000, 8017))),
               rule="list.max_items", at="ports")
    yield Case("65 header rules", "PUT", TRAFFIC, {"weights": {"stable": 90, "canary": 10}, "header_rules": [
        {"header": "x", "value": str(i), "deployment": "stable"} for i in range(65)]},
        rule="list.max_items", at="header_rules")


def _queries() -> Iterator[Case]:
    for query in ("since=1000000000000000000000000000000", "limit=1000000000000000000000000000000", "limit=0",
                  "limit=-1", "since=-1", "since=abc", "since=1e3", "since=", "limit=10001", "since=%00",
                  "since=%EF%BC%91"):  # a full-width digit: Python's int() would take it
        yield Case(f"events ?{query}", "GET", f"/v1/events?{query}", status=400)
    yield Case("service events ?limit=1e400", "GET", "/v1/services/keep/events?limit=1e400", status=400)
    body = service("keep", description="x")
    yield Case("dry_run=maybe", "PUT", "/v1/services/keep?dry_run=maybe", body, status=400)
    yield Case("a misspelt dry_run", "PUT", "/v1/services/keep?dry_rn=true", body, status=400)
    yield Case("dry_run twice", "PUT", "/v1/services/keep?dry_run=true&dry_run=false", body, status=400)
    yield Case("an unknown parameter on a delete", "DELETE", "/v1/services/keep?force=1", status=400)
    yield Case("an unknown parameter on an apply", "POST", "/v1/apply?prune=true", {"services": []}, status=400)
    yield Case("a real dry run stores nothing", "PUT", "/v1/services/keep?dry_run=true", body, status=200)
    yield Case("a dry-run delete stores nothing", "DELETE", "/v1/services/keep?dry_run=1", status=200)


def _methods() -> Iterator[Case]:
    new = service("newsvc")
    yield Case("HEAD with a body does not create", "HEAD", "/v1/services/newsvc", new, status=404, headers=JSON)
    yield Case("HEAD with a body does not update", "HEAD", "/v1/services/keep", service("keep", description="h"),
               status=200, headers=JSON)
    yield Case("HEAD on a deployment with a body", "HEAD", "/v1/services/keep/deployments/new",
               deployment("new"), status=404, headers=JSON)
    yield Case("HEAD on traffic with a body", "HEAD", TRAFFIC, {"weights": {"stable": 0, "canary": 100}},
               status=200, headers=JSON)
    yield Case("HEAD on an inventory object with a body", "HEAD", "/v1/vpcs/vpc-new", {"cidr": "10.0.0.0/8"},
               status=404, headers=JSON)
    yield Case("GET with a body does not write", "GET", "/v1/services/newsvc", new, status=404, headers=JSON)
    for method in ("PATCH", "OPTIONS", "TRACE"):
        yield Case(f"{method} on a service", method, "/v1/services/keep", service("keep"), status=405,
                   headers=JSON)
    yield Case("POST on a service", "POST", "/v1/services/keep", service("keep"), status=405, headers=JSON)
    yield Case("PUT on the events list", "PUT", "/v1/events", {}, status=405, headers=JSON)


def _names() -> Iterator[Case]:
    yield Case("a VPC named ../../x", "PUT", "/v1/vpcs/..%2F..%2Fx", {"cidr": "10.0.0.0/8"}, rule="ref.format",
               at="name")
    yield Case("a VPC named a/b", "PUT", "/v1/vpcs/a%2Fb", {"cidr": "10.0.0.0/8"}, rule="ref.format", at="name")
    yield Case("a subnet named with NUL", "PUT", "/v1/subnets/a%00b", {"vpc": "vpc-default", "zone": "zone-a"},
               rule="ref.format", at="name")
    yield Case("an image named ../x", "PUT", "/v1/images/..%2Fx", {"command": ["true"]}, rule="image.name_format",
               at="name")
    yield Case("an image named a//b", "PUT", "/v1/images/a%2F%2Fb", {"command": ["true"]},
               rule="image.name_format", at="name")
    yield Case("a mount source leaving its file system", "PUT", DEP, _dep(mounts=[
        {"source": "a/../../x", "path": "/m"}]), rule="mount.source_format", at="source")
    yield Case("a mount source of ..", "PUT", DEP, _dep(mounts=[{"source": "..", "path": "/m"}]),
               rule="mount.source_format", at="source")
    yield Case("a deployment key ../x in the URL", "PUT", "/v1/services/keep/deployments/..%2Fx",
               deployment("stable"), status=404)  # no route matches a key with '/'
    yield Case("a deployment key .. in the URL", "PUT", "/v1/services/keep/deployments/%2E%2E",
               deployment("stable"), rule="key.format", at="key")
    yield Case("a service key with a space", "PUT", "/v1/services/a%20b", service("a b"), rule="key.format",
               at="key")
    yield Case("a body name other than the URL's", "PUT", "/v1/vpcs/vpc-x", {"name": "vpc-y"},
               rule="field.invalid", at="name")
    yield Case("a queue in another resource group named with a slash", "PUT", DEP, _dep(queue="q/x"),
               rule="ref.format", at="queue")


def _auth_and_versions() -> Iterator[Case]:
    body = service("keep", description="auth")
    for name, token in (("no token", None), ("a wrong token", "nope"), ("a token with a space", "x y")):
        yield Case(f"PUT with {name}", "PUT", "/v1/services/keep", body, status=401, token=token)
    yield Case("Basic auth", "PUT", "/v1/services/keep", body, status=401, token=None,
               headers={"Authorization": "Basic a2VlcDprZWVw"})
    yield Case("the token in the query", "DELETE", "/v1/services/keep?token=x", status=401, token=None)
    yield Case("a stale If-Match", "PUT", "/v1/services/keep", body, status=409, headers={"If-Match": '"1"'})
    yield Case("a garbage If-Match", "PUT", "/v1/services/keep", body, status=409,
               headers={"If-Match": b"\xff" * 100})
    yield Case("If-Match: * on a missing object", "PUT", "/v1/services/ghost", service("ghost"), status=409,
               headers={"If-Match": "*"})


def _secrets_not_echoed() -> Iterator[Case]:
    yield Case("a misspelt secret key", "PUT", DEP, {**_dep(), "env": [{"name": "A", "secrte": SECRET}]},
               rule="field.unknown", at="env[0].secrte")
    yield Case("a secret in an unknown top-level key", "PUT", DEP, {**_dep(), "secret": SECRET},
               rule="field.unknown", at="secret")
    yield Case("a secret given with a value", "PUT", DEP, {**_dep(), "env": [
        {"name": "A", "secret": SECRET, "value": SECRET}]}, rule="env.value_exactly_one")
    yield Case("a secret in an invalid deployment", "PUT", DEP, {**_dep(), "replicas": 0},
               rule="replicas.min_one", at="replicas")
    yield Case("a secret where a list was wanted", "PUT", DEP, {**_dep(), "env": {"TOKEN": {"secret": SECRET}}},
               rule="field.type", at="env")


CASES = [*_non_finite(), *_strict_types(), *_structure(), *_surrogates_and_controls(), *_content_types(),
         *_sizes(), *_queries(), *_methods(), *_names(), *_auth_and_versions(), *_secrets_not_echoed()]


def test_the_suite_has_at_least_a_hundred_cases() -> None:
    assert len(CASES) >= 100, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES), "case names are unique"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    platform = PlatformProcess(tmp_path_factory.mktemp("hostile") / "data").start()
    with platform.client() as client:
        client.put_service("keep", service("keep"))
        client.put_deployment("keep", "stable", _dep())
        client.put_deployment("keep", "canary", deployment("canary"))
        client.put_traffic("keep", {"weights": {"stable": 90, "canary": 10}})
    yield platform
    platform.stop()


@pytest.fixture(scope="module")
def clients(live: PlatformProcess) -> Iterator[dict[str | None, httpx.Client]]:
    made: dict[str | None, httpx.Client] = {}

    def get(token: str | None) -> httpx.Client:
        if token not in made:
            made[token] = live.http(token)
        return made[token]

    yield get  # type: ignore[misc]
    for http in made.values():
        http.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_request_gets_a_4xx_and_changes_nothing(case: Case, live: PlatformProcess, clients) -> None:
    before = live.dump()
    headers = dict(case.headers)
    content = case.content()
    if content is not None and "Content-Type" not in headers and case.status != 415:
        headers["Content-Type"] = "application/json"
    response = clients(case.token).request(case.method, case.path, content=content, headers=headers)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert response.status_code in expected, (response.status_code, response.text[:500])
    assert response.status_code < 500
    assert SECRET not in response.text, "a secret was echoed"
    assert live.dump() == before, "a refused (or read-only) request changed the store"
    if response.status_code >= 400 and case.method != "HEAD":
        body = response.json()
        assert body["error"] and body["message"], body
        if case.rule is not None:
            found = [(f["rule"], f["path"]) for f in body.get("findings", [])]
            assert any(rule == case.rule and (case.at is None or path.endswith(case.at)) for rule, path in found), \
                (case.rule, case.at, found)


def test_a_chunked_body_cannot_grow_past_the_limit(live: PlatformProcess, clients) -> None:
    before = live.dump()

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(64):
            yield b"x" * 64 * 1024
        yield b'"}'

    response = clients("").put("/v1/services/keep", content=chunks(), headers=JSON)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert live.dump() == before


def test_after_every_case_the_platform_still_serves_and_reads_what_it_stored(live: PlatformProcess,
                                                                              clients) -> None:
    http = clients("")
    assert http.get("/healthz").json()["ok"] is True
    dep = http.get(DEP).json()
    assert dep["spec"]["env"][0] == {"name": "TOKEN", "secret": "[secret]"}
    assert http.get(TRAFFIC).json()["spec"]["weights"] == {"stable": 90.0, "canary": 10.0}
    assert http.get("/v1/services/newsvc").status_code == 404  # HEAD with a body created nothing
    events = http.get("/v1/events").text
    assert SECRET not in events

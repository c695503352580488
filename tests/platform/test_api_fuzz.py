"""Schema-based fuzzing of the whole API, driven by its own /openapi.json: schemathesis turns every operation into a
hypothesis strategy (path and query parameters, bodies) and the cases go to a live platform. Two properties:
- no request answers a 5xx;
- a body the schema accepts breaks no single-field rule: a 422 on such a body names only rules across fields or
  objects (references, uniqueness, sums, exactly-one choices, capacity: 422 by design, as the document says).

Bounded: a fixed number of examples per operation, derandomized (the same inputs on every run), so the CI time stays
flat (about half a minute of CPU here). Half the cases aim at the objects that exist (so writes reach the rules rather than
a 404), half at whatever the path patterns allow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from platform_harness import PlatformProcess, deployment, service
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from inferstack.platform.api import openapi_document
from inferstack.spec.types import FIELD_RULES

EXAMPLES = 10
NEGATIVE_EXAMPLES = 4  # schema-invalid cases: only the first property applies
# Rules a pattern states only in part: the value must also parse (croniter, ipaddress).
CHECKED_FURTHER = {"autoscaling.cron_format", "cidr.format"}
SINGLE_FIELD = FIELD_RULES - CHECKED_FURTHER

DOCUMENT = openapi_document()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [(path, method.upper()) for path, methods in DOCUMENT["paths"].items() for method in methods
              if path not in ("/healthz", "/openapi.json")]
EXISTING = {"key": "keep", "dkey": "stable", "name": "subnet-a"}


def _cases(path: str, method: str, mode: GenerationMode = GenerationMode.POSITIVE) -> st.SearchStrategy[Any]:
    operation = SCHEMA[path][method]
    names = [p["name"] for p in DOCUMENT["paths"][path][method.lower()].get("parameters", []) if p["in"] == "path"]
    existing = {n: ("inferstack/echo" if path.startswith("/v1/images") else EXISTING[n]) for n in names}
    overrides: dict[str, Any] = {}
    if method == "DELETE":
        overrides["query"] = {"dry_run": "true"}  # deletes stay dry: the objects the other cases aim at must remain
    return st.one_of(operation.as_strategy(mode, **overrides),
                     operation.as_strategy(mode, path_parameters=existing, **overrides))


def _align_identity(case: Any) -> None:
    """The object's identity is the URL's: a body naming another one is refused by design (field.invalid)."""
    body = case.body
    params = {k: unquote(str(v)) for k, v in (case.path_parameters or {}).items()}  # as the server decodes them
    if not isinstance(body, dict):
        return
    if body.get("key") is not None and ("dkey" in params or "key" in params):
        body["key"] = params.get("dkey", params.get("key"))
    if body.get("name") is not None and "name" in params:
        body["name"] = params["name"]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    platform = PlatformProcess(tmp_path_factory.mktemp("fuzz") / "data").start()
    with platform.client() as client:
        client.put_service("keep", service("keep"))
        client.put_deployment("keep", "stable", deployment("stable", env=[{"name": "T", "secret": "s"}]))
        client.put_deployment("keep", "canary", deployment("canary"))
    with platform.http() as h:
        yield h
    platform.stop()


def test_the_live_document_is_the_one_fuzzed(http: httpx.Client) -> None:
    assert http.get("/openapi.json").json() == json.loads(json.dumps(DOCUMENT))


@pytest.mark.parametrize("path,method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_no_5xx_and_schema_valid_bodies_break_no_single_field_rule(path: str, method: str,
                                                                     http: httpx.Client) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=_cases(path, method))
    def run(case: Any) -> None:
        _align_identity(case)
        has_body = case.body is not None and not isinstance(case.body, NotSet)
        kwargs = {"json": case.body} if has_body else {}
        response = http.request(method, case.formatted_path, params=case.query or None, **kwargs)
        where = (method, case.formatted_path, case.query, case.body if has_body else None)
        assert response.status_code < 500, (*where, response.text[:500])
        if response.status_code == 422 and has_body:
            broken = [(f["rule"], f["path"], f["message"]) for f in response.json().get("findings", [])
                      if f["rule"] in SINGLE_FIELD and f["severity"] == "error"]
            assert not broken, ("a schema-valid body broke single-field rules", *where, broken)

    run()


@pytest.mark.parametrize("path,method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_schema_invalid_requests_get_a_4xx_never_a_5xx(path: str, method: str, http: httpx.Client) -> None:
    @settings(max_examples=NEGATIVE_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=_cases(path, method, GenerationMode.NEGATIVE))
    def run(case: Any) -> None:
        has_body = case.body is not None and not isinstance(case.body, NotSet)
        kwargs = {"json": case.body} if has_body and _json_safe(case.body) else {}
        response = http.request(method, case.formatted_path, params=case.query or None, **kwargs)
        assert response.status_code < 500, (method, case.formatted_path, case.query, response.text[:500])

    run()


def _json_safe(body: Any) -> bool:
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True

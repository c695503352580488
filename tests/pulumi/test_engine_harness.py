"""The harness itself, on a trivial provider of the tests' own: it drives the SDK's servicer in the engine's order
(Configure first, `__provider` included) both in-process and as `python -u -m pulumi.dynamic`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine import DIFF_NONE, DIFF_SOME, ProviderHost, Resource
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from trivial_provider import FileProvider

HERE = Path(__file__).resolve().parent


@pytest.fixture(params=["in_process", "subprocess"])
def host(request: pytest.FixtureRequest):
    if request.param == "in_process":
        made = ProviderHost.in_process()
    else:
        made = ProviderHost.subprocess(env={"PYTHONPATH": str(HERE)})
    with made:
        yield made


def test_the_harness_drives_a_provider_through_its_whole_lifecycle(host: ProviderHost, tmp_path: Path):
    configured = host.configure({"test:dir": str(tmp_path), "test:token": rpc.wrap_rpc_secret("s3cret")})
    assert not configured.acceptSecrets  # so the engine strips secrets before every call, as the harness does
    provider = serialize_provider(FileProvider())
    res = Resource(host, "urn:pulumi:test::inferstack::pulumi-python:dynamic:Resource::one")

    assert res.check({"__provider": provider, "name": ""}).failures == [("name", "a name is required [name.required]")]
    assert res.up({"__provider": provider, "name": "one", "value": 1}) is None
    assert res.outputs["authorized"] is True  # the secret config value reached `configure`, unwrapped
    assert res.outputs["__provider"] == provider  # put back into the outputs, as the engine expects
    assert json.loads((tmp_path / "one.json").read_text()) == {"name": "one", "value": 1}

    assert res.diff({"__provider": provider, "name": "one", "value": 1}).changes == DIFF_NONE
    diff = res.up({"__provider": provider, "name": "one", "value": 2})
    assert diff is not None and diff.changes == DIFF_SOME and diff.replaces == []
    replace = res.diff({"__provider": provider, "name": "two", "value": 2})
    assert replace.replaces == ["name"] and replace.delete_before_replace

    (tmp_path / "one.json").write_text(json.dumps({"name": "one", "value": 7}))  # behind the provider's back
    assert res.refresh()["value"] == 7
    res.destroy()
    assert not (tmp_path / "one.json").exists()

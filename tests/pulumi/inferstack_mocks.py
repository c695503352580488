"""Helpers of the Pulumi layer's tests: recording mocks (graph, inputs, raw register requests), a fresh mock runtime
per session, and the embedded platform started on loopback. (Not in conftest.py: every test folder has a module of
that name, so `from conftest import ...` would pick whichever was imported first.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import struct_pb2
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from inferstack.testing import InlineExecutor

DYNAMIC = "pulumi-python:dynamic/inferstack:"
SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource (type, name, inputs as the engine would see them) and answers like the providers:
    outputs are the inputs plus `uid`, `status` and, for services, `gateway_url`."""

    def __init__(self) -> None:
        self.resources: list[pulumi_mocks.MockResourceArgs] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        self.resources.append(args)
        outs = dict(args.inputs)
        if args.typ.startswith(DYNAMIC):
            outs["uid"] = f"uid-{args.name}"
            outs["status"] = {"ready": True}
            if args.typ == DYNAMIC + "Service":
                outs["gateway_url"] = f"http://127.0.0.1:18000/{args.name}"
        return f"{args.name}-id", outs

    def call(self, args: pulumi_mocks.MockCallArgs) -> dict:
        return {}

    def of_type(self, suffix: str) -> list[pulumi_mocks.MockResourceArgs]:
        return [r for r in self.resources if r.typ.endswith(suffix)]

    def named(self, name: str, suffix: str = "") -> pulumi_mocks.MockResourceArgs:
        return next(r for r in self.resources if r.name == name and r.typ.endswith(suffix))


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Keeps the raw `RegisterResourceRequest`s: parents, dependencies, secret markers, alias specs, options."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.requests: list[Any] = []
        self.outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:
        self.requests.append(request)
        return super().RegisterResource(request)

    def RegisterResourceOutputs(self, request: Any) -> Any:
        """A component's registered outputs (what the engine keeps as its outputs), secrets still marked."""
        self.outputs[request.urn] = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        return super().RegisterResourceOutputs(request)

    def request(self, name: str, type_suffix: str = "") -> Any:
        return next(r for r in self.requests if r.name == name and r.type.endswith(type_suffix))

    def urn(self, name: str, type_suffix: str = "") -> str:
        return next(u for u in self.resources if u.rsplit("::", 1)[1] == name
                    and u.split("::")[2].endswith(type_suffix))


class PulumiTest:
    """What a mock test gets: the mocks, the monitor, and a way to set config."""

    def __init__(self, mocks: RecordingMocks, monitor: RecordingMonitor) -> None:
        self.mocks, self.monitor = mocks, monitor


@contextlib.contextmanager
def mock_session(config: dict[str, Any] | None = None, preview: bool = False) -> Iterator[PulumiTest]:
    """A fresh Pulumi runtime on mocks: new event loop, no root stack, the given config (values as JSON)."""
    config = config or {}
    loop = asyncio.new_event_loop()
    loop.set_default_executor(InlineExecutor())
    asyncio.set_event_loop(loop)
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}, [])
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="inferstack", stack="test", preview=preview, monitor=monitor)
    try:
        yield PulumiTest(mocks, monitor)
    finally:
        pulumi.runtime.settings.ROOT.set(None)
        pulumi.runtime.set_all_config({}, [])
        asyncio.set_event_loop(None)
        loop.close()


def run_program(fn: Any) -> Any:
    """Run `fn` as a Pulumi program on the current mocks and wait for what it returns (an Output or a value)."""
    result: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> Any:
        return pulumi.Output.from_input(fn()).apply(lambda v: result.setdefault("value", v))

    program()
    return result.get("value")


def secret_paths(value: Any, path: str = "") -> list[str]:
    """Paths of the values marked secret in a raw protobuf Struct (as the SDK sent them to the monitor)."""
    out: list[str] = []
    if isinstance(value, struct_pb2.Struct):
        fields = dict(value.fields)
        if SIG_KEY in fields and fields[SIG_KEY].string_value == SECRET_SIG:
            return [path]
        for k, v in fields.items():
            out += secret_paths(v, f"{path}.{k}" if path else k)
    elif isinstance(value, struct_pb2.Value):
        kind = value.WhichOneof("kind")
        if kind == "struct_value":
            out += secret_paths(value.struct_value, path)
        elif kind == "list_value":
            for i, v in enumerate(value.list_value.values):
                out += secret_paths(v, f"{path}[{i}]")
    return out


# --- a real embedded platform on loopback -----------------------------------------------------------------------------

class Platform:
    """A running `inferstack platform serve` (control plane; see `wait_for_ready` in the provider tests)."""

    def __init__(self, data_dir: Path, process: subprocess.Popen, url: str, token: str) -> None:
        self.data_dir, self.process, self.url, self.token = data_dir, process, url, token

    def client(self) -> Any:
        from inferstack.targets.local.client import PlatformClient

        return PlatformClient(self.url, self.token)


def platform_available() -> str | None:
    """Why a real platform cannot run here, or None when it can."""
    try:
        from inferstack.targets.local import client  # noqa: F401
    except ImportError as exc:
        return f"the platform client is not there yet: {exc}"
    try:
        import inferstack.platform.api  # noqa: F401
    except ImportError as exc:
        return f"the platform server is not there yet: {exc}"
    return None

"""Drive dynamic providers the way the Pulumi engine does, without the engine.

The engine starts `python -u -m pulumi.dynamic` in the project's virtualenv, reads the port it prints, and calls the
SDK's `DynamicResourceProviderServicer` over gRPC with `provider_pb2` messages: Configure first (the whole stack
config, namespaced keys, secrets wrapped), then per resource Check(olds = old inputs, news = program inputs) →
Diff(olds = old outputs, news = checked inputs) → Create / Update / Read / Delete. The provider is the unpickled
`__provider` input; Create, Update and Read put it back into the outputs. The servicer answers `acceptSecrets: false`,
so the engine strips secret markers from everything it sends — this harness does the same.

Three ways to host the servicer:
- `ProviderHost.in_process()`: the module's source loaded with `ast` minus its trailing `main()` call, the servicer
  served on an in-process `grpc.server` bound to 127.0.0.1:0 (a fresh module per host: a fresh `_PROVIDER_CACHE`);
- `ProviderHost.subprocess()`: `python -u -m pulumi.dynamic` with this interpreter;
- `ProviderHost.launched(project)`: the way the Pulumi CLI really starts a `pulumi-python:dynamic` provider — its
  launcher script (`upstream/pulumi-resource-pulumi-python`, a verbatim copy) run with the working directory the
  engine gives plugins (the program's `main` folder, `getPwdMain` in pkg/engine/project.go), the project's runtime
  options as `PULUMI_RUNTIME_<OPTION>` variables (`optionsStore` in pkg/resource/plugin/provider_plugin.go — the
  raw values of Pulumi.yaml, e.g. `virtualenv: .venv`, which the launcher resolves against its working directory),
  `PULUMI_PROJECT`, `PULUMI_CONFIG`, and the engine's address as its argument.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import subprocess
import sys
import tempfile
import types
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import grpc
from google.protobuf import struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

DIFF_NONE = provider_pb2.DiffResponse.DIFF_NONE
DIFF_SOME = provider_pb2.DiffResponse.DIFF_SOME
DIFF_UNKNOWN = provider_pb2.DiffResponse.DIFF_UNKNOWN


def _run(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def strip_secrets(value: Any) -> Any:
    """What the engine sends a provider that does not accept secrets: the values, without secret markers."""
    if rpc.is_rpc_secret(value):
        return strip_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_secrets(v) for v in value]
    return value


def to_struct(props: dict[str, Any]) -> struct_pb2.Struct:
    return _run(rpc.serialize_properties(strip_secrets(props), {}))


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    return rpc.deserialize_properties(struct, keep_unknowns=True)


def load_servicer_module() -> types.ModuleType:
    """`pulumi.dynamic.__main__` without its blocking `main()` call at import time."""
    spec = importlib.util.find_spec("pulumi.dynamic.__main__")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    tree = ast.parse(source)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and \
        getattr(last.value.func, "id", None) == "main", "the SDK's module no longer ends with main()"
    tree.body = tree.body[:-1]
    module = types.ModuleType("pulumi_dynamic_servicer")
    module.__file__ = spec.origin
    exec(compile(tree, spec.origin, "exec"), module.__dict__)  # noqa: S102 - the SDK's own source
    return module


LAUNCHER = Path(__file__).resolve().parent / "upstream" / "pulumi-resource-pulumi-python"


class LaunchError(RuntimeError):
    """The provider process exited without printing its port (the launcher's message is in `stderr`)."""

    def __init__(self, returncode: int | None, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr
        super().__init__(f"the provider did not start (exit {returncode}): {stderr.strip()}")


def program_dir(project: Path, main: str | None) -> Path:
    """The working directory the engine gives the program and its plugins: `main` when it is a folder, its folder
    when it is a file, else the project root (a port of `getPwdMain`, pkg/engine/project.go)."""
    if not main:
        return project
    path = (project / main).resolve() if not Path(main).is_absolute() else Path(main)
    return path if path.is_dir() else path.parent


def _go_format(value: Any) -> str:
    """A YAML scalar as the engine writes it into an environment variable (`fmt.Sprintf("%v", v)`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL when it does not exit in time; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ProviderError(Exception):
    """A provider call failed: the gRPC status and the details (the provider's traceback and message)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self.code, self.details = code, details
        super().__init__(f"{code.name}: {details}")


@dataclass
class CheckResult:
    inputs: dict[str, Any]
    failures: list[tuple[str, str]]


@dataclass
class DiffResult:
    changes: int
    replaces: list[str]
    delete_before_replace: bool

    @property
    def none(self) -> bool:
        return self.changes == DIFF_NONE


class ProviderHost:
    """A running dynamic-provider servicer and the engine's stub to call it."""

    def __init__(self, target: str, stop: Any, stderr: Any = None) -> None:
        self._channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self._channel).result(timeout=10)
        self.stub = provider_pb2_grpc.ResourceProviderStub(self._channel)
        self._stop = stop
        self.stderr = stderr

    @classmethod
    def in_process(cls) -> ProviderHost:
        module = load_servicer_module()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(module.DynamicResourceProviderServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        host = cls(f"127.0.0.1:{port}", lambda: server.stop(0))
        host.module = module
        return host

    @classmethod
    def subprocess(cls, env: dict[str, str] | None = None, cwd: str | None = None) -> ProviderHost:
        """`python -u -m pulumi.dynamic` with the project's interpreter; the first stdout line is the port.
        Its stderr (the provider's notes) goes to a temporary file, `host.stderr`."""
        return cls._start([sys.executable, "-u", "-m", "pulumi.dynamic"], {**os.environ, **(env or {})}, cwd)

    @classmethod
    def launched(cls, project: Path, cwd: Path | None = None, config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> ProviderHost:
        """The provider process as the Pulumi CLI starts it for the project in `project` (see the module docstring);
        `cwd` overrides the working directory the engine would choose."""
        import json

        import yaml

        settings = yaml.safe_load((project / "Pulumi.yaml").read_text())
        runtime = settings.get("runtime") or {}
        options = runtime.get("options") or {} if isinstance(runtime, dict) else {}
        variables = {f"PULUMI_RUNTIME_{k.upper()}": _go_format(v) for k, v in options.items()}
        variables["PULUMI_PROJECT"] = settings["name"]
        variables["PULUMI_CONFIG"] = json.dumps(config or {})
        base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
        return cls._start(["sh", str(LAUNCHER), "127.0.0.1:1"], {**base, **(env or {}), **variables},
                          str(cwd or program_dir(project, settings.get("main"))))

    @classmethod
    def _start(cls, argv: list[str], env: dict[str, str], cwd: str | None) -> ProviderHost:
        stderr = tempfile.NamedTemporaryFile(prefix="pulumi-dynamic-", suffix=".log", delete=False)  # noqa: SIM115
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=cwd)
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.isdigit():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stderr.close()
            raise LaunchError(process.returncode, line + Path(stderr.name).read_text())

        def stop() -> None:
            stop_process(process)
            stderr.close()

        host = cls(f"127.0.0.1:{line}", stop, Path(stderr.name))
        host.process = process
        return host

    def close(self) -> None:
        self._channel.close()
        self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=120)
        except grpc.RpcError as exc:
            raise ProviderError(exc.code(), exc.details() or "") from None

    # --- the engine's calls ------------------------------------------------------------------------------------

    def configure(self, config: dict[str, Any]) -> provider_pb2.ConfigureResponse:
        """The stack's config, namespaced keys; secret values wrapped as the engine marks them."""
        variables = {k: str(rpc.unwrap_rpc_secret(v)) for k, v in config.items()}
        return self._call("Configure", provider_pb2.ConfigureRequest(
            variables=variables, args=_run(rpc.serialize_properties(config, {})), acceptSecrets=True,
            acceptResources=True))

    def check(self, urn: str, olds: dict[str, Any] | None, news: dict[str, Any]) -> CheckResult:
        response = self._call("Check", provider_pb2.CheckRequest(
            urn=urn, olds=to_struct(olds or {}), news=to_struct(news)))
        return CheckResult(from_struct(response.inputs), [(f.property, f.reason) for f in response.failures])

    def diff(self, urn: str, id_: str, olds: dict[str, Any], news: dict[str, Any],
             old_inputs: dict[str, Any] | None = None) -> DiffResult:
        response = self._call("Diff", provider_pb2.DiffRequest(
            urn=urn, id=id_, olds=to_struct(olds), news=to_struct(news), old_inputs=to_struct(old_inputs or {})))
        return DiffResult(response.changes, list(response.replaces), response.deleteBeforeReplace)

    def create(self, urn: str, props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        response = self._call("Create", provider_pb2.CreateRequest(urn=urn, properties=to_struct(props)))
        return response.id, from_struct(response.properties)

    def update(self, urn: str, id_: str, olds: dict[str, Any], news: dict[str, Any],
               old_inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._call("Update", provider_pb2.UpdateRequest(
            urn=urn, id=id_, olds=to_struct(olds), news=to_struct(news), old_inputs=to_struct(old_inputs or {})))
        return from_struct(response.properties)

    def read(self, urn: str, id_: str, props: dict[str, Any],
             inputs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        response = self._call("Read", provider_pb2.ReadRequest(
            urn=urn, id=id_, properties=to_struct(props), inputs=to_struct(inputs or {})))
        return response.id, from_struct(response.properties)

    def delete(self, urn: str, id_: str, props: dict[str, Any], old_inputs: dict[str, Any] | None = None) -> None:
        self._call("Delete", provider_pb2.DeleteRequest(
            urn=urn, id=id_, properties=to_struct(props), old_inputs=to_struct(old_inputs or {})))


class Resource:
    """One resource's engine-side state across calls: its URN, id, last inputs and outputs."""

    def __init__(self, host: ProviderHost, urn: str) -> None:
        self.host, self.urn = host, urn
        self.id = ""
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}

    def check(self, news: dict[str, Any]) -> CheckResult:
        return self.host.check(self.urn, self.inputs or None, news)

    def up(self, news: dict[str, Any]) -> DiffResult | None:
        """One step of `pulumi up` for this resource: Check, then Create, or Diff and Update when it changed.
        Replaces are not carried out here (the caller asserts them). Returns the diff (None on create)."""
        checked = self.check(news)
        if checked.failures:
            raise AssertionError(f"check failed: {checked.failures}")
        if not self.id:
            self.id, self.outputs = self.host.create(self.urn, checked.inputs)
            self.inputs = checked.inputs
            return None
        diff = self.host.diff(self.urn, self.id, self.outputs, checked.inputs, self.inputs)
        if diff.changes == DIFF_SOME and not diff.replaces:
            self.outputs = self.host.update(self.urn, self.id, self.outputs, checked.inputs, self.inputs)
        if not diff.replaces:
            self.inputs = checked.inputs
        return diff

    def diff(self, news: dict[str, Any]) -> DiffResult:
        checked = self.check(news)
        return self.host.diff(self.urn, self.id, self.outputs, checked.inputs, self.inputs)

    def refresh(self) -> dict[str, Any]:
        self.id, self.outputs = self.host.read(self.urn, self.id, self.outputs, self.inputs)
        return self.outputs

    def destroy(self) -> None:
        self.host.delete(self.urn, self.id, self.outputs, self.inputs)
        self.id = ""

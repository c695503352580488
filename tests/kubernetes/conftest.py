"""Fixtures of the kubernetes target's tests: stacks from YAML text, and the Pulumi mocks (pulumi-testing.md §1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest
from pulumi.runtime import MockResourceArgs, Mocks, set_mocks
from pulumi.runtime.mocks import MockMonitor

from inferstack.spec import StackFile, default_inventory, load_text, validate_stack
from inferstack.testing import InlineExecutor


@pytest.fixture
def stack_of() -> Callable[[str | dict], StackFile]:
    """YAML text or stack data → a valid StackFile (the test fails with the findings if it is not valid)."""

    def load(source: str | dict) -> StackFile:
        if isinstance(source, str):
            loaded = load_text(source, "<test>", default_inventory())
        else:
            loaded = validate_stack(source, "<test>", default_inventory())
        assert loaded.stack is not None and loaded.report.ok, str(loaded.report)
        return loaded.stack

    return load


# --- Pulumi mocks ----------------------------------------------------------------------------------------------

@dataclass
class Registration:
    typ: str
    name: str
    inputs: dict[str, Any]
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)


class RecordingMocks(Mocks):
    """Records every registered resource: type, logical name, inputs (engine-style: camelCase, floats)."""

    def __init__(self) -> None:
        self.resources: dict[str, Registration] = {}

    def new_resource(self, args: MockResourceArgs):
        self.resources.setdefault(args.name, Registration(args.typ, args.name, args.inputs)).inputs = args.inputs
        return f"{args.name}-id", args.inputs

    def call(self, args):
        return {}


class RecordingMonitor(MockMonitor):
    """Also records each registration's parent URN, dependencies and ignored changes, which `Mocks.new_resource` does
    not see."""

    def RegisterResource(self, request):
        reg = self.mocks.resources.setdefault(request.name, Registration(request.type, request.name, {}))
        reg.parent, reg.dependencies = request.parent, list(request.dependencies)
        reg.ignore_changes = list(request.ignoreChanges)
        return super().RegisterResource(request)


@pytest.fixture
def pulumi_mocks():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.set_default_executor(InlineExecutor())
    pulumi.runtime.settings.ROOT.set(None)  # the root stack is bound to the previous loop
    pulumi.runtime.set_all_config({}, [])
    mocks = RecordingMocks()
    set_mocks(mocks, project="inferstack", stack="test", preview=False, monitor=RecordingMonitor(mocks))
    yield mocks
    asyncio.set_event_loop(None)
    loop.close()

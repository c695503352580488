"""Fixtures of the Pulumi layer's tests (helpers live in `inferstack_mocks.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from engine import stop_process
from inferstack_mocks import Platform, PulumiTest, mock_session, platform_available


@pytest.fixture
def pulumi_test() -> Iterator[PulumiTest]:
    with mock_session() as session:
        yield session


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    missing = platform_available()
    if missing:
        pytest.skip(missing)
    data_dir = tmp_path_factory.mktemp("platform")
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "inferstack", "platform", "serve", "--data-dir", str(data_dir), "--port", "0"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        info = data_dir / "platform.json"
        while not (info.exists() and (data_dir / "token").exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the platform did not start:\n" + (data_dir / "serve.log").read_text())
            time.sleep(0.05)
        time.sleep(0.05)
        url = json.loads(info.read_text())["url"]
        token = (data_dir / "token").read_text().strip()
        yield Platform(data_dir, process, url, token)
    finally:
        stop_process(process)
        log.close()

"""The platform process and its data dir: default inventory once, token once, one server per data dir."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from platform_harness import PlatformProcess

from inferstack.platform.server import PlatformProcessError, serve
from inferstack.targets.local.client import PlatformClient, PlatformError, PlatformUnreachable


def test_the_default_inventory_is_created_only_in_a_new_data_dir_and_edits_survive_restarts(
        fresh_platform: PlatformProcess) -> None:
    assert fresh_platform.info["new_data_dir"] is True
    with fresh_platform.client() as client:
        zones = {q["spec"]["zone"] for q in client.list_inventory("queues")}
        billing = {q["spec"]["billing"] for q in client.list_inventory("queues")}
        specs = client.list_inventory("compute-specs")
        assert zones == {"zone-a", "zone-b"} and billing == {"prepaid", "postpaid"}
        assert {s["spec"].get("gpu_count", 0) > 0 for s in specs} == {True, False}
        assert client.get_inventory("images", "inferstack/echo")["metadata"]["name"] == "inferstack/echo"
        queue = client.get_inventory("queues", "q-prepaid-b")["spec"]
        client.put_inventory("queues", "q-prepaid-b", {**queue, "capacity": {"cpu-small": 3}})
        client.delete_inventory("security-groups", "sg-loopback")
        token = fresh_platform.token
    fresh_platform.restart()
    assert fresh_platform.info["new_data_dir"] is False
    assert fresh_platform.token == token
    with fresh_platform.client() as client:
        assert client.get_inventory("queues", "q-prepaid-b")["spec"]["capacity"] == {"cpu-small": 3}
        with pytest.raises(PlatformError) as err:
            client.get_inventory("security-groups", "sg-loopback")
        assert err.value.status_code == 404


def test_the_token_is_generated_once_with_mode_0600(fresh_platform: PlatformProcess) -> None:
    path = fresh_platform.data_dir / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(fresh_platform.token) >= 32


def test_a_second_server_on_the_same_data_dir_is_refused(fresh_platform: PlatformProcess) -> None:
    with pytest.raises(PlatformProcessError, match="already runs"):
        serve(fresh_platform.data_dir)
    second = subprocess.run([sys.executable, "-m", "inferstack.platform.server", "--data-dir",
                             str(fresh_platform.data_dir)], capture_output=True, text=True, timeout=20,
                            check=False)
    assert second.returncode == 1 and "already runs" in second.stderr


def test_discover_finds_the_platform_from_its_data_dir_or_says_none_runs(
        fresh_platform: PlatformProcess, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("INFERSTACK_URL", raising=False)
    monkeypatch.delenv("INFERSTACK_TOKEN", raising=False)
    with PlatformClient.discover(fresh_platform.data_dir) as client:
        assert client.url == fresh_platform.url
        assert client.list_services() == []
    monkeypatch.setenv("INFERSTACK_DATA_DIR", str(fresh_platform.data_dir))
    with PlatformClient.discover() as client:
        assert client.list_services() == []
    with pytest.raises(PlatformUnreachable, match="no platform is running"):
        PlatformClient.discover(tmp_path / "empty")
    monkeypatch.setenv("INFERSTACK_URL", fresh_platform.url)
    monkeypatch.setenv("INFERSTACK_TOKEN", "wrong")
    with PlatformClient.discover(tmp_path / "empty") as client, pytest.raises(PlatformError) as err:
        client.list_services()
    assert err.value.status_code == 401
    fresh_platform.stop()
    assert not (fresh_platform.data_dir / "platform.json").exists()
    monkeypatch.delenv("INFERSTACK_URL")
    with pytest.raises(PlatformUnreachable):
        PlatformClient.discover(fresh_platform.data_dir)


def test_wait_names_the_last_conditions_when_time_runs_out(fresh_platform: PlatformProcess) -> None:
    with fresh_platform.client() as client:
        client.put_service("slow", {"name": "slow", "resource_group": "rg-default", "vpc": "vpc-default"})
        with pytest.raises(PlatformError, match=r"not ready after 0.2s: Ready=False \(Pending"):
            client.wait("slow", timeout=0.2)
        assert client.wait("slow", timeout=1, until=lambda obj: obj["metadata"]["generation"] == 1)

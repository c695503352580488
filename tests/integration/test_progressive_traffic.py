"""Acceptance: a weight change under a progressive policy, on real processes (platform, gateway, echo instances) with
a load generator — a canary answering 500 for 20 % of its requests is stopped at the first step and rolled back, a
healthy one is promoted step by step; `inferstack apply` waits for the outcome and says the gate that failed."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest
from embedded_harness import Load, start_platform, wait_ready
from embedded_harness import gateway as reveal_gateway
from release_harness import BAD_CANARY, cli, release_events, shift_stack, wait_release, write_stack

POLICY = {"steps": [10, 50, 100], "bake_time_s": 0.5, "gates": {"max_error_rate": 1, "min_requests": 20}}
HEADER_RULE = {"header_rules": [{"header": "x-canary", "value": "1", "deployment": "canary"}]}
_GATEWAYS: dict[str, tuple[str, dict[str, str]]] = {}


def gateway(client, service: str) -> tuple[str, dict[str, str]]:
    """The service's gateway URL and key (a key is shown once: kept for the module's tests)."""
    if service not in _GATEWAYS:
        _GATEWAYS[service] = reveal_gateway(client, service)
    return _GATEWAYS[service]


def bad_stack(weights: tuple[float, float]) -> dict:
    stack = shift_stack("bad", weights, POLICY, [BAD_CANARY])
    stack["services"][0]["traffic"].update(HEADER_RULE)
    return stack


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("progressive-traffic"))
    yield p
    p.stop()


def test_a_canary_failing_20_percent_is_stopped_at_the_first_step_and_rolled_back(platform, tmp_path):
    client = platform.client()
    client.apply(bad_stack((100, 0)))
    wait_ready(client, "bad")
    url, headers = gateway(client, "bad")
    shifted = write_stack(tmp_path / "bad.yaml", bad_stack((0, 100)))
    with Load(url, headers) as one, Load(url, headers) as two:
        time.sleep(0.3)
        applied = cli(platform.data_dir, "apply", str(shifted), "--timeout", "30")
        rolled_back_by = time.monotonic()
        time.sleep(1.0)

    # The user sees the gate and its reading, and exit 3 (written, not Ready).
    assert applied.returncode == 3, applied.stdout + applied.stderr
    assert "ReleaseRolledBack" in applied.stderr and "step 1 of 3 (10 %)" in applied.stderr
    assert "canary: error rate" in applied.stderr and "> 1 %" in applied.stderr
    assert "release RolledBack, step 1 of 3 (10 %)" in applied.stdout  # followed as it happened

    traffic = client.get_traffic("bad")
    release = traffic["status"]["release"]
    assert release["phase"] == "RolledBack" and release["step"] == 1 and release["failed_gate"] == "max_error_rate"
    assert [h["outcome"] for h in release["history"]] == ["failed"]  # it never went past the first step
    canary = next(r for r in release["readings"] if r["side"] == "canary")
    assert canary["requests"] >= 20 and canary["error_rate"] > 1
    assert traffic["spec"]["weights"] == {"stable": 0, "canary": 100}  # the declared weights stay as declared
    assert traffic["status"]["live_weights"] == {"stable": 100, "canary": 0}
    conditions = {c["type"]: c for c in traffic["status"]["conditions"]}
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == ("True", "ReleaseRolledBack")
    assert [e["reason"] for e in release_events(client, "bad")] == ["ReleaseStarted", "ReleaseStep",
                                                                      "ReleaseRolledBack"]

    # The stable deployment served the rest: every failure was a canary's, and after the rollback only stable answers.
    outcomes = one.outcomes + two.outcomes
    failed = Counter(dep for _, status, dep in outcomes if status != 200)
    assert set(failed) <= {"canary"} and 0 < failed["canary"]
    later = Counter((status, dep) for at, status, dep in outcomes if at > rolled_back_by + 0.2)
    assert later and set(later) == {(200, "stable")}, later
    canary_share = sum(1 for _, _, dep in outcomes if dep == "canary") / len(outcomes)
    assert canary_share < 0.1  # only step 1 (10 %) ever reached the canary


def test_the_same_spec_again_does_not_retry_and_says_so_until_a_retry_is_asked(platform, tmp_path):
    client = platform.client()
    shifted = write_stack(tmp_path / "bad.yaml", bad_stack((0, 100)))
    plan = cli(platform.data_dir, "plan", str(shifted))
    assert plan.returncode == 0 and "No changes." in plan.stdout
    assert "the release of generation" in plan.stdout and "rolled back at step 1 of 3 (10 %)" in plan.stdout
    assert "live weights" in plan.stdout and "does not retry" in plan.stdout

    again = cli(platform.data_dir, "apply", str(shifted), "--timeout", "10")
    assert again.returncode == 3 and "does not retry it" in again.stderr and "ReleaseRolledBack" in again.stderr
    assert len(release_events(client, "bad")) == 3  # nothing started again

    url, headers = gateway(client, "bad")
    with Load(url, headers):
        retried = cli(platform.data_dir, "apply", str(shifted), "--retry-release", "--timeout", "30")
    assert retried.returncode == 3 and "retrying the release of bad/traffic" in retried.stderr
    reasons = [e["reason"] for e in release_events(client, "bad")]
    assert reasons[3:] == ["ReleaseRetried", "ReleaseStarted", "ReleaseStep", "ReleaseRolledBack"]
    assert client.get_traffic("bad")["status"]["release"]["attempt"][2] == 1  # the retry asked, counted


def test_a_healthy_canary_is_promoted_step_by_step_without_a_failed_request(platform, tmp_path):
    client = platform.client()
    client.apply(shift_stack("good", (100, 0), POLICY))
    wait_ready(client, "good")
    url, headers = gateway(client, "good")
    shifted = write_stack(tmp_path / "good.yaml", shift_stack("good", (0, 100), POLICY))
    with Load(url, headers) as one, Load(url, headers) as two:
        started = time.monotonic()
        applied = cli(platform.data_dir, "apply", str(shifted), "--timeout", "30")
        took = time.monotonic() - started
        time.sleep(0.5)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    traffic = wait_release(client, "good", ("Succeeded",))
    release = traffic["status"]["release"]
    assert [h["outcome"] for h in release["history"]] == ["passed"] * 3
    assert traffic["status"]["live_weights"] == {"stable": 0, "canary": 100}
    assert [e["reason"] for e in release_events(client, "good")] == [
        "ReleaseStarted", "ReleaseStep", "ReleaseStepPassed", "ReleaseStep", "ReleaseStepPassed", "ReleaseStep",
        "ReleaseSucceeded"]
    assert took >= 3 * POLICY["bake_time_s"]  # every step baked its time
    assert one.failed == two.failed == 0, (one.errors + two.errors)[:3]
    after = [dep for at, _, dep in one.outcomes + two.outcomes if at > started + took + 0.2]
    assert after and set(after) == {"canary"}
    conditions = {c["type"]: c["status"] for c in traffic["status"]["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Degraded"] == "False"


def test_direct_calls_and_header_rules_are_unaffected_by_a_shift(platform):
    client = platform.client()
    url, headers = gateway(client, "bad")  # rolled back: live 100/0, declared 0/100
    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        direct = [http.post("/v1/predict", json={"input": "x"}, headers={"X-Inferstack-Deployment": "canary"})
                  for _ in range(10)]
        ruled = [http.post("/v1/predict", json={"input": "x"}, headers={"x-canary": "1"}) for _ in range(10)]
        split = [http.post("/v1/predict", json={"input": "x"}) for _ in range(10)]
    assert {r.headers["x-inferstack-deployment"] for r in direct + ruled} == {"canary"}
    assert {r.headers["x-inferstack-deployment"] for r in split} == {"stable"}


def test_status_shows_the_declared_and_the_live_weights_and_why(platform):
    from typer.testing import CliRunner

    from inferstack.cli import app

    shown = CliRunner().invoke(app, ["status", "bad"], env={"INFERSTACK_DATA_DIR": str(platform.data_dir),
                                                            "INFERSTACK_URL": None, "COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "0, live 100" in shown.stdout and "100, live 0" in shown.stdout  # stable, canary: declared, live
    assert "traffic: release RolledBack, step 1 of 3 (10 %): weights canary 0, stable 100" in shown.stdout
    assert "canary: error rate" in shown.stdout


def test_a_shift_toward_a_deployment_redeployed_in_the_same_apply_waits_for_its_new_revision(platform, tmp_path):
    """One apply changes the canary (its old revision answers 500 to everything; the new one is healthy but takes a
    second to listen) and shifts the weights to it: step 1 is routed only once the new revision serves alone, so no
    request ever reaches the old one and the shift judges the revision that was declared."""
    client = platform.client()
    broken_old = [{"name": "ECHO_FAILURE_RATE", "value": "1"}]
    client.apply(shift_stack("renewed", (100, 0), POLICY, broken_old))
    wait_ready(client, "renewed")
    url, headers = gateway(client, "renewed")
    slow_start = [{"name": "ECHO_STARTUP_DELAY_S", "value": "1"}]
    shifted = write_stack(tmp_path / "renewed.yaml", shift_stack("renewed", (0, 100), POLICY, slow_start))
    with Load(url, headers) as one, Load(url, headers) as two:
        applied = cli(platform.data_dir, "apply", str(shifted), "--timeout", "30")
        time.sleep(0.3)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    traffic = wait_release(client, "renewed", ("Succeeded",))
    assert traffic["status"]["live_weights"] == {"stable": 0, "canary": 100}
    assert one.failed == two.failed == 0, (one.errors + two.errors)[:3]
    assert {dep for _, _, dep in one.outcomes + two.outcomes} == {"stable", "canary"}

    # Step 1 came after the new revision turned ready and the old one was scaled down (withdrawn from routing).
    events = [(e["object"].rsplit("/", 1)[-1], e["reason"], e["message"])
              for e in client.events("renewed") if e.get("action") == "event"]
    started = events.index(next(e for e in events if e[1] == "ReleaseStarted"))
    first_step = events.index(next(e for e in events if e[1] == "ReleaseStep"))
    new_ready = max(i for i, e in enumerate(events) if e[:2] == ("canary", "Ready"))
    old_gone = next(i for i, e in enumerate(events) if e[:2] == ("canary", "ScalingReplicaSet") and i > started
                    and e[2].startswith("scaled down"))
    assert started < new_ready < first_step and started < old_gone < first_step, events[started:first_step + 1]


def test_a_shift_toward_a_deployment_whose_new_revision_crash_loops_fails_before_routing_it(platform, tmp_path):
    client = platform.client()
    client.apply(shift_stack("doomed", (100, 0), POLICY))
    wait_ready(client, "doomed")
    crashing = [{"name": "ECHO_EXIT_AT_START", "value": "1"}]
    shifted = write_stack(tmp_path / "doomed.yaml", shift_stack("doomed", (0, 100), POLICY, crashing))
    applied = cli(platform.data_dir, "apply", str(shifted), "--timeout", "30")
    assert applied.returncode == 3, applied.stdout + applied.stderr
    traffic = wait_release(client, "doomed", ("RolledBack",))
    release = traffic["status"]["release"]
    assert release["step"] == 0 and release["failed_gate"] == "rollout"
    assert "canary: its rollout failed before the shift began: CrashLoopBackOff" in release["reason"]
    assert traffic["status"]["live_weights"] == {"stable": 100, "canary": 0}
    assert [e["reason"] for e in release_events(client, "doomed")] == ["ReleaseStarted", "ReleaseRolledBack"]

"""The providers' own logic without a platform: configuration, check failures, diff answers, weight shifts, the wait
for convergence."""

from __future__ import annotations

import base64
import pickle

import dill
import pytest
from pulumi.output import Unknown

from inferstack.plan import diff_object
from inferstack.targets.local import providers
from inferstack.targets.local.convergence import ConvergenceError, wait_converged
from inferstack.targets.local.pulumi_glue import (
    DEPLOYMENT,
    SERVICE,
    TRAFFIC,
    diff_answer,
    inventory_kind,
    object_findings,
    weights_without,
)

STABLE = {"service_key": "chat", "name": "stable", "key": "stable", "image": {"preset": "inferstack/echo"},
          "queue": "q-prepaid-a", "compute_spec": "cpu-small", "replicas": 2.0,
          "rolling_update": {"max_unavailable": 25.0, "max_surge": 25.0}, "subnet": "subnet-a",
          "security_group": "sg-default", "env": [{"name": "TOKEN", "secret": "s3cr3t-value"}]}
TRAFFIC_90_10 = {"service_key": "chat", "strategy": "weighted", "weights": {"a": 90.0, "b": 10.0},
                 "deployment_keys": ["a", "b"], "deployment_uids": {"a": "u1", "b": "u2"}}


class Config:
    def __init__(self, values: dict[str, object]) -> None:
        self.values = values

    def get(self, key: str) -> object:
        return self.values.get(key)


def test_configuration_lives_outside_the_provider_so_it_is_never_pickled():
    provider = providers.DeploymentProvider()
    provider.configure(type("Req", (), {"config": Config({
        "inferstack:platformUrl": "http://127.0.0.1:1", "inferstack:platformToken": "tok-123",
        "inferstack:waitForReady": "false", "inferstack:readyTimeout": "42"})})())
    assert provider.connection.url == "http://127.0.0.1:1" and provider.connection.token == "tok-123"
    assert provider.connection.wait_for_ready is False and provider.connection.timeout_s == 42.0
    assert vars(provider) == {}
    blob = dill.dumps(provider, protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
    assert b"tok-123" not in blob and b"127.0.0.1" not in blob
    assert "tok-123" not in repr(provider.connection)
    assert type(dill.loads(base64.b64decode(base64.b64encode(blob)))) is providers.DeploymentProvider


def test_wait_for_ready_defaults_to_true_and_reads_strings_and_booleans():
    def connection(value: object) -> providers.Connection:
        return providers.Connection.from_config(Config({"inferstack:waitForReady": value}).get)

    assert connection(None).wait_for_ready is True
    assert connection("false").wait_for_ready is False and connection(False).wait_for_ready is False
    assert connection("true").wait_for_ready is True


def test_check_failures_carry_the_property_path_and_the_rule_id_never_a_secret():
    provider = providers.DeploymentProvider()
    field = provider.check({}, {**STABLE, "env": [{"name": "1X", "secret": "s3cr3t-value"}]})
    rule = provider.check({}, {**STABLE, "env": [{"name": "T", "secret": "s3cr3t-value", "value": "v"}]})
    assert [(f.property, f.reason.rsplit(" [", 1)[1]) for f in field.failures + rule.failures] == [
        ("env[0].name", "env.name_format]"), ("env[0]", "env.value_exactly_one]")]
    assert all("s3cr3t-value" not in f.reason for f in field.failures + rule.failures)


def test_cross_object_rules_are_deferred_by_name():
    deferred = {f.rule for f in object_findings(DEPLOYMENT, STABLE) if f.severity.value == "deferred"}
    assert {"subnet.zone_matches_queue", "deployment.queue_exists", "capacity.prepaid_fits"} <= deferred
    assert not [f for f in object_findings(DEPLOYMENT, STABLE) if f.severity.value == "error"]


def test_traffic_check_uses_the_deployment_keys_it_is_given():
    found = object_findings(TRAFFIC, {**TRAFFIC_90_10, "weights": {"a": 90.0, "z": 10.0}})
    assert {(f.rule, f.path) for f in found if f.severity.value == "error"} == {
        ("traffic.weight_unknown_deployment", "weights.z")}
    unknown_keys = object_findings(TRAFFIC, {**TRAFFIC_90_10, "deployment_keys": Unknown()})
    assert [f.severity.value for f in unknown_keys] == ["deferred"]


def test_unknown_values_defer_their_rules_instead_of_failing():
    found = object_findings(DEPLOYMENT, {**STABLE, "replicas": Unknown(), "queue": Unknown()})
    assert not [f for f in found if f.severity.value == "error"]
    assert any(f.path == "replicas" and f.severity.value == "deferred" for f in found)


def test_diff_is_the_plans_answer_replace_only_where_the_plan_says():
    assert diff_answer(DEPLOYMENT, STABLE, dict(STABLE), diff_object).changes is False
    update = diff_answer(DEPLOYMENT, STABLE, {**STABLE, "replicas": 3.0}, diff_object)
    assert update.changes and update.replaces == () and not update.delete_before_replace
    service = {"name": "chat", "key": "chat", "resource_group": "rg-default", "vpc": "vpc-default",
               "ports": [8000.0]}
    for field in ("resource_group", "vpc"):
        answer = diff_answer(SERVICE, service, {**service, field: "other"}, diff_object)
        assert answer.replaces == (field,) and answer.delete_before_replace
    assert diff_answer(SERVICE, service, {**service, "description": "x"}, diff_object).replaces == ()


def test_numbers_defaults_and_weight_shares_do_not_diff():
    explicit = {**STABLE, "priority": 5.0, "graceful_shutdown_s": 30, "ports": {"listen": 8080.0, "call": []}}
    assert diff_answer(DEPLOYMENT, STABLE, explicit, diff_object).changes is False
    thirds = {**TRAFFIC_90_10, "weights": {"a": 33.33, "b": 33.33, "c": 33.34}, "deployment_keys": ["a", "b", "c"],
              "deployment_uids": {"a": "u1", "b": "u2", "c": "u3"}}
    equal = {**thirds, "weights": {"a": 1.0, "b": 1.0, "c": 1.0}}
    assert diff_answer(TRAFFIC, thirds, equal, diff_object).changes is False


def test_a_new_deployment_uid_changes_the_traffic_so_weights_are_written_again():
    answer = diff_answer(TRAFFIC, TRAFFIC_90_10, {**TRAFFIC_90_10, "deployment_uids": {"a": "u1", "b": "u9"}},
                         diff_object)
    assert answer.changes and answer.replaces == ()


def test_a_uid_not_known_at_preview_is_no_traffic_change_by_itself():
    # A preview does not know the uid of a deployment being updated; the update keeps it.
    news = {**TRAFFIC_90_10, "deployment_uids": {"a": Unknown(), "b": "u2"}}
    assert diff_answer(TRAFFIC, TRAFFIC_90_10, news, diff_object).changes is False
    added = {**TRAFFIC_90_10, "deployment_keys": ["a", "b", "c"], "deployment_uids": {"a": "u1", "b": "u2",
                                                                                     "c": Unknown()}}
    assert diff_answer(TRAFFIC, TRAFFIC_90_10, added, diff_object).changes is True


def test_unknown_identity_replaces_so_the_engine_can_cascade_a_delete_first_replace():
    answer = diff_answer(DEPLOYMENT, STABLE, {**STABLE, "service_key": Unknown()}, diff_object)
    assert answer.replaces == ("service_key",) and answer.delete_before_replace
    unknown_rg = diff_answer(SERVICE, {"name": "c", "key": "c", "resource_group": "r", "vpc": "v"},
                             {"name": "c", "key": "c", "resource_group": Unknown(), "vpc": "v"}, diff_object)
    assert unknown_rg.replaces == ("resource_group",)


def test_inventory_diff_and_identity():
    queues = inventory_kind("queues")
    queue = {"kind": "queues", "name": "q", "resource_group": "rg", "zone": "z", "billing": "prepaid",
             "capacity": {"cpu-small": 4.0}}
    assert diff_answer(queues, queue, {**queue, "capacity": {"cpu-small": 4}}, diff_object).changes is False
    assert diff_answer(queues, queue, {**queue, "zone": "y"}, diff_object).replaces == ()
    with pytest.raises(ValueError, match="unknown inventory kind"):
        inventory_kind("buckets")


@pytest.mark.parametrize(("weights", "key", "others", "expected"), [
    ({"a": 90, "b": 10}, "a", ["b"], {"b": 100.0}),
    ({"a": 50, "b": 30, "c": 20}, "a", ["b", "c"], {"b": 60.0, "c": 40.0}),
    ({"a": 100, "b": 0, "c": 0}, "a", ["b", "c"], {"b": 50.0, "c": 50.0}),
    ({"a": 33.33, "b": 33.33, "c": 33.34}, "c", ["a", "b"], {"a": 50.0, "b": 50.0}),
    ({"a": 100}, "a", [], {}),
    ({"a": 90, "b": 10, "c": 0}, "a", ["b", "c"], {"b": 100.0}),  # zeros stay unnamed (absent is 0)
])
def test_weight_moves_to_the_others_in_proportion_summing_to_100(weights, key, others, expected):
    moved = weights_without(weights, key, others)
    assert moved == expected
    assert not moved or round(sum(moved.values()), 6) == 100


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def obj(generation: int, observed: int, **conditions: tuple[str, str]) -> dict:
    return {"metadata": {"generation": generation}, "status": {"observed_generation": observed, "conditions": [
        {"type": t, "status": s, "reason": r} for t, (s, r) in conditions.items()]}}


def test_wait_returns_once_the_generation_is_observed_and_ready():
    states = iter([obj(2, 1, Ready=("True", "Ok")), obj(2, 2, Ready=("False", "Rolling")),
                   obj(2, 2, Ready=("True", "AllReady"))])
    clock = Clock()
    got = wait_converged(lambda: next(states), "deployment 'chat/a'", timeout=10, require_ready=True,
                         clock=clock, sleep=clock.sleep)
    assert got["status"]["conditions"][0]["reason"] == "AllReady"


def test_wait_fails_at_once_when_the_current_generation_is_degraded():
    clock = Clock()
    with pytest.raises(ConvergenceError, match=r"degraded: .*Degraded=True \(CrashLoop\)"):
        wait_converged(lambda: obj(3, 3, Ready=("False", "Rolling"), Degraded=("True", "CrashLoop")), "x",
                       timeout=10, require_ready=True, clock=clock, sleep=clock.sleep)
    assert clock.now == 0


def test_wait_times_out_naming_the_last_conditions():
    clock = Clock()
    with pytest.raises(ConvergenceError, match=r"not Ready after 5s: Ready=False \(Pending\)"):
        wait_converged(lambda: obj(1, 1, Ready=("False", "Pending")), "x", timeout=5, require_ready=True,
                       clock=clock, sleep=clock.sleep)


def test_the_pickled_provider_is_byte_identical_in_another_process():
    import subprocess
    import sys

    from pulumi.dynamic.dynamic import serialize_provider

    code = ("from pulumi.dynamic.dynamic import serialize_provider as s; from inferstack.targets.local import providers "
            "as p; print(s(p.DeploymentProvider())); print(s(p.InventoryProvider('queues')))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert other == [serialize_provider(providers.DeploymentProvider()),
                     serialize_provider(providers.InventoryProvider("queues"))]


# --- errors for humans --------------------------------------------------------------------------------------------

def test_a_platform_finding_path_is_said_about_the_users_own_object():
    from inferstack.targets.local.provider_errors import PlatformObject, paths_for_write

    # A deployment write of chat/canary: the platform validates it as services[0].deployments[0], then the others.
    obj = PlatformObject("deployment 'chat/canary'", "services/chat/deployments/canary",
                         paths_for_write("chat", "canary", ["stable", "canary", "shadow"]))
    assert obj.where("services[0].deployments[0].env[1].name") == "deployment 'chat/canary' env[1].name"
    assert obj.where("services[0].deployments[2].subnet") == "deployment 'chat/shadow' subnet"
    assert obj.where("services[0].traffic.weights") == "traffic of service 'chat' weights"
    assert obj.where("services[0].vpc") == "service 'chat' vpc"
    assert obj.where("elsewhere[3]") == "elsewhere[3]"


def test_the_servicer_reports_our_errors_as_their_message_and_others_with_their_traceback():
    import sys

    from engine import load_servicer_module

    from inferstack.targets.local.provider_errors import PlatformApplyError, install_plain_errors

    module = load_servicer_module()
    assert install_plain_errors(module) and install_plain_errors(module)  # idempotent
    try:
        raise PlatformApplyError("create service 'x': cannot reach the platform at http://127.0.0.1:1")
    except PlatformApplyError:
        assert module.traceback.format_exc() == "create service 'x': cannot reach the platform at http://127.0.0.1:1"
    try:
        raise KeyError("__provider")
    except KeyError:
        assert module.traceback.format_exc().startswith("Traceback (most recent call last)")
    assert not install_plain_errors(type(sys)("elsewhere"))  # anywhere else: nothing is touched


@pytest.mark.parametrize(("value", "paths"), [
    (None, set()),
    ('["services/chat", "/v1/queues/q-a"]', {"services/chat", "queues/q-a"}),
    ("services/chat, services/chat/deployments/canary", {"services/chat", "services/chat/deployments/canary"}),
    ('"services/chat"', {"services/chat"}),
    ('{"not": "a list"}', set()),
])
def test_inferstack_adopt_reads_a_list_or_a_string_of_api_paths(value, paths):
    from inferstack.targets.local.provider_errors import adopted_paths

    assert adopted_paths(value) == paths


def test_a_live_object_this_version_cannot_read_falls_back_to_the_last_state(monkeypatch, capsys):
    provider = providers.DeploymentProvider()
    monkeypatch.setattr(provider, "live_for_diff", lambda obj, ids: {"spec": {**STABLE, "replicas": "many"}})
    assert provider.diff("chat/stable", STABLE, dict(STABLE)).changes is False
    assert provider.diff("chat/stable", STABLE, {**STABLE, "replicas": 3.0}).changes is True
    assert "does not read as this version's spec" in capsys.readouterr().err

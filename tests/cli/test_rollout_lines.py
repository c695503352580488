"""The progress lines of `apply`, rendered from whatever a deployment's status carries (pure: no platform)."""

from __future__ import annotations

from inferstack.cli.rollout import _changes, _Seen, deployment_summary, failure, instance_states


def deployment(generation: int = 2, observed: int = 2, conditions: list | None = None, **role) -> dict:
    return {"metadata": {"key": "canary", "generation": generation},
            "status": {"observed_generation": observed, "conditions": conditions or [], "roles": {"main": role}}}


def test_every_condition_and_count_is_in_the_line_with_the_reason_of_what_is_wrong():
    dep = deployment(desired=2, ready=1, updated=1, conditions=[
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "1 of 2"},
        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "rolling"},
        {"type": "Ready", "status": "False", "reason": "RollingUpdate", "message": "main: 1/2 ready"}],
        instances=[{"id": "c-1", "phase": "running", "ready": True, "restarts": 0, "pid": 11, "port": 4001},
                   {"id": "c-2", "phase": "backoff", "ready": False, "restarts": 2, "pid": None, "port": 4002}])
    assert deployment_summary(dep) == (
        "generation 2/2; 1/2 ready, 1 updated, 2 restarts, 1 backoff; Available=True (MinimumReplicasAvailable), "
        "Progressing=True (ReplicaSetUpdated), Ready=False (RollingUpdate): main: 1/2 ready")


def test_fields_the_platform_adds_later_show_up_without_a_change_here():
    dep = deployment(desired=1, ready=0, restarts=5, crash_looping=1, instances=[
        {"id": "c-1", "phase": "CrashLoopBackOff", "restarts": 5, "exit_code": 3, "reason": "Error",
         "message": "exited with code 3\nTraceback ...", "last_lines": ["a", "b"], "start_time": 123}],
        conditions=[{"type": "Degraded", "status": "True", "reason": "CrashLoop", "message": "exits with code 3"}])
    assert deployment_summary(dep) == ("generation 2/2; 0/1 ready, crash looping 1, 5 restarts, 1 CrashLoopBackOff; "
                                       "Degraded=True (CrashLoop): exits with code 3")
    assert instance_states(dep) == {"c-1": "CrashLoopBackOff, 5 restarts, exit code 3, reason Error: exited with "
                                           "code 3 Traceback ..."}
    assert failure(dep) == "CrashLoop: exits with code 3"


def test_a_failure_of_an_older_generation_is_not_this_rollouts():
    stale = deployment(generation=3, observed=2, conditions=[{"type": "Degraded", "status": "True",
                                                              "reason": "RolloutStuck"}])
    assert failure(stale) is None
    deadline = deployment(conditions=[{"type": "Progressing", "status": "False",
                                       "reason": "ProgressDeadlineExceeded", "message": "no progress for 120s"}])
    assert failure(deadline) == "ProgressDeadlineExceeded: no progress for 120s"


def test_one_line_per_change_and_none_while_nothing_changes():
    seen = _Seen()
    first = deployment(desired=1, ready=0, instances=[{"id": "c-1", "phase": "starting", "restarts": 0}])
    assert list(_changes("chat/canary", first, seen, first=True)) == [("chat/canary: generation 2/2; 0/1 ready, "
                                                                      "1 starting")]
    assert list(_changes("chat/canary", first, seen, first=False)) == []
    restarted = deployment(desired=1, ready=0, instances=[{"id": "c-1", "phase": "running", "restarts": 1,
                                                           "pid": 99}])
    assert list(_changes("chat/canary", restarted, seen, first=False)) == [
        "chat/canary: generation 2/2; 0/1 ready, 1 restart", "chat/canary c-1: running, 1 restart"]
    gone = deployment(desired=0, ready=0, instances=[])
    assert list(_changes("chat/canary", gone, seen, first=False))[-1] == "chat/canary c-1: gone"

"""A refused write changes no row in any table: rules, capacity, auth, bad JSON, stale versions, traffic in use."""

from __future__ import annotations

from platform_harness import PlatformProcess, deployment, service


def test_refused_writes_change_no_row_in_any_table(fresh_platform: PlatformProcess) -> None:
    with fresh_platform.client() as client:
        client.put_service("keep", service("keep"))
        client.put_deployment("keep", "stable", deployment("stable"))
        client.put_deployment("keep", "canary", deployment("canary"))
        client.put_traffic("keep", {"weights": {"stable": 90, "canary": 10}})
    version = fresh_platform.dump()
    good, anonymous, wrong = fresh_platform.http(), fresh_platform.http(token=None), fresh_platform.http("nope")
    big = deployment("big", queue="q-prepaid-a", compute_spec="gpu-a10x4", replicas=2)
    refusals = [
        # rules
        (good, "PUT", "/v1/services/keep/deployments/bad", deployment("bad", subnet="subnet-b"), 422),
        (good, "PUT", "/v1/services/keep/deployments/bad", deployment("bad", weight=5), 422),
        (good, "PUT", "/v1/services/keep/traffic", {"weights": {"stable": 10, "canary": 10}}, 422),
        (good, "PUT", "/v1/services/keep", {**service("keep"), "replicas": 2}, 422),
        (good, "PUT", "/v1/services/new", service("new", vpc="vpc-missing"), 422),
        (good, "PUT", "/v1/queues/q-postpaid-a", {"resource_group": "rg-default", "zone": "zone-a",
                                                  "billing": "postpaid", "capacity": {"cpu-large": 2}}, 422),
        (good, "DELETE", "/v1/subnets/subnet-a", None, 422),
        (good, "POST", "/v1/apply", {"services": [{**service("s1"), "deployments": [deployment("x", queue="q")]}]},
         422),
        (good, "PUT", "/v1/services/keep", [1, 2], 422),
        # capacity
        (good, "PUT", "/v1/services/keep/deployments/big", big, 422),
        # auth
        (anonymous, "PUT", "/v1/services/other", service("other"), 401),
        (wrong, "DELETE", "/v1/services/keep", None, 401),
        (anonymous, "POST", "/v1/apply", {"services": [service("other")]}, 401),
        # bad JSON
        (good, "PUT", "/v1/services/other", b"{not json", 400),
        (good, "POST", "/v1/apply", b"", 400),
        # stale version, traffic still pointing at a deployment
        (good, "PUT", "/v1/services/keep", service("keep", description="x"), 409),
        (good, "DELETE", "/v1/services/keep/deployments/canary", None, 409),
        # dry runs
        (good, "PUT", "/v1/services/keep?dry_run=true", service("keep", description="dry"), 200),
        (good, "POST", "/v1/apply?dry_run=true", {"services": [service("dry")]}, 200),
        (good, "DELETE", "/v1/services/keep?dry_run=true", None, 200),
    ]
    for http, method, path, body, expected in refusals:
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
        headers = {"If-Match": "1"} if expected == 409 and method == "PUT" else {}
        if isinstance(body, bytes):
            headers["Content-Type"] = "application/json"
        response = http.request(method, path, headers=headers, **kwargs)
        assert response.status_code == expected, (method, path, response.text)
        assert fresh_platform.dump() == version, (method, path)
    for http in (good, anonymous, wrong):
        http.close()

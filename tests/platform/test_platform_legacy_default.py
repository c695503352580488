"""The legacy `Default` rule on the platform: the first added deployment or the first edit of `Default`, whichever
comes first, redeploys `Default` exactly once; afterwards `Default` follows the usual update rules.

`status.redeploy_generation` is the generation the platform asked the runtime to roll out again even where the
template is unchanged; it moves only with the conversion."""

from __future__ import annotations

from platform_harness import deployment, service

from inferstack.targets.local.client import PlatformClient


def _flat(key: str) -> dict:
    return {"services": [{**service(key), **{k: v for k, v in deployment("ignored").items() if k != "name"}}]}


def _redeployed_at(client: PlatformClient, key: str) -> int | None:
    return client.get_deployment(key, "default")["status"].get("redeploy_generation")


def _default_spec(client: PlatformClient, key: str, **changes: object) -> dict:
    return {**client.get_deployment(key, "default")["spec"], **changes}


def test_a_first_edit_of_default_converts_and_redeploys_it_once_then_the_usual_rules(client: PlatformClient) -> None:
    client.apply(_flat("edited"))
    assert client.get_service("edited")["status"]["converted"] is False

    dry = client.put_deployment("edited", "default", _default_spec(client, "edited", replicas=2), dry_run=True)
    assert "redeploys Default (legacy conversion: first edit of Default)" in dry["plan_text"]
    client.put_deployment("edited", "default", _default_spec(client, "edited", replicas=2))
    assert client.get_service("edited")["status"]["converted"] is True
    assert _redeployed_at(client, "edited") == 2  # a replicas edit, yet the conversion redeploys Default
    assert ("services/edited", "convert") in [(e["object"], e["action"]) for e in client.events("edited")]

    client.put_deployment("edited", "canary", deployment("canary"))  # the first added deployment: already converted
    assert client.get_deployment("edited", "default")["metadata"]["generation"] == 2
    client.put_deployment("edited", "default", _default_spec(client, "edited", replicas=3))
    assert client.get_deployment("edited", "default")["metadata"]["generation"] == 3
    assert _redeployed_at(client, "edited") == 2  # replicas only, after the conversion: instances are kept
    dry = client.put_deployment("edited", "default", _default_spec(client, "edited", replicas=4), dry_run=True)
    assert "legacy conversion" not in dry["plan_text"] and "no redeploy" in dry["plan_text"]


def test_after_a_conversion_by_an_added_deployment_edits_of_default_follow_the_usual_rules(
        client: PlatformClient) -> None:
    client.apply(_flat("added"))
    client.put_deployment("added", "canary", deployment("canary"))
    assert _redeployed_at(client, "added") == 2
    client.put_deployment("added", "default", _default_spec(client, "added", replicas=2))
    assert client.get_deployment("added", "default")["metadata"]["generation"] == 3
    assert _redeployed_at(client, "added") == 2  # not again
    converts = [e for e in client.events("added") if e["action"] == "convert"]
    assert len(converts) == 1

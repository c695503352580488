"""The legacy (flat) form's one extra rule: its conversion redeploys `Default` exactly once.

A legacy service is one written in the flat single-deployment form (`legacy_form`), or one whose only deployment is
`default` / `Default` (the list form it may be switched to, which changes nothing by itself). It is *converted* by
the first change that adds a deployment or edits `Default` — whichever comes first. That change redeploys `Default`
once, even where the usual rules would keep its instances (a replicas-only edit, a new sibling); the platform then
records the service as converted, and from there on `Default` follows the usual update rules like any deployment
(第一次执行新增部署或者更新、编辑 Default 部署都会触发 Default 部署重新部署).

Pure: the platform (which knows whether a service was converted), the offline plan (which assumes not yet, for a
service in the legacy shape) and the Pulumi providers (which read the platform's view) all decide it here."""

from __future__ import annotations

from collections.abc import Sequence

from inferstack.spec import DEFAULT_KEY, DEFAULT_NAME

REASON = "legacy conversion"
"""How plans and previews name the redeploy: `redeploys Default (legacy conversion: ...)`."""


def legacy_shape(legacy_form: bool, deployments: Sequence[tuple[str, str]]) -> bool:
    """Whether a service looks legacy: written flat, or holding only `default` named `Default`.

    `deployments`: (key, name) of each of its deployments, in any order."""
    return bool(legacy_form) or [tuple(d) for d in deployments] == [(DEFAULT_KEY, DEFAULT_NAME)]


def conversion_trigger(old_keys: Sequence[str], new_keys: Sequence[str], default_edited: bool) -> str | None:
    """Why a change converts a legacy, not yet converted service — or None when it does not.

    `old_keys` / `new_keys`: its deployment keys before and after; `default_edited`: whether `Default`'s own spec
    changes. Only a service that keeps `Default` is converted by a change (without it nothing is redeployed)."""
    if DEFAULT_KEY not in old_keys or DEFAULT_KEY not in new_keys:
        return None
    added = [k for k in new_keys if k not in old_keys]
    if added:
        return f"first added deployment '{added[0]}'"
    if default_edited:
        return "first edit of Default"
    return None


def reason(trigger: str) -> str:
    """The redeploy reason of `Default` for a conversion `trigger`."""
    return f"{REASON}: {trigger}"

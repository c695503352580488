"""The traffic object (分流策略) as a Gateway API HTTPRoute (or a load balancer), and who may call it.

- **Which Gateway.** `private_gateway` services attach to `kubernetes.gateways.private`, the others (and `clb` with
  weights: a load balancer cannot weight) to `kubernetes.gateways.public`; either defaults to `kubernetes.gateway`.
  A private service on the shared default Gateway is warned loudly: everyone who reaches that Gateway reaches it.
- **Access.** Locally `public_gateway` and `clb` need the service's invocation key and `private_gateway` admits only
  the security groups' sources. The Gateway API has no standard field for either: the route carries annotations
  `inferstack.io/access` (`invocation-key` | `allowed-sources`) and `inferstack.io/allowed-sources` for a cluster
  policy (e.g. Envoy Gateway's SecurityPolicy `apiKeyAuth` / `authorization.rules[].principal.clientCIDRs`, Istio's
  AuthorizationPolicy) to act on, and the render warns per service that it must be configured. A `clb` load balancer
  enforces the sources itself (networking.py) but cannot check keys (warned).
- **Rules**, in the local precedence (direct-call header > header rules > weighted split): an HTTPRoute `<service-key>`
  matching path prefix `<path_prefix>/<service-key>` (stripped by a URLRewrite filter, so one Gateway serves many
  services); direct calls (`X-Inferstack-Deployment: <key>`, one rule per deployment), header rules, then the
  weighted split (`backendRefs` weights = shares × 10 000, deployments at weight 0 left out, or the per-instance
  Service with `by_instance_count`). All rules have one path match, direct-call and header rules one header match, so
  the Gateway API's precedence falls back to list order, which is the local one. An HTTPRoute holds at most 16
  rules: header rules past 15, then direct-call rules, are left out with a warning; so is a header rule that is no
  valid header match.
- **Mirror.** A `RequestMirror` filter on every rule whose requests do not already go to the mirror target (locally
  a request is never copied to the deployment that serves it; the weighted split cannot tell, warned when the target
  also has weight). The share is `percent` (or `fraction`) — fields of Gateway API v1.3: with an older
  `gateway_api_version` a mirror of less than 100 % is left out with a warning (the older CRD would drop the share
  and mirror everything).
- **Timeouts.** Locally `timeout_s` bounds the wait for the *start* of the response; a stream then runs as long as it
  moves. Gateway API's `timeouts.request` bounds the whole exchange, so it would cut long streamed completions: it is
  rendered as `0s` (no limit) unless `kubernetes.response_timeout_s` caps whole responses; `timeouts` needs v1.2.
- **Rule names** (`direct-<key>`, `header-<n>`, `default`) are a v1.4 field: rendered only from that version on.
- **Progressive.** A deployment's canary redeploy is Flagger's (flagger.py): its direct-call rule, and the default
  rule when it takes the whole weighted split, are left to the HTTPRoute Flagger manages. `traffic.progressive` has
  no Flagger equivalent: warned, the weights are rendered as declared.
- `consistent_hash` and `retries` have no standard-channel field: warned, not rendered. An unknown direct-call value
  falls through to the weighted split in Kubernetes (404 locally) and a weighted deployment without ready pods gets
  503 for its share (locally the others take it): README table; the latter warned for `use_idle` deployments."""

from __future__ import annotations

import re
from typing import Any

from ...spec import Service
from .context import LABEL_PREFIX, Context, metadata
from .flagger import canaried, takes_whole_split
from .names import object_name, workload_name
from .networking import allowed_sources, behind_load_balancer, call_ports, instance_share_service
from .units import duration, whole

DIRECT_CALL_HEADER = "X-Inferstack-Deployment"
MAX_ROUTE_RULES = 16
MAX_BACKEND_REFS = 16
GATEWAY_GROUP = "gateway.networking.k8s.io"
MIRROR_SHARE_MINOR = 3  # RequestMirror percent / fraction: standard since v1.3
RULE_NAME_MINOR = 4  # HTTPRouteRule name: standard since v1.4
TIMEOUTS_MINOR = 2  # HTTPRouteRule timeouts: standard since v1.2

_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$")


def traffic_objects(svc: Service, ctx: Context) -> list[dict[str, Any]]:
    t = svc.traffic
    where = str(svc.key)
    objects: list[dict[str, Any]] = []
    if t.strategy == "by_instance_count":
        objects.append(instance_share_service(svc, ctx))
        if behind_load_balancer(svc):
            dropped = [f for f in ("header_rules", "mirror", "consistent_hash", "timeout_s", "retries")
                       if f in t.model_fields_set and getattr(t, f)]
            if dropped:
                ctx.warn(where, f"not rendered with a clb load balancer (it routes connections, not requests): "
                                f"{', '.join(dropped)}; use a gateway network type for them")
            ctx.warn(where, "the clb load balancer cannot check the invocation key: anyone the security groups "
                            "admit (loadBalancerSourceRanges) reaches the instances; put an authenticating proxy "
                            "in front if callers must present the key")
            return objects
    elif svc.network_type == "clb":
        ctx.warn(where, f"clb with weighted traffic: a load balancer cannot weight, so traffic goes through Gateway "
                        f"'{ctx.gateway(svc).name}' (an HTTPRoute); expose that Gateway through your load balancer")
    _access_warnings(svc, ctx, where)
    if t.consistent_hash is not None:
        ctx.warn(where, f"consistent_hash on header '{t.consistent_hash.header}' has no Gateway API standard-channel "
                        f"field: not rendered (configure session persistence in your Gateway implementation)")
    if "retries" in t.model_fields_set:
        ctx.warn(where, f"retries ({t.retries}) have no Gateway API standard-channel field: not rendered")
    if t.progressive is not None:
        ctx.warn(where, "traffic.progressive (a gated shift between deployments) has no Flagger equivalent: the "
                        "HTTPRoute carries the declared weights at once; gate redeploys with `progressive` on a "
                        "deployment (a Flagger Canary), or shift the weights by hand")
    if "timeout_s" in t.model_fields_set:
        ctx.warn(where, f"timeout_s ({t.timeout_s:g} s) bounds the wait for the first response byte locally; the "
                        f"Gateway API can only bound whole responses (kubernetes.response_timeout_s): not rendered")
    if t.strategy == "weighted":
        idle = [d.key for d in svc.deployments if d.use_idle and t.weights.get(d.key or "", 0) > 0]
        if idle:
            ctx.warn(where, f"weighted deployment(s) {', '.join(map(str, idle))} use idle resources and may lose "
                            f"every pod to preemption: their share then gets 503 from the Gateway (locally the other "
                            f"deployments take it)")
    route = http_route(svc, ctx, where)
    if route["spec"]["rules"]:
        objects.append(route)
    else:  # one canaried deployment and nothing else to route: Flagger's HTTPRoute is the service's only one
        flagged = next(d for d in svc.deployments if canaried(d))
        name = workload_name(svc.key or "", flagged.key or "")
        ctx.warn(where, f"the service's only HTTPRoute is the one Flagger manages ('{name}'): apply your Gateway "
                        f"implementation's access policy to it")
    return objects


def _access_warnings(svc: Service, ctx: Context, where: str) -> None:
    gw = ctx.gateway(svc)
    if svc.network_type == "private_gateway":
        if not ctx.has_private_gateway():
            ctx.warn(where, f"PRIVATE service on the shared Gateway '{gw.name}': no kubernetes.gateways.private is "
                            f"configured, so everyone who reaches that Gateway reaches this service")
        sources = allowed_sources(svc, ctx)
        ctx.warn(where, f"private_gateway admits only {', '.join(sources) or 'no source'} locally; the Gateway API "
                        f"cannot check callers' addresses: enforce them with your Gateway implementation's policy "
                        f"(annotation {LABEL_PREFIX}allowed-sources on HTTPRoute '{object_name(svc.key or '')}')")
    else:
        ctx.warn(where, f"invocation keys are not checked by the Gateway API: configure your Gateway "
                        f"implementation's API-key policy for HTTPRoute '{object_name(svc.key or '')}' (annotation "
                        f"{LABEL_PREFIX}access: invocation-key), or anyone reaching Gateway '{gw.name}' calls it")


def http_route(svc: Service, ctx: Context, where: str) -> dict[str, Any]:
    t = svc.traffic
    port = call_ports(svc)[0]
    prefix = f"{ctx.options.path_prefix}/{svc.key}"
    minor = ctx.gateway_api_minor
    mirror_filter = _mirror_filter(svc, port, ctx, where)

    def backend(dep_key: str) -> dict[str, Any]:
        return {"name": workload_name(svc.key or "", dep_key), "port": port}

    def rule(name: str, refs: list[dict[str, Any]], header: tuple[str, str] | None = None,
             to: set[str] | None = None) -> dict[str, Any]:
        match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": prefix}}
        if header is not None:
            match["headers"] = [{"type": "Exact", "name": header[0], "value": header[1]}]
        filters: list[dict[str, Any]] = [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
        if mirror_filter is not None and t.mirror is not None and to != {t.mirror.deployment}:
            filters.append(mirror_filter)
        out: dict[str, Any] = {"name": name} if minor >= RULE_NAME_MINOR else {}
        out.update({"matches": [match], "filters": filters, "backendRefs": refs})
        if minor >= TIMEOUTS_MINOR:
            limit = ctx.options.response_timeout_s
            out["timeouts"] = {"request": duration(limit) if limit else "0s"}
        return out

    header_rules = []
    for i, hr in enumerate(t.header_rules):
        if not _HEADER_NAME_RE.match(hr.header) or not 1 <= len(hr.value) <= 4096:
            ctx.warn(where, f"header rule {i} ({hr.header!r}) is not a valid HTTPRoute header match "
                            f"(name an HTTP token, value 1-4096 characters): left out")
            continue
        header_rules.append(rule(f"header-{i}", [backend(hr.deployment)], (hr.header, hr.value), {hr.deployment}))
    if len(header_rules) > MAX_ROUTE_RULES - 1:
        ctx.warn(where, f"an HTTPRoute holds {MAX_ROUTE_RULES} rules: header rules past the first "
                        f"{MAX_ROUTE_RULES - 1} are left out")
        header_rules = header_rules[: MAX_ROUTE_RULES - 1]
    keys = svc.deployment_keys()
    room = MAX_ROUTE_RULES - 1 - len(header_rules)
    if len(keys) > room:
        ctx.warn(where, f"an HTTPRoute holds {MAX_ROUTE_RULES} rules: no direct-call rule ({DIRECT_CALL_HEADER}) for "
                        f"{', '.join(keys[room:])}")
    # A canaried deployment's direct calls (and, when it takes the whole split, the default) are Flagger's route's.
    flagged = {d.key for d in svc.deployments if canaried(d)}
    direct = [rule(object_name("direct", k), [backend(k)], (DIRECT_CALL_HEADER, k), {k}) for k in keys[:room]
              if k not in flagged]

    if t.strategy == "by_instance_count":
        default_refs = [{"name": object_name(svc.key or ""), "port": port}]
        default_to = {d.key for d in svc.deployments if d.accepts_traffic and d.key}
    else:
        total = sum(t.weights.get(k, 0.0) for k in keys) or 1.0
        weighted = [k for k in keys if t.weights.get(k, 0.0) > 0]
        if len(weighted) > MAX_BACKEND_REFS:
            ctx.warn(where, f"an HTTPRoute rule holds {MAX_BACKEND_REFS} backends: weighted deployments past the "
                            f"first {MAX_BACKEND_REFS} are left out")
            weighted = weighted[:MAX_BACKEND_REFS]
        default_refs = [{**backend(k), "weight": max(1, round(t.weights[k] / total * 10000))} for k in weighted]
        default_to = set(weighted)
    if mirror_filter is not None and t.mirror is not None and t.mirror.deployment in default_to \
            and default_to != {t.mirror.deployment}:
        ctx.warn(where, f"requests the split sends to '{t.mirror.deployment}' are also mirrored to it (the Gateway "
                        f"API mirrors per rule; locally a request is never copied to the deployment serving it)")
    gw = ctx.gateway(svc)
    parent = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gw.name}
    if gw.namespace:
        parent["namespace"] = gw.namespace
    meta = metadata(ctx, object_name(svc.key or ""), svc)
    if svc.network_type == "private_gateway":
        meta["annotations"] = {**meta["annotations"], f"{LABEL_PREFIX}access": "allowed-sources",
                               f"{LABEL_PREFIX}allowed-sources": ",".join(allowed_sources(svc, ctx))}
    else:
        meta["annotations"] = {**meta["annotations"], f"{LABEL_PREFIX}access": "invocation-key"}
    default = [] if any(takes_whole_split(svc, d) for d in svc.deployments if canaried(d)) else \
        [rule("default", default_refs, None, default_to)]
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "HTTPRoute", "metadata": meta,
            "spec": {"parentRefs": [parent], "rules": [*direct, *header_rules, *default]}}


def _mirror_filter(svc: Service, port: int, ctx: Context, where: str) -> dict[str, Any] | None:
    mirror = svc.traffic.mirror
    if mirror is None:
        return None
    target = {"name": workload_name(svc.key or "", mirror.deployment), "port": port}
    percent = whole(mirror.percent)
    if ctx.gateway_api_minor < MIRROR_SHARE_MINOR:
        if percent == 100:
            return {"type": "RequestMirror", "requestMirror": {"backendRef": target}}
        ctx.warn(where, f"mirroring {mirror.percent:g} % needs Gateway API v1.3 (gateway_api_version is "
                        f"{ctx.options.gateway_api_version}): not rendered, since an older HTTPRoute would mirror "
                        f"every request")
        return None
    share = ({"percent": percent} if percent is not None
             else {"fraction": {"numerator": max(1, round(mirror.percent * 1000)), "denominator": 100000}})
    return {"type": "RequestMirror", "requestMirror": {"backendRef": target, **share}}

"""How callers reach instances: the Services of a deployment, its roles and its per-instance share (a load balancer
with `clb`), and the NetworkPolicy that stands for the deployment's security group.

- **Services.** Every deployment has a ClusterIP Service `<service>-<deployment>` selecting its entry role: the
  service's call ports (named `http`, `http-<port>`) → the container port `http` (the listen port); the deployment's
  call ports pass through. Every role of a multi_role deployment gets a headless Service `<service>-<deployment>-<role>`.
  Pods carry `inferstack.io/traffic: "on"` (entry role of a deployment that accepts traffic) or `"off"`.
- **Per-instance share.** `by_instance_count` → a Service `<service-key>` selecting `inferstack.io/traffic=on` pods of
  the service (every ready instance an equal share). With `clb` it is the load balancer: type LoadBalancer,
  `externalTrafficPolicy: Local` (the caller's address reaches the pod, so the NetworkPolicy can check it, and no
  second hop hides it) and `loadBalancerSourceRanges` = the sources the deployments' security groups allow on the
  call ports (left out when one of them is `0.0.0.0/0` or `::/0`). Otherwise it is ClusterIP, behind the HTTPRoute.
- **Security group → NetworkPolicy**, one per deployment, selecting its pods. Locally the security group is a check
  of the *caller* at the gateway, and instances are reachable only through the gateway. So:
  behind a Gateway (`public_gateway`, `private_gateway`, `clb` with weights) the policy admits the Gateway's
  data-plane pods (`kubernetes.gateway(s).data_plane`: namespace + pod labels, default the GEP-1762 label
  `gateway.networking.k8s.io/gateway-name: <gateway>` in the Gateway's namespace) on the listen and call ports — the
  callers' addresses never reach the pods there, so the group's CIDRs are enforced at the Gateway (see routes.py);
  with a `clb` load balancer (`by_instance_count`) the callers connect to the pods themselves, so the policy admits
  the group's rules as they are (ipBlock + TCP/UDP/SCTP port ranges). Always: the deployment's own pods (its roles
  talk to each other) and, with `kubernetes.monitoring`, the Prometheus pods on the listen port."""

from __future__ import annotations

import ipaddress
from typing import Any

from ...spec import Deployment, SecurityGroup, Service
from .context import LABEL_PREFIX, Context, metadata, peer, selector
from .names import object_name, workload_name

DEFAULT_CALL_PORT = 8000
OPEN = frozenset({"0.0.0.0/0", "::/0"})


def call_ports(svc: Service) -> list[int]:
    return list(svc.ports) or [DEFAULT_CALL_PORT]


def call_service_ports(svc: Service) -> list[dict[str, Any]]:
    """The service's call ports on a Service, each to the container port named `http` (the listen port)."""
    return [{"name": "http" if i == 0 else f"http-{p}", "port": p, "targetPort": "http", "protocol": "TCP"}
            for i, p in enumerate(call_ports(svc))]


def behind_load_balancer(svc: Service) -> bool:
    """Callers reach the instances through a `clb` load balancer (no Gateway, no HTTPRoute)."""
    return svc.network_type == "clb" and svc.traffic.strategy == "by_instance_count"


def deployment_service(svc: Service, dep: Deployment, ctx: Context) -> dict[str, Any]:
    name = workload_name(svc.key or "", dep.key or "")
    ports = call_service_ports(svc)
    ports += [{"name": f"call-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
              for p in dep.ports.call if p not in call_ports(svc)]
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(ctx, name, svc, dep),
            "spec": {"type": "ClusterIP", "selector": selector(svc, dep, dep.entry_role().name), "ports": ports}}


def role_service(svc: Service, dep: Deployment, role: str, name: str, ctx: Context) -> dict[str, Any]:
    ports = [{"name": "http", "port": dep.ports.listen, "targetPort": "http", "protocol": "TCP"}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(ctx, name, svc, dep, role),
            "spec": {"clusterIP": "None", "selector": selector(svc, dep, role), "ports": ports}}


def instance_share_service(svc: Service, ctx: Context) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP", "selector": {**selector(svc), f"{LABEL_PREFIX}traffic": "on"},
                            "ports": call_service_ports(svc)}
    if behind_load_balancer(svc):
        spec["type"] = "LoadBalancer"
        spec["externalTrafficPolicy"] = "Local"
        ranges = _load_balancer_sources(svc, ctx)
        if ranges:
            spec["loadBalancerSourceRanges"] = ranges
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(ctx, object_name(svc.key or ""), svc),
            "spec": spec}


def _load_balancer_sources(svc: Service, ctx: Context) -> list[str]:
    """The sources the security groups of the deployments that take traffic allow on a call port (TCP); empty when
    one of them is open to every address."""
    sources = allowed_sources(svc, ctx, traffic_only=True)
    return [] if OPEN & set(sources) else sources


def network_policy(svc: Service, dep: Deployment, ctx: Context, multi: bool, where: str) -> dict[str, Any]:
    sg: SecurityGroup = ctx.lookup("security_groups", dep.security_group, "security group", where)
    ingress: list[dict[str, Any]] = []
    if behind_load_balancer(svc):
        ingress += _security_group_rules(sg)
    else:
        gw = ctx.gateway(svc)
        ports = [{"protocol": "TCP", "port": p} for p in dict.fromkeys([dep.ports.listen, *dep.ports.call])]
        ingress.append({"from": [peer(gw.data_plane_namespace, gw.data_plane_labels, ctx.namespace)],
                        "ports": ports})
    if multi:
        ingress.append({"from": [{"podSelector": {"matchLabels": selector(svc, dep)}}]})
    monitoring = ctx.options.monitoring
    if monitoring is not None:
        ingress.append({"from": [peer(monitoring.namespace, dict(sorted(monitoring.pod_labels.items())),
                                      ctx.namespace)],
                        "ports": [{"protocol": "TCP", "port": dep.ports.listen}]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(ctx, workload_name(svc.key or "", dep.key or ""), svc, dep),
            "spec": {"podSelector": {"matchLabels": selector(svc, dep)}, "policyTypes": ["Ingress"],
                     "ingress": ingress}}


def _security_group_rules(sg: SecurityGroup) -> list[dict[str, Any]]:
    protocols = {"tcp": ["TCP"], "udp": ["UDP"], "all": ["TCP", "UDP", "SCTP"]}
    out: list[dict[str, Any]] = []
    for rule in sg.ingress:
        ports = []
        for protocol in protocols[rule.protocol]:
            port: dict[str, Any] = {"protocol": protocol, "port": rule.from_port}
            if rule.last_port > rule.from_port:
                port["endPort"] = rule.last_port
            ports.append(port)
        cidr = str(ipaddress.ip_network(rule.source, strict=False))
        out.append({"from": [{"ipBlock": {"cidr": cidr}}], "ports": ports})
    return out


def allowed_sources(svc: Service, ctx: Context, traffic_only: bool = False) -> list[str]:
    """Every source CIDR the security groups of `svc`'s deployments (those that take traffic, with `traffic_only`)
    allow on a call port (TCP), sorted."""
    ports = call_ports(svc)
    sources: set[str] = set()
    for dep in svc.deployments:
        if traffic_only and not dep.accepts_traffic:
            continue
        sg: SecurityGroup = ctx.lookup("security_groups", dep.security_group, "security group", f"{svc.key}/{dep.key}")
        sources |= {str(ipaddress.ip_network(r.source, strict=False)) for r in sg.ingress
                    if any(r.allows(p) for p in ports)}
    return sorted(sources)

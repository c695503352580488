"""The spec rendered to Kubernetes objects: `render(stack) -> RenderResult` (pure: no I/O, no pulumi, no globals).

`RenderResult.objects` is a list of plain dicts, sorted by apply order (kind) then name; the same stack always
renders byte-identical YAML (`to_yaml`, `to_documents`), file names included (`file_name`). `warnings` lists where
Kubernetes cannot do what the embedded platform does (the README's table says the same per concept). The caller
passes a *valid* stack (`load_file` / `validate_stack` first; the `kubernetes.*` rules included); a missing inventory
reference raises `RenderError`, and so do two objects of one kind with one name.

One module per concept, each with its decisions in its docstring:
- `context.py` — options (`RenderOptions` over the stack's `kubernetes:` block), labels, metadata;
- `workloads.py` — Deployments (images, probes, draining, env, pod security, resources) and PodDisruptionBudgets;
- `scheduling.py` — node affinity, tolerations, NUMA, PriorityClasses;
- `networking.py` — Services, load balancers, NetworkPolicies (the security groups);
- `routes.py` — HTTPRoutes (traffic, Gateways per network type, access, Gateway API versions);
- `autoscaling.py` — HPAs and KEDA ScaledObjects;
- `flagger.py` — a deployment's progressive policy (canary redeploys) as a Flagger Canary.

Options left `None` in `RenderOptions` come from the stack's `kubernetes:` block. Queues, compute specs and security
groups are looked up in `options.inventory` (default: `default_inventory()`) merged with the stack's own inventory, as
`load_file(path, default_inventory())` does.

Secrets: the secret env values of a deployment live in one `v1/Secret` `<service-key>-<deployment-key>-env`; keys are
the env names (`<role>.<NAME>` for a role's own env in multi_role deployments); containers read them with
`secretKeyRef`. The Secret is rendered only with `include_secrets` (as `stringData`); otherwise a warning names it and
its keys, and the user creates it. Multi-role: every role's instances get
`INFERSTACK_ROLE_<ROLE>_ENDPOINTS=<role Service>.<namespace>.svc:<listen port>` for every other role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...spec import ComputeSpec, Deployment, Queue, Service, StackFile, yaml_text
from ...spec.kubernetes import is_multi_role
from .autoscaling import autoscaler
from .context import Context, RenderError, RenderOptions, metadata
from .flagger import canaried, canary
from .names import object_name, workload_name
from .networking import deployment_service, network_policy, role_service
from .routes import traffic_objects
from .scheduling import priority_class_objects, used_priority_classes
from .workloads import pdb, workload

# Apply order: what others reference comes first; the file name prefix is this rank, so names stay stable.
KIND_ORDER = ("PriorityClass", "Secret", "NetworkPolicy", "Service", "Deployment", "PodDisruptionBudget",
              "HorizontalPodAutoscaler", "ScaledObject", "HTTPRoute", "Canary")


@dataclass
class RenderResult:
    """Rendered objects in stable order, and what could not be rendered exactly."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def files(self) -> list[tuple[str, str]]:
        """(file name, YAML text) per object, in order."""
        with yaml_text.paused_gc():  # acyclic throughout; collections would rescan every object built so far
            return [(file_name(obj), to_yaml(obj)) for obj in self.objects]

    def to_documents(self) -> str:
        """All objects as one multi-document YAML stream, each headed by its file name."""
        return "".join(f"---\n# {name}\n{text}" for name, text in self.files())


# --- public entry points ---------------------------------------------------------------------------------------

def render(stack: StackFile, options: RenderOptions | None = None) -> RenderResult:
    """Every object of every service of `stack` (and the cluster-wide ones with `cluster_bootstrap`)."""
    ctx = Context.of(stack, options)
    objects: list[dict[str, Any]] = []
    with yaml_text.paused_gc():  # plain acyclic dicts: collections meanwhile made rendering superlinear
        for svc in stack.services:
            objects += _service_objects(svc, ctx)
        objects += cluster_objects(stack, options)
        return RenderResult(_ordered(objects), ctx.warnings)


def render_service(service: Service, stack: StackFile, options: RenderOptions | None = None) -> RenderResult:
    """The namespaced objects of one service; `stack` supplies the options and the inventory."""
    ctx = Context.of(stack, options)
    return RenderResult(_ordered(_service_objects(service, ctx)), ctx.warnings)


def cluster_objects(stack: StackFile, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """The cluster-wide objects (PriorityClasses the stack uses) when cluster bootstrap is on (`options`, else the
    stack's `kubernetes.cluster_bootstrap`); else none."""
    flag = options.cluster_bootstrap if options is not None else None
    if flag is None:
        flag = stack.kubernetes_options.cluster_bootstrap
    return priority_class_objects(stack) if flag else []


def file_name(obj: dict[str, Any]) -> str:
    """`NN-<kind>-<name>.yaml`, NN the kind's apply rank: stable when objects are added or removed."""
    return f"{KIND_ORDER.index(obj['kind']):02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def to_yaml(obj: dict[str, Any]) -> str:
    """One object as YAML, keys in the order rendered, no anchors or aliases (byte-identical for equal objects;
    libyaml's emitter when available, see `spec.yaml_text.dump`)."""
    return yaml_text.dump(obj, width=4096)


def _ordered(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], int] = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        seen[key] = seen.get(key, 0) + 1
    clashes = sorted(f"{kind} '{name}'" for (kind, name), n in seen.items() if n > 1)
    if clashes:
        raise RenderError(f"two objects would share a name: {', '.join(clashes)} — `<service-key>-<deployment-key>` "
                          f"is ambiguous here; change a key (rule kubernetes.object_name_unique)")
    return sorted(objects, key=lambda o: (KIND_ORDER.index(o["kind"]), o["metadata"]["name"]))


# --- per service -----------------------------------------------------------------------------------------------

def _service_objects(svc: Service, ctx: Context) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for dep in svc.deployments:
        objects += _deployment_objects(svc, dep, ctx)
    if svc.deployments:
        objects += traffic_objects(svc, ctx)
    if not ctx.cluster_bootstrap:
        missing = used_priority_classes(svc.deployments)
        if missing:
            ctx.warn(str(svc.key), f"pods name PriorityClass(es) {', '.join(missing)}, which are cluster-wide and not "
                                   f"rendered: create them first (render with --cluster-bootstrap), or the API server "
                                   f"rejects the pods")
    return objects


def _deployment_objects(svc: Service, dep: Deployment, ctx: Context) -> list[dict[str, Any]]:
    where = f"{svc.key}/{dep.key}"
    queue: Queue = ctx.lookup("queues", dep.queue, "queue", where)
    multi = is_multi_role(dep)
    roles = dep.effective_roles()
    secrets = _secret_values(dep, multi)
    secret_name = object_name(svc.key or "", dep.key or "", "env")
    objects = [network_policy(svc, dep, ctx, multi, where)]
    if canaried(dep):
        objects.append(canary(svc, dep, ctx, where))  # Flagger owns the Service of the Deployment's name
    else:
        objects.insert(0, deployment_service(svc, dep, ctx))
    if dep.numa_affinity:
        ctx.warn(where, "NUMA affinity is a preference only on nodes whose topology manager policy is best-effort: "
                        "label only those inferstack.io/numa-aligned=true (restricted or single-numa-node nodes "
                        "reject pods they cannot align)")
    if secrets:
        if ctx.include_secrets:
            objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": metadata(ctx, secret_name, svc, dep),
                            "type": "Opaque", "stringData": dict(sorted(secrets.items()))})
        else:
            ctx.warn(where, f"Secret '{secret_name}' (keys: {', '.join(sorted(secrets))}) is referenced but not "
                            f"rendered: create it in namespace '{ctx.namespace}', or render with --include-secrets")
    for role in roles:
        role_label = role.name if multi else None
        rwhere = f"{where}/{role.name}" if multi else where
        spec: ComputeSpec = ctx.lookup("compute_specs", role.compute_spec, "compute spec", rwhere)
        name = workload_name(svc.key or "", dep.key or "", role_label)
        objects.append(workload(svc, dep, role, roles, multi, queue, spec, secret_name, name, ctx, rwhere))
        if multi:
            objects.append(role_service(svc, dep, role.name, name, ctx))
        objects.append(pdb(svc, dep, role, role_label, name, ctx, rwhere))
        objects += autoscaler(svc, dep, role, role_label, name, ctx, rwhere)
    return objects


def _secret_values(dep: Deployment, multi: bool) -> dict[str, str]:
    """Secret key → value: env name for the deployment's env, `<role>.<NAME>` for a multi_role role's own env."""
    values = {e.name: e.secret.get_secret_value() for e in dep.env if e.secret is not None}
    for role in (dep.roles or []) if multi else []:
        values.update({f"{role.name}.{e.name}": e.secret.get_secret_value() for e in role.env if e.secret is not None})
    return values


__all__ = ["KIND_ORDER", "RenderError", "RenderOptions", "RenderResult", "cluster_objects", "file_name",
           "priority_class_objects", "render", "render_service", "to_yaml"]

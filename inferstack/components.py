"""Pulumi components: an inference service with its deployments and traffic, and the inventory a stack declares.

    service = InferenceService("chat", InferenceServiceArgs(service=spec, inventory=inventory))

Local target (the embedded platform): the children are dynamic resources (`inferstack.targets.local.providers`):
one `Service` (the service's own fields), one `Deployment` per deployment (logical name `<service>/<deployment>`,
from keys only), and one `Traffic` that depends on every deployment — so a new deployment is created at weight 0 and
becomes Ready before the weights move, and in the same `up` a removed deployment loses its weight (traffic updates
first) before it is deleted (the engine deletes what left the program after all creates and updates). Kubernetes
target: the children are the pulumi-kubernetes objects of `inferstack.targets.kubernetes.component`.

Identity is keys, so the flat (legacy) form and the list form keeping key `default` give identical URNs. Moving a
component under a new parent, or renaming its type token, must add `aliases` (the engine works out its children's
aliases from the component's), so that an upgrade never replaces what users run:
`pulumi.ResourceOptions(parent=team, aliases=[pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)])`. Secret env values
are Pulumi secrets in state and previews.

Both components register what the policy pack reads as outputs, the same on every target: `InferenceService` its
`spec` (the service's data), the `inventory` its stack declares and `deploymentUrns`; `Inventory` its `inventory`
and `objectUrns`. So the policies never key on one target's resource types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi

from .spec import (
    DEFAULT_KEY,
    UNKNOWN,
    Finding,
    Inventory,
    Service,
    Severity,
    SpecError,
    StackFile,
    default_inventory,
    validate,
)
from .targets.local.pulumi_glue import map_leaves

SERVICE_TYPE = "inferstack:index:InferenceService"
INVENTORY_TYPE = "inferstack:index:Inventory"
CLUSTER_TYPE = "inferstack:index:Cluster"
Target = Literal["local", "kubernetes"]

# The service's own fields as the service resource carries them: deployments and traffic are resources of their own,
# and `legacy_form` only says how the stack was written (the flat and the list form give identical inputs).
SERVICE_FIELDS = ("name", "key", "description", "resource_group", "vpc", "network_type", "ports")


# --- the inventory a stack declares -------------------------------------------------------------------------------

@dataclass
class StackInventoryArgs:
    """The inventory objects a stack declares (only these are managed; others are referenced by name)."""

    inventory: Inventory | Mapping[str, Any]
    target: Target = "local"
    """On the local target each object is a platform resource; on kubernetes the objects only inform the render
    (queues and zones become node affinity) and the policy pack."""


class StackInventory(pulumi.ComponentResource):
    """`inferstack:index:Inventory`: the inventory a stack declares. On the local target: one platform resource per
    declared object (VPCs, resource groups, queues, compute specs, subnets, security groups, images), each depending
    on the objects it references. Its outputs (`inventory`, `objectUrns`) are what the policy pack reads."""

    inventory: Inventory
    resources: dict[tuple[str, str], pulumi.Resource]
    """(kind, name) → resource, e.g. ("queues", "q-a"); none on the kubernetes target."""

    def __init__(self, name: str, args: StackInventoryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(INVENTORY_TYPE, name, None, opts)
        from .plan import INVENTORY_ORDER
        from .targets.local.resources import INVENTORY_RESOURCES

        inventory = args.inventory if isinstance(args.inventory, Inventory) else \
            Inventory.model_validate(args.inventory)
        self.inventory = inventory
        self.resources = {}
        if args.target == "local":
            for kind in INVENTORY_ORDER:
                for obj in getattr(inventory, kind):
                    deps = [self.resources[ref] for ref in _inventory_references(kind, obj) if ref in self.resources]
                    self.resources[(kind, obj.name)] = INVENTORY_RESOURCES[kind](
                        obj.name, obj.to_data(),
                        pulumi.ResourceOptions(parent=self, depends_on=deps, delete_before_replace=True))
        self.register_outputs({
            "objects": sorted(f"{kind}/{name}" for kind, name in self.resources),
            # What the policy pack reads, the same on every target: the declared objects and their resources.
            "inventory": inventory.to_data(),
            "objectUrns": {f"{kind}/{name}": r.urn for (kind, name), r in self.resources.items()},
        })

    def dependencies(self, refs: Sequence[tuple[str, str]]) -> list[pulumi.Resource]:
        """The resources among `refs` ((kind, name) pairs) that this stack declares."""
        return [self.resources[r] for r in dict.fromkeys(refs) if r in self.resources]


def _inventory_references(kind: str, obj: Any) -> list[tuple[str, str]]:
    if kind == "queues":
        return [("resource_groups", obj.resource_group), *(("compute_specs", s) for s in obj.capacity)]
    if kind in ("subnets", "security_groups"):
        return [("vpcs", obj.vpc)]
    return []


# --- one inference service ------------------------------------------------------------------------------------------

@dataclass
class InferenceServiceArgs:
    """What an `InferenceService` is built from."""

    service: Service | Mapping[str, Any]
    """The service: a model, or data of the stack file's shape (flat legacy form and `weight:` sugar included).
    String values may be Pulumi Inputs — a secret from config, another resource's output; rules that need a value
    not known yet are deferred to the provider's check and the platform, and the preview says so."""
    target: Target = "local"
    stack: StackFile | None = None
    """The whole stack (the kubernetes target renders with its options and inventory)."""
    inventory: StackInventory | None = None
    """The stack's declared inventory resources: the service's resources depend on those they reference."""
    known_inventory: Inventory | None = None
    """Inventory to check references against (default: the platform's default inventory plus the stack's); a
    reference not in it is deferred to the platform, not an error."""
    validate: bool = True
    """Run the spec's rules here (the stack program validates the whole stack once and turns this off)."""


class InferenceService(pulumi.ComponentResource):
    """`inferstack:index:InferenceService`: one service, its deployments and its traffic, converged in one `up`."""

    gateway_url: pulumi.Output[str | None]
    """Where the service is called (the platform's gateway URL); None on the kubernetes target."""
    deployment_keys: pulumi.Output[list[str]]
    status: pulumi.Output[dict[str, Any]]
    """Per deployment key: `{"ready": bool, "reason": ...}` as last seen by the provider."""
    service: Service
    """The validated model (secret values revealed inside: never print it)."""
    children: dict[str, pulumi.Resource]
    """Child resources by role: `service`, `deployment:<key>`, `traffic` (local target), or kubernetes objects."""

    def __init__(self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(SERVICE_TYPE, name, None, opts)
        model, data, inputs = _resolve(args.service)
        if inputs and args.target == "kubernetes":
            raise pulumi.RunError(f"service '{model.name}': Pulumi Inputs inside the spec are supported on the local "
                                  f"target only (the kubernetes target renders plain values)")
        if args.validate:
            _report(_service_findings(args, data), self)
        if model.key is None:
            raise pulumi.RunError(f"service '{model.name}' needs a key (its name is not a valid key)")
        self.service = model
        self.children = {}
        keys = model.deployment_keys()
        if args.target == "kubernetes":
            self._kubernetes(args)
            self.gateway_url = pulumi.Output.from_input(None)
            self.status = pulumi.Output.from_input({k: {"ready": None} for k in keys})
        else:
            self._local(model, data, args.inventory)
        self.deployment_keys = pulumi.Output.from_input(keys)
        self.register_outputs({
            "gatewayUrl": self.gateway_url, "deploymentKeys": self.deployment_keys, "status": self.status,
            # What the policy pack reads, the same on every target (policies never key on a target's types).
            "target": args.target, "spec": data, "inventory": _declared(args).to_data(),
            "deploymentUrns": {k[len("deployment:"):]: r.urn for k, r in self.children.items()
                               if k.startswith("deployment:")},
        })

    def _local(self, model: Service, data: dict[str, Any], inventory: StackInventory | None) -> None:
        from .targets.local.resources import DeploymentResource, ServiceResource, TrafficResource

        key = model.key
        assert key is not None
        inv = inventory.dependencies if inventory is not None else (lambda _refs: [])
        service = ServiceResource(key, {f: data[f] for f in SERVICE_FIELDS if f in data}, pulumi.ResourceOptions(
            parent=self, depends_on=inv([("resource_groups", model.resource_group), ("vpcs", model.vpc)]),
            delete_before_replace=True))
        self.children["service"] = service
        deployments: dict[str, DeploymentResource] = {}
        for dep_model, dep_data in zip(model.deployments, data["deployments"]):
            dkey = dep_model.key
            assert dkey is not None
            refs = [("queues", dep_model.queue), ("subnets", dep_model.subnet),
                    ("security_groups", dep_model.security_group),
                    *(("compute_specs", r.compute_spec) for r in dep_model.effective_roles()),
                    *([("images", dep_model.image.preset)] if dep_model.image.preset else [])]
            props = {"service_key": service.key, **dep_data}
            if dkey == DEFAULT_KEY:  # the legacy rule needs to know whether this `up` adds a deployment
                props["service_deployment_keys"] = model.deployment_keys()
            deployments[dkey] = DeploymentResource(
                f"{key}/{dkey}", props,
                pulumi.ResourceOptions(parent=self, depends_on=[service, *inv(refs)], delete_before_replace=True,
                                       additional_secret_outputs=_secret_outputs(dep_data)))
            self.children[f"deployment:{dkey}"] = deployments[dkey]
        traffic = TrafficResource(key, {
            "service_key": service.key, **data["traffic"],
            "deployment_keys": [d.key for d in deployments.values()],
            "deployment_uids": {k: d.uid for k, d in deployments.items()},
            "deployment_ids": {k: d.id for k, d in deployments.items()},
        }, pulumi.ResourceOptions(parent=self, depends_on=[service, *deployments.values()]))
        self.children["traffic"] = traffic
        self.gateway_url = service.gateway_url
        keys = list(deployments)
        self.status = pulumi.Output.all(*(d.status for d in deployments.values())).apply(
            lambda statuses: dict(zip(keys, statuses)))

    def _kubernetes(self, args: InferenceServiceArgs) -> None:
        try:
            from .targets.kubernetes.component import register_service
        except ImportError as exc:  # pragma: no cover - the kubernetes target ships with the package
            raise pulumi.RunError(f"the kubernetes target is not available: {exc}") from exc
        stack = args.stack or StackFile(target="kubernetes", services=[self.service], inventory=_declared(args))
        for i, child in enumerate(register_service(self.service, stack, parent=self)):
            self.children[f"kubernetes:{i}"] = child


def _declared(args: InferenceServiceArgs) -> Inventory:
    """The inventory the service's stack declares (what the policy pack checks its references against, with the
    platform's default inventory)."""
    if args.inventory is not None:
        return args.inventory.inventory
    return args.stack.inventory if args.stack is not None else Inventory()


def _secret_outputs(dep_data: Mapping[str, Any]) -> list[str]:
    """Top-level outputs holding secret env values: secret in state whatever the engine infers."""
    out = []
    if any("secret" in e for e in dep_data.get("env") or []):
        out.append("env")
    if any("secret" in e for r in dep_data.get("roles") or [] for e in r.get("env") or []):
        out.append("roles")
    return out


# --- a whole stack ----------------------------------------------------------------------------------------------------

@dataclass
class StackResources:
    """What `deploy_stack` registered."""

    services: dict[str, InferenceService] = field(default_factory=dict)
    inventory: StackInventory | None = None
    cluster: pulumi.ComponentResource | None = None


def deploy_stack(stack: StackFile, *, validate_services: bool = False,
                 opts: pulumi.ResourceOptions | None = None) -> StackResources:
    """Register a validated stack: its declared inventory (platform objects on the local target) and one
    `InferenceService` per service."""
    out = StackResources()
    if any(getattr(stack.inventory, k) for k in Inventory.KINDS):
        out.inventory = StackInventory("inventory", StackInventoryArgs(stack.inventory, stack.target), opts)
    if stack.target == "kubernetes" and stack.kubernetes is not None and stack.kubernetes.cluster_bootstrap:
        out.cluster = _cluster_objects(stack, opts)
    known = default_inventory().merged(stack.inventory)
    for svc in stack.services:
        out.services[svc.key or svc.name] = InferenceService(svc.key or svc.name, InferenceServiceArgs(
            service=svc, target=stack.target, stack=stack, inventory=out.inventory, known_inventory=known,
            validate=validate_services), opts)
    return out


def _cluster_objects(stack: StackFile, opts: pulumi.ResourceOptions | None) -> pulumi.ComponentResource:
    """`inferstack:index:Cluster`: the stack's cluster-wide objects (PriorityClasses), registered once."""
    from .targets.kubernetes.component import register_cluster_objects

    cluster = pulumi.ComponentResource(CLUSTER_TYPE, "cluster", None, opts)
    register_cluster_objects(stack, parent=cluster)
    cluster.register_outputs({})
    return cluster


# --- spec data with Pulumi Inputs inside --------------------------------------------------------------------------

_MARK = "zzpulumiinput"  # a marker valid as a key, a name, a ref and an env name


def _resolve(service: Service | Mapping[str, Any]) -> tuple[Service, dict[str, Any], int]:
    """The model, the expanded data (`to_data()`) with Inputs put back where they were and secret env values made
    Pulumi secrets, and how many Inputs there were. Inputs may only stand for strings."""
    inputs: list[Any] = []
    if isinstance(service, Service):
        model, data = service, service.to_data()
    else:
        marked = _mark(service, inputs)
        try:
            model = Service.model_validate(marked)
        except ValueError as exc:
            raise pulumi.RunError(f"invalid service: {exc}") from None
        data = _unmark(model.to_data(), inputs)
        if _holds_input(model.key) or any(_holds_input(d.key) for d in model.deployments):
            raise pulumi.RunError("service and deployment keys must be plain strings (they are identities)")
    return model, _secret_env(data), len(inputs)


def _is_input(value: Any) -> bool:
    return isinstance(value, pulumi.Output) or hasattr(value, "__await__")


def _holds_input(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_MARK)


def _mark(value: Any, inputs: list[Any]) -> Any:
    def mark(leaf: Any) -> Any:
        if not _is_input(leaf):
            return leaf
        inputs.append(leaf)
        return f"{_MARK}{len(inputs) - 1}"

    return map_leaves(value, mark)


def _unmark(value: Any, inputs: list[Any]) -> Any:
    return map_leaves(value, lambda leaf: inputs[int(leaf[len(_MARK):])] if _holds_input(leaf) else leaf)


def _as_unknown(value: Any) -> Any:
    """Inputs (Outputs) as the spec's UNKNOWN sentinel: rules needing them report themselves deferred."""
    return map_leaves(value, lambda leaf: UNKNOWN if _is_input(leaf) else leaf)


def _secret_env(data: dict[str, Any]) -> dict[str, Any]:
    """Every env `secret` value as a Pulumi secret (encrypted in state, `[secret]` in previews)."""
    def env(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**e, "secret": pulumi.Output.secret(e["secret"])} if e.get("secret") is not None else e
                for e in items]

    for dep in data.get("deployments") or []:
        if dep.get("env"):
            dep["env"] = env(dep["env"])
        for role in dep.get("roles") or []:
            if role.get("env"):
                role["env"] = env(role["env"])
    return data


# --- validation at preview ------------------------------------------------------------------------------------------

def _service_findings(args: InferenceServiceArgs, data: dict[str, Any]) -> list[Finding]:
    """The spec's rules over this service, with values not known yet deferred (not skipped) and references outside
    the known inventory deferred to the platform."""
    raw = args.service.to_data() if isinstance(args.service, Service) else args.service
    known = args.known_inventory
    if known is None:
        declared = args.stack.inventory if args.stack else Inventory()
        known = default_inventory().merged(declared)
    return validate([_as_unknown(raw)], known, partial_inventory=True).findings


def _report(findings: Sequence[Finding], resource: pulumi.Resource | None) -> None:
    """Warnings and deferred rules to the Pulumi log (the preview shows them); errors stop the program."""
    for f in findings:
        if f.severity is Severity.WARNING:
            pulumi.log.warn(str(f), resource=resource)
        elif f.severity is Severity.DEFERRED:
            pulumi.log.info(str(f), resource=resource)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        from .spec import Report

        raise pulumi.RunError("the stack breaks rules of the spec:\n" + str(SpecError(Report(errors))))


def check_stack(data: Any, source: str = "inferstack:stack") -> tuple[StackFile | None, list[Finding]]:
    """Parse stack data (the stack file's shape) and run every rule. References are checked against the platform's
    default inventory plus the stack's own; one outside both is deferred to the platform (which may hold more),
    never an error here. Returns the stack (None when it has field errors) and every finding."""
    from .spec.validate import parse

    stack, findings = parse(StackFile, data, "")
    if stack is None:
        return None, findings
    known = default_inventory().merged(stack.inventory)
    return stack, validate(stack.services, known, partial_inventory=True, check_inventory=True).findings


def report_findings(findings: Sequence[Finding]) -> None:
    """Log a stack's findings (warnings, deferred rules) and stop on errors: what the stack program does."""
    _report(findings, None)

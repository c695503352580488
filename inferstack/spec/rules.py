"""The one registry of rule ids. The API's 422 bodies, the Pulumi providers' check failures and the policy pack
all name rules from here, so an id never changes once published."""

from __future__ import annotations

from dataclasses import dataclass

from . import limits as L
from .findings import Severity


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str
    severity: Severity = Severity.ERROR


_RULES = [
    # structure (pydantic-level)
    Rule("field.required", "a required field is missing"),
    Rule("field.unknown", "unknown keys are errors, so that a typo never passes silently"),
    Rule("field.type", "the value has the wrong type"),
    Rule("field.enum", "the value is not one of the allowed choices"),
    Rule("field.invalid", "the value is not valid for this field"),
    # single fields
    Rule("name.format", "names are 1-200 visible characters: ASCII letters, CJK, digits, '-' and '_'"),
    Rule("key.format", "keys match ^[a-z][a-z0-9-]{0,39}$"),
    Rule("ref.format", "inventory names and references are 1-128 characters: letters, digits, '.', '_', '-' (no '/')"),
    Rule("description.length", "descriptions are at most 1024 characters"),
    Rule("port.range", "ports are integers from 1 to 65535"),
    Rule("cidr.format", "CIDRs are IPv4 or IPv6 networks such as 10.0.0.0/16"),
    Rule("env.name_format", f"env names match ^[A-Za-z_][A-Za-z0-9_]*$ (no leading digit), at most {L.MAX_ENV_NAME} "
                             f"characters"),
    Rule("mount.path_absolute", "mount paths are absolute"),
    Rule("priority.range", "priority is an integer from 1 to 9"),
    Rule("rolling_update.percent_range", "max unavailable and max surge are percentages from 0 to 100"),
    Rule("replicas.min_one", "instance counts are at least 1"),
    Rule("autoscaling.cron_format", "schedule start and end are valid cron expressions"),
    Rule("autoscaling.timezone_known", "schedule time zones are IANA names such as Asia/Shanghai"),
    Rule("autoscaling.target_positive", "metric targets are greater than 0"),
    Rule("probe.timing", f"probe delays are 0-{L.MAX_PROBE_S:g} s, periods and timeouts above 0 and at most "
                         f"{L.MAX_PROBE_S:g} s, thresholds 1-{L.MAX_THRESHOLD}"),
    Rule("graceful_shutdown.range", "the graceful shutdown period is 0 to 3600 seconds"),
    Rule("traffic.weight_non_negative", "weights are numbers from 0 to 100"),
    Rule("traffic.mirror_percent_range", "mirror percent is greater than 0 and at most 100"),
    Rule("traffic.timeout_positive", "the request timeout is greater than 0"),
    Rule("traffic.retries_range", "retries are 0 to 3"),
    Rule("role.name_format", "role names match ^[a-z][a-z0-9-]{0,19}$"),
    Rule("compute_spec.resources_positive", "cpu and memory are greater than 0, GPU counts >= 0, prices >= 0"),
    Rule("queue.capacity_non_negative", "queue capacity is a number of instances >= 0"),
    Rule("compute_spec.currency_code", "prices name their currency by its ISO 4217 code (USD, CNY, ...)"),
    # size and count (every value ends up in a process, a row or a header: see spec/limits.py)
    Rule("number.finite", "numbers are finite: NaN, Infinity and literals too large to represent (1e400) are refused"),
    Rule("text.length", "text fields have a maximum length (stated per field in the schema)"),
    Rule("text.control_characters", "NUL is refused in every text; names, references, paths and header fields take "
                                    "no control characters at all, descriptions only tab and line breaks"),
    Rule("env.value_size", f"an env value or secret is at most {L.MAX_ENV_VALUE} characters"),
    Rule("env.total_size", f"a role's whole environment (NAME=value of every variable) is at most {L.MAX_ENV_TOTAL} "
                           f"characters"),
    Rule("command.size", f"an argv (entry, probe or image command) has at most {L.MAX_ARGV_ITEMS} items and "
                         f"{L.MAX_ARGV_TOTAL} characters, each item at most {L.MAX_ARG}; an entry or probe command is "
                         f"not empty"),
    Rule("replicas.max", f"instance counts (replicas, autoscaling bounds, schedule counts) are at most {L.MAX_REPLICAS} "
                         f"per role"),
    Rule("service.deployments_max", f"a service has at most {L.MAX_DEPLOYMENTS_PER_SERVICE} deployments"),
    Rule("stack.services_max", f"a stack file (and a platform) holds at most {L.MAX_SERVICES} services"),
    Rule("stack.deployments_max", f"a stack file (and a platform) holds at most {L.MAX_DEPLOYMENTS} deployments over "
                                  f"all services"),
    Rule("list.max_items", f"lists are bounded: ports {L.MAX_PORTS}, header rules {L.MAX_HEADER_RULES}, schedules "
                           f"{L.MAX_SCHEDULES}, metric rules {L.MAX_METRIC_RULES}, mounts {L.MAX_MOUNTS}, roles "
                           f"{L.MAX_ROLES}, env entries {L.MAX_ENV_VARS}, ingress rules {L.MAX_INGRESS_RULES}, inventory "
                           f"objects {L.MAX_INVENTORY_OBJECTS} per kind, queue capacity entries {L.MAX_CAPACITY_ENTRIES}"),
    Rule("mount.source_format", "mount sources are file system names (letters, digits, '.', '_', '-'; no '/' or "
                                "'..'), so a mount cannot leave its file system"),
    Rule("image.name_format", "image names are references such as registry.example.com/team/llm:1.4 (no spaces, no "
                              "empty or '..' segments)"),
    Rule("header.name_format", f"header names are HTTP tokens of at most {L.MAX_HEADER_NAME} characters"),
    Rule("probe.http_path_format", "an HTTP probe's path starts with '/' and holds visible ASCII only"),
    Rule("traffic.timeout_max", f"the request timeout is at most {L.MAX_TIMEOUT_S:g} seconds"),
    Rule("autoscaling.target_range", f"metric targets are from {L.MIN_METRIC_TARGET:g} to {L.MAX_METRIC_TARGET:g}"),
    Rule("compute_spec.resources_max", f"at most {L.MAX_CPU:g} CPUs, {L.MAX_MEMORY_GIB:g} GiB of memory, "
                                       f"{L.MAX_GPUS} GPUs and a price of {L.MAX_PRICE:g} per hour"),
    Rule("queue.capacity_max", f"a queue holds at most {L.MAX_CAPACITY} instances of one compute spec"),
    # the stack file
    Rule("stack.declares_nothing", "a stack file declares at least one service or inventory object"),
    # inventory
    Rule("inventory.name_unique", "inventory names are unique per kind"),
    Rule("queue.resource_group_exists", "a queue belongs to a resource group of the inventory"),
    Rule("queue.capacity_spec_exists", "queue capacity names compute specs of the inventory"),
    Rule("queue.billing_matches_resource_group",
         "a queue's billing type is one its resource group allows (a prepaid or postpaid group holds only queues of "
         "that type; a mixed group holds both)"),
    Rule("subnet.vpc_exists", "a subnet belongs to a VPC of the inventory"),
    Rule("security_group.vpc_exists", "a security group belongs to a VPC of the inventory"),
    Rule("security_group.port_range", "an ingress rule's to_port is not below its from_port"),
    Rule("compute_spec.fits_machine", "a compute spec is not larger than the machine it is cut from"),
    # service
    Rule("service.key_required", "a service needs a key when its name is not a valid key"),
    Rule("service.key_unique", "service keys are unique"),
    Rule("service.name_unique_in_resource_group", "service names are unique per resource group"),
    Rule("service.resource_group_exists", "the service's resource group exists"),
    Rule("service.vpc_exists", "the service's VPC exists"),
    Rule("service.ports_unique", "a service's call ports do not repeat"),
    Rule("service.legacy_and_list_form", "a service uses either inline deployment fields or `deployments:`, not both"),
    # traffic
    Rule("traffic.weight_given_twice", "a deployment's `weight:` and traffic.weights name the same deployment"),
    Rule("traffic.weights_only_weighted", "weights are only allowed with strategy `weighted`"),
    Rule("traffic.weight_unknown_deployment", "weights name deployments of the service"),
    Rule("traffic.weights_sum", "weights of a weighted service sum to 100"),
    Rule("traffic.header_rule_deployment_exists", "header rules route to deployments of the service"),
    Rule("traffic.mirror_deployment_exists", "mirroring copies to a deployment of the service"),
    # deployment
    Rule("deployment.key_required", "a deployment needs a key when its name is not a valid key"),
    Rule("deployment.key_unique", "deployment keys are unique per service (names may repeat, keys may not)"),
    Rule("deployment.image_exactly_one", "an image is exactly one of preset, custom or url"),
    Rule("deployment.image_preset_exists", "a preset image is in the platform's catalogue"),
    Rule("deployment.model_source_exactly_one", "a model is a registry reference (with version) or a path, not both"),
    Rule("deployment.model_path_on_mount", "a model path lies under one of the deployment's mounts"),
    Rule("deployment.queue_exists", "the deployment's queue exists"),
    Rule("deployment.queue_in_resource_group", "the queue belongs to the service's resource group"),
    Rule("deployment.compute_spec_exists", "the compute spec exists"),
    Rule("deployment.compute_spec_offered_by_queue", "the queue offers the compute spec"),
    Rule("deployment.subnet_exists", "the deployment's subnet exists"),
    Rule("subnet.in_service_vpc", "the subnet is in the service's VPC"),
    Rule("subnet.zone_matches_queue", "the subnet's zone equals the queue's zone"),
    Rule("deployment.security_group_exists", "the deployment's security group exists"),
    Rule("security_group.in_service_vpc", "the security group is in the service's VPC"),
    Rule("security_group.allows_ports", "the security group allows ingress on the service's and deployment's ports"),
    Rule("deployment.roles_match_mode", "standard deployments have inline role fields; multi_role ones 2+ roles"),
    Rule("deployment.replicas_or_autoscaling", "replicas are required unless autoscaling is set"),
    Rule("deployment.accept_traffic_scope", "accept_traffic is settable only with network_type clb and by_instance_count"),
    Rule("deployment.ports_unique", "a deployment's listen and call ports do not repeat"),
    Rule("role.entry_exactly_one", "exactly one role of a multi_role deployment is the entry role"),
    Rule("role.name_unique", "role names are unique per deployment"),
    Rule("rolling_update.not_both_zero", "max unavailable and max surge are not both 0"),
    Rule("autoscaling.not_empty", "autoscaling has at least one schedule or metric"),
    Rule("autoscaling.schedule_count", "a schedule sets either replicas or min and max"),
    Rule("autoscaling.min_le_max", "min is not above max"),
    Rule("env.name_unique", "env names do not repeat"),
    Rule("env.value_exactly_one", "an env var has exactly one of value or secret"),
    Rule("mount.path_unique", "mount paths do not repeat"),
    Rule("probe.exactly_one_action", "a probe has exactly one of http, tcp or command"),
    Rule("probe.success_threshold_one", "startup and liveness probes have success_threshold 1"),
    Rule("capacity.prepaid_fits", "a prepaid queue holds a deployment's replicas (or autoscaling min) plus surge beside "
                                  "every deployment of equal or higher priority (lower ones are preempted)"),
    Rule("capacity.postpaid_quota_fits",
         "a pay-as-you-go queue's capacity is a quota: it holds a deployment's replicas (or autoscaling min) plus "
         "surge beside every deployment of equal or higher priority (lower ones are preempted)"),
    Rule("capacity.idle_fits",
         "an idle-resource deployment asks for no more instances than its own queue and the lending queues of its "
         "zone hold for its compute spec"),
    Rule("numa.exceeds_half_machine", "NUMA affinity has no policy past half a machine's CPUs or GPUs",
         Severity.WARNING),
    Rule("use_idle.no_lender", "no queue of the inventory lends idle resources", Severity.WARNING),
    # the kubernetes target (stacks with `target: kubernetes`, and whatever `inferstack render` renders)
    Rule("kubernetes.object_name_unique", "keys of different services or deployments do not join into one "
         "Kubernetes object name ('a-b'+'c' = 'a'+'b-c')"),
    Rule("kubernetes.route_path_unique", "stacks sharing a Gateway do not claim one route path "
         "(`<path_prefix>/<service-key>`)"),
    Rule("autoscaling.replicas_outside_bounds", "the starting replicas lie outside the autoscaling bounds",
         Severity.WARNING),
    # progressive delivery (traffic shifts and canary redeploys: spec/progressive.py)
    Rule("progressive.step_range", "release steps are percentages greater than 0 and at most 100"),
    Rule("progressive.steps_increasing", "release steps increase strictly and end at 100 (a deployment's policy has "
                                         "a step below 100)"),
    Rule("progressive.bake_time_range", "a step's bake time is more than 0 and at most 86400 seconds"),
    Rule("progressive.step_timeout_range", "a step's timeout is more than 0, at most 604800 seconds and not shorter "
                                           "than its bake time"),
    Rule("progressive.gate_range", "gates are finite: error rate 0-100 %, p99 more than 0 ms, ratio more than 0, "
                                   "minimum requests at least 1"),
    Rule("progressive.gates_not_empty", "a release policy sets at least one of max_error_rate, max_p99_ms or "
                                        "max_p99_ratio"),
    Rule("progressive.retry_range", "retry is a counter from 0"),
    Rule("progressive.weighted_only", "a traffic shift policy needs strategy `weighted` (it moves weights)"),
    Rule("progressive.standard_only", "a canary redeploy policy needs inference_mode `standard`"),
    Rule("progressive.needs_surge", "a canary redeploy runs new instances within the rolling update's surge: "
                                    "max_surge above 0"),
    Rule("progressive.advised", "a service taking production traffic (public_gateway or clb) with more than one "
                                "deployment gates its weight changes and redeploys with a progressive policy",
         Severity.WARNING),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}
assert len(RULES) == len(_RULES), "duplicate rule id"

"""The spec: pydantic models of every domain rule, one `validate` entry point, the stack file. Pure: no I/O but
explicit file loading, no globals, nothing of ours beyond this package."""

from .defaults import DEFAULT_INVENTORY_DATA, default_inventory
from .findings import SECRET_MASK, Finding, Report, Severity, SpecError
from .inventory import (
    ComputeSpec,
    IngressRule,
    Inventory,
    Machine,
    PresetImage,
    Prices,
    Queue,
    ResourceGroup,
    SecurityGroup,
    Subnet,
    Vpc,
)
from .rules import RULES, Rule
from .service import (
    DEFAULT_KEY,
    DEFAULT_NAME,
    STANDARD_ROLE,
    Autoscaling,
    ConsistentHash,
    Deployment,
    DeploymentPorts,
    EnvVar,
    HeaderRule,
    HttpAction,
    Image,
    MetricRule,
    Mirror,
    ModelSource,
    Mount,
    Probe,
    Probes,
    Role,
    RollingUpdate,
    Schedule,
    Service,
    TcpAction,
    Traffic,
)
from .stack import (
    KubernetesOptions,
    LoadedStack,
    StackFile,
    StackFileError,
    dump_yaml,
    json_schema,
    load_file,
    load_text,
    validate_stack,
)
from .types import UNKNOWN
from .validate import inventory_findings, service_findings, validate

__all__ = [
    "DEFAULT_INVENTORY_DATA", "DEFAULT_KEY", "DEFAULT_NAME", "RULES", "SECRET_MASK", "STANDARD_ROLE", "UNKNOWN",
    "Autoscaling", "ComputeSpec", "ConsistentHash", "Deployment", "DeploymentPorts", "EnvVar", "Finding",
    "HeaderRule", "HttpAction", "Image", "IngressRule", "Inventory", "KubernetesOptions", "LoadedStack", "Machine",
    "MetricRule", "Mirror", "ModelSource", "Mount", "PresetImage", "Prices", "Probe", "Probes", "Queue", "Report",
    "ResourceGroup", "Role", "RollingUpdate", "Rule", "Schedule", "SecurityGroup", "Service", "Severity",
    "SpecError", "StackFile", "StackFileError", "Subnet", "TcpAction", "Traffic", "Vpc", "default_inventory",
    "dump_yaml", "inventory_findings", "json_schema", "load_file", "load_text", "service_findings", "validate",
    "validate_stack",
]

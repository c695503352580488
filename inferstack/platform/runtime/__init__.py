"""The embedded platform's process runtime: instances as local processes, their probes, and role rollouts."""

from inferstack.platform.runtime.controller import RoleController
from inferstack.platform.runtime.endpoints import role_endpoints_env, write_role_endpoints
from inferstack.platform.runtime.probes import (
    DEFAULT_READINESS,
    Exec,
    HttpGet,
    Probe,
    ProbeResult,
    Probes,
    ProbeState,
    ProbeTarget,
    TcpSocket,
    check,
)
from inferstack.platform.runtime.process import InstanceProcess, Termination, free_port, process_start_time
from inferstack.platform.runtime.status import Condition, InstanceRecord, RoleStatus, RuntimeEvent
from inferstack.platform.runtime.template import INHERITED_ENV, Mount, RoleTemplate, RollingUpdate
from inferstack.platform.runtime.tree import ProcessTree

__all__ = [
    "DEFAULT_READINESS",
    "INHERITED_ENV",
    "Condition",
    "Exec",
    "HttpGet",
    "InstanceProcess",
    "InstanceRecord",
    "Mount",
    "Probe",
    "ProbeResult",
    "ProbeState",
    "ProbeTarget",
    "Probes",
    "ProcessTree",
    "RoleController",
    "RoleStatus",
    "RoleTemplate",
    "RollingUpdate",
    "RuntimeEvent",
    "TcpSocket",
    "Termination",
    "check",
    "free_port",
    "process_start_time",
    "role_endpoints_env",
    "write_role_endpoints",
]

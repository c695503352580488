"""The kubernetes target: the spec rendered to Kubernetes objects (`render`, pure) and, in `component`, registered
as pulumi-kubernetes resources. Importing this package does not import pulumi: import `.component` for that."""

from .names import label_value, object_name, workload_name
from .render import (
    KIND_ORDER,
    RenderError,
    RenderOptions,
    RenderResult,
    cluster_objects,
    file_name,
    priority_class_objects,
    render,
    render_service,
    to_yaml,
)

__all__ = [
    "KIND_ORDER", "RenderError", "RenderOptions", "RenderResult", "cluster_objects", "file_name", "label_value",
    "object_name", "priority_class_objects", "render", "render_service", "to_yaml", "workload_name",
]

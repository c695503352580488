"""The local target: the embedded platform's HTTP client (`client`), and the Pulumi layer built on it — dynamic
providers (`providers`, with `connection`, `convergence`, `provider_errors` and the Pulumi-free `pulumi_glue`) and the
resources that use them (`resources`). Only the client is imported here: the Pulumi modules need `pulumi`."""

from .client import PlatformClient, PlatformError, PlatformUnreachable, WaitError

__all__ = ["PlatformClient", "PlatformError", "PlatformUnreachable", "WaitError"]

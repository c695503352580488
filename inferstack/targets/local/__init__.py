"""The local target: the embedded platform's HTTP client (and, later, the Pulumi dynamic providers built on it)."""

from .client import PlatformClient, PlatformError, PlatformUnreachable, WaitError

__all__ = ["PlatformClient", "PlatformError", "PlatformUnreachable", "WaitError"]

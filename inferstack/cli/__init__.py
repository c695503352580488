"""`inferstack`: the command line. Each module of this package adds its commands to `app`."""

from __future__ import annotations

import importlib
import pkgutil

from .app import app

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["app"]

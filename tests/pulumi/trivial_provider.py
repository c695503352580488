"""A provider of the harness's own, to show the harness drives a dynamic provider as the engine does: one JSON file
per resource in a directory named by stack config. Importable by the provider process (PYTHONPATH)."""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

from pulumi import dynamic

_DIRS: weakref.WeakKeyDictionary[dynamic.ResourceProvider, dict[str, Any]] = weakref.WeakKeyDictionary()


class FileProvider(dynamic.ResourceProvider):
    def configure(self, req: dynamic.ConfigureRequest) -> None:
        _DIRS[self] = {"dir": req.config.get("test:dir"), "token": req.config.get("test:token")}

    def _path(self, name: str) -> Path:
        return Path(_DIRS[self]["dir"]) / f"{name}.json"

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = [] if news.get("name") else [dynamic.CheckFailure("name", "a name is required [name.required]")]
        return dynamic.CheckResult(news, failures)

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        replaces = ["name"] if olds.get("name") != news.get("name") else []
        return dynamic.DiffResult(changes=olds.get("value") != news.get("value") or bool(replaces),
                                  replaces=replaces, delete_before_replace=bool(replaces))

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        body = {"name": props["name"], "value": props.get("value")}
        self._path(props["name"]).write_text(json.dumps(body))
        return dynamic.CreateResult(props["name"], {**body, "authorized": _DIRS[self]["token"] == "s3cret"})

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(self.create(news).outs)

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        path = self._path(id_)
        if not path.exists():
            return dynamic.ReadResult("", {})
        return dynamic.ReadResult(id_, {**props, **json.loads(path.read_text())})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        self._path(id_).unlink()

"""YAML text in and out: one parse that yields the data *and* the node tree (line numbers), fast dumps.

Speed (issue #18: a stack file of 1 000 services parses in well under a second):
- libyaml's C parser builds the node tree when PyYAML has it (`yaml.__with_libyaml__`), else PyYAML's own parser
  does. Plain scalars are resolved once per distinct value (the resolver's regexes cost more than the parse).
- The data is built from that tree by a small constructor for the shapes a stack file has (mappings with scalar
  keys, sequences, strings, numbers, booleans, nulls); scalars are constructed once per distinct (tag, text).
  Anything else — anchors and aliases, merge keys, timestamps, explicit tags — goes to PyYAML's full constructor
  over the same tree, so the result is always exactly what `yaml.safe_load` gives (plus the duplicate-key rule).
- The garbage collector is paused while the tree and the data are built (`paused_gc`): they are acyclic, and
  collections that rescan hundreds of thousands of young objects made parsing superlinear.
- Errors are always PyYAML's own: when the C path fails for any reason, the pure-Python loader parses the text again,
  so messages, marks and hints do not depend on whether libyaml is installed.

Dumps use libyaml's emitter when available; the rare text it would emit differently from PyYAML's (characters beyond
U+FFFF, which libyaml escapes) is dumped by PyYAML's emitter, so the output is byte-identical either way.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

WITH_LIBYAML: bool = bool(getattr(yaml, "__with_libyaml__", False))

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
# Scalar tags whose construction depends on the text only (so one construction serves every equal scalar).
_PLAIN_SCALARS = frozenset(
    ["tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"]
)


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside (restored after): for building large acyclic structures at once."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class YAMLNestingError(yaml.YAMLError):
    """The document nests deeper than the parser can follow."""


def _construct_mapping(loader: yaml.SafeLoader, node: MappingNode, deep: bool = False) -> dict:
    """PyYAML's mapping constructor, refusing repeated keys (a repeated key would silently override the first)."""
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # PyYAML's own check, which the duplicate check below would pre-empt
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key '{key}'", key_node.start_mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


class PyLoader(yaml.SafeLoader):
    """Safe YAML (pure Python) that rejects duplicate keys. Its errors are the ones users see."""


PyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

if WITH_LIBYAML:

    class CLoader(yaml.CSafeLoader):  # type: ignore[name-defined,misc]
        """Safe YAML on libyaml's parser, rejecting duplicate keys; plain scalars resolved once per value."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._resolved: dict[str, str] = {}

        def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
            # For a plain scalar the tag depends on its text alone (there are no path resolvers in safe loaders).
            if kind is ScalarNode and implicit[0]:
                tag = self._resolved.get(value)
                if tag is None:
                    tag = self._resolved[value] = super().resolve(kind, value, implicit)
                return tag
            return super().resolve(kind, value, implicit)

    CLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Unusual(Exception):
    """The tree has something the fast constructor leaves to PyYAML's (aliases, merge keys, other tags)."""


def _construct_fast(root: Node, loader: yaml.SafeLoader) -> Any:
    """The data of a tree of plain mappings, sequences and simple scalars, as PyYAML's safe constructor builds it.
    Raises _Unusual for anything else, and ConstructorError for a repeated key."""
    scalars: dict[tuple[str, str], Any] = {}
    seen: set[int] = set()

    def build(node: Node) -> Any:
        kind = node.__class__
        if kind is ScalarNode:
            tag = node.tag
            if tag == _STR:
                return node.value
            key = (tag, node.value)
            try:
                return scalars[key]
            except KeyError:
                if tag not in _PLAIN_SCALARS:
                    raise _Unusual from None
                value = scalars[key] = loader.construct_object(node)
                return value
        if id(node) in seen:  # an alias: the same node twice
            raise _Unusual
        seen.add(id(node))
        if kind is MappingNode:
            if node.tag != _MAP:
                raise _Unusual
            mapping: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.__class__ is not ScalarNode:
                    raise _Unusual
                key = build(key_node)
                if key in mapping:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found duplicate key '{key}'",
                        key_node.start_mark)
                mapping[key] = build(value_node)
            return mapping
        if kind is SequenceNode:
            if node.tag != _SEQ:
                raise _Unusual
            return [build(item) for item in node.value]
        raise _Unusual

    return build(root)


def _parse_with(loader_class: type, text: str, fast: bool) -> tuple[Any, Node | None]:
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        if fast:
            try:
                return _construct_fast(root, loader), root
            except _Unusual:
                pass
        return loader.construct_document(root), root
    except RecursionError as exc:
        raise YAMLNestingError("the document nests too deeply to be read (lists or mappings inside one another "
                               "hundreds of levels deep)") from exc
    finally:
        loader.dispose()


def parse(text: str) -> tuple[Any, Node | None]:
    """The document's data and its node tree, from one parse. Raises yaml.YAMLError (PyYAML's own, see above)."""
    with paused_gc():
        if WITH_LIBYAML:
            try:
                return _parse_with(CLoader, text, fast=True)
            except Exception:  # noqa: BLE001, S110 - any failure: the pure-Python loader decides, with its own message
                pass
        return _parse_with(PyLoader, text, fast=True)


# Mapping keys both emitters write alike: printable ASCII, not empty, short (PyYAML writes others as `? key`, libyaml
# not always). Known ones are remembered; bounded.
_SIMPLE_KEYS: set[str] = set()
_SIMPLE_KEYS_LIMIT = 1 << 16


def _simple_key(key: str) -> bool:
    simple = 0 < len(key) < 128 and key.isascii() and key.isprintable()
    if simple and len(_SIMPLE_KEYS) < _SIMPLE_KEYS_LIMIT:
        _SIMPLE_KEYS.add(key)
    return simple


# (scalar text, implicit flags) -> the tag the safe resolver gives it: the same for every dump, so shared; bounded.
_DUMP_TAGS: dict[tuple[str, tuple[bool, bool]], str] = {}
_DUMP_TAGS_LIMIT = 1 << 16


class _FastDumping:
    """For the dumpers below: plain data (dict, list, str, int, bool, None) represented without PyYAML's generic
    dispatch (type lookups, alias bookkeeping), and scalar tags resolved once per (text, implicit) for all dumps —
    the emitter asks twice per scalar. The nodes are the ones SafeRepresenter builds with `sort_keys=False`,
    `default_flow_style=False`; anything else (floats, other types) goes through SafeRepresenter."""

    def __init__(self, stream: Any, **options: Any) -> None:
        super().__init__(stream, **options)
        self.output = stream  # an _Output: told when libyaml's emitter would write something otherwise than PyYAML's

    def ignore_aliases(self, data: Any) -> bool:
        return True  # plain YAML: no anchors or aliases, whatever the data shares

    def represent_data(self, data: Any) -> Node:
        kind = type(data)
        if kind is str:
            return ScalarNode(_STR, data)
        if kind is dict:
            for key in data:
                if key.__class__ is str and key not in _SIMPLE_KEYS and not _simple_key(key):
                    self.output.pyyaml_emits_differently = True  # e.g. `'': v` where PyYAML writes `? ''\n: v`
            represent = self.represent_data
            return MappingNode(_MAP, [(represent(k), represent(v)) for k, v in data.items()], flow_style=False)
        if kind is list:
            represent = self.represent_data
            return SequenceNode(_SEQ, [represent(item) for item in data], flow_style=False)
        if kind is bool:
            return ScalarNode("tag:yaml.org,2002:bool", "true" if data else "false")
        if kind is int:
            return ScalarNode("tag:yaml.org,2002:int", str(data))
        if data is None:
            return ScalarNode("tag:yaml.org,2002:null", "null")
        return super().represent_data(data)  # type: ignore[misc]

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is not ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[misc]
        key = (value, implicit)
        tag = _DUMP_TAGS.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)  # type: ignore[misc]
            if len(_DUMP_TAGS) < _DUMP_TAGS_LIMIT:
                _DUMP_TAGS[key] = tag
        return tag


if WITH_LIBYAML:

    class _CDumper(_FastDumping, yaml.CSafeDumper):  # type: ignore[name-defined,misc]
        """Plain YAML on libyaml's emitter."""


class _PyDumper(_FastDumping, yaml.SafeDumper):
    """Plain YAML on PyYAML's emitter."""


def dump(data: Any, *, width: int = 80) -> str:
    """`data` (a mapping or list of plain values) as block-style YAML, keys in their order, Unicode unescaped.

    The same text whether libyaml is installed or not: what libyaml's emitter would write differently — characters
    beyond U+FFFF (it escapes them), keys that are empty, long or not printable ASCII, a bare scalar document — is
    written by PyYAML's emitter."""
    options = {"sort_keys": False, "allow_unicode": True, "default_flow_style": False, "width": width}
    if WITH_LIBYAML and isinstance(data, dict | list):
        output = _Output()
        yaml.dump(data, output, Dumper=_CDumper, **options)
        text = output.getvalue()
        if not output.pyyaml_emits_differently and "\\U" not in text:
            return text
    output = _Output()  # PyYAML's emitter never sets the flag; _Output only because the dumpers expect one
    yaml.dump(data, output, Dumper=_PyDumper, **options)
    return output.getvalue()


class _Output(io.StringIO):
    """Where a dump is written, and whether PyYAML's emitter must write it instead (see _FastDumping)."""

    pyyaml_emits_differently = False


__all__ = ["WITH_LIBYAML", "YAMLNestingError", "dump", "parse", "paused_gc"]

"""YAML text: one parse on libyaml gives exactly what the pure-Python loader (the previous implementation) gives,
and PyYAML's own errors; dumps of mappings are byte-identical to SafeDumper's."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from inferstack.spec import StackFileError, load_text, yaml_text
from inferstack.spec.stack import parse_yaml

SAME_AS_PYYAML = [
    "a: 1\nb: [x, 'y', \"z\"]\nc: {d: null, e: ~}\n",
    "a: &x {k: 1}\nb: *x\n",  # aliases: left to PyYAML's constructor
    "when: 2001-12-14\nbinary: !!binary aGVsbG8=\n",
    "a: 0x1f\nb: 0o17\nc: 1_000\nd: +12\ne: 1:20\nf: .nan\ng: -.inf\nh: 1e3\n",
    "a: yes\nb: No\nc: 'yes'\nd: ''\n",
    "\ufeffa: 1\n",
    "a: |\n  x\n  y\nb: >-\n  folded\n  text\n",
    "1: one\n2.5: two\nfalse: three\n",
    "",
    "# only a comment\n",
]


@pytest.mark.parametrize("text", SAME_AS_PYYAML)
def test_data_is_what_the_pure_python_loader_gives(text: str) -> None:
    data, _ = parse_yaml(text)
    expected = yaml.load(text, Loader=yaml_text.PyLoader)  # a safe loader: SafeLoader + the duplicate-key rule
    assert repr(data) == repr(expected)


def test_the_node_tree_gives_line_numbers_from_the_same_parse() -> None:
    loaded = load_text("services:\n  - name: a\n    deployments:\n      - name: d\n        replicas: -1\n")
    assert loaded.root is not None
    assert any(f.line == 5 for f in loaded.report.findings if "replicas" in f.path)


@pytest.mark.parametrize(("text", "problem"), [
    ("a: 1\na: 2\n", "found duplicate key 'a'"),
    ("1: a\ntrue: b\n", "found duplicate key 'True'"),  # 1 == True, as in a Python dict
    ("? [1]\n: 2\n", "found unhashable key"),  # was a TypeError traceback
    ("a:\n\t- 1\n", "found character '\\t' that cannot start any token"),
    ("a: [1, 2\n", "expected ',' or ']'"),
    ("base: &b {x: 1}\nmerged:\n  <<: *b\n", "could not determine a constructor for the tag"),  # as before
])
def test_errors_are_pyyamls_own_with_line_and_column(text: str, problem: str) -> None:
    with pytest.raises(StackFileError) as caught:
        parse_yaml(text, "s.yaml")
    assert problem in str(caught.value)
    assert caught.value.line is not None


def test_control_characters_are_unreadable() -> None:
    with pytest.raises(StackFileError, match="unacceptable character #x0001"):
        parse_yaml("a: \x01\n", "s.yaml")


def test_a_document_nested_too_deeply_is_an_unreadable_file_not_a_crash() -> None:
    with pytest.raises(StackFileError, match="nests too deeply"):
        parse_yaml("[" * 5000 + "]" * 5000, "deep.yaml")


def test_libyaml_is_used_when_pyyaml_has_it() -> None:
    assert yaml_text.WITH_LIBYAML == bool(getattr(yaml, "__with_libyaml__", False))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=False, allow_infinity=True), st.text(max_size=30))
_data = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)


class _SafeNoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), _data, max_size=5), st.sampled_from([80, 4096]))
def test_dumps_are_byte_identical_to_safedumper(data: dict, width: int) -> None:
    expected = yaml.dump(data, Dumper=_SafeNoAliases, sort_keys=False, allow_unicode=True, default_flow_style=False,
                         width=width)
    assert yaml_text.dump(data, width=width) == expected


def test_characters_beyond_the_basic_plane_are_written_as_they_are() -> None:
    assert yaml_text.dump({"emoji": "🙂 ok"}) == "emoji: 🙂 ok\n"

"""The config file's two YAML loaders (libyaml's parser and PyYAML's pure-Python one) give the
same nodes, marks and errors, so the fast path changes nothing a user can see."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cachelayer.core import yamlload
from cachelayer.errors import ConfigError
from cachelayer.testing.sample import SAMPLE_CONFIG_YAML

ROOT = Path(__file__).resolve().parent.parent
needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")

# Config files as people write them: libyaml parses each of them itself.
TYPICAL: List[str] = [
    SAMPLE_CONFIG_YAML,
    (ROOT / "examples/functions/python/config.yaml").read_text(),
    (ROOT / "examples/functions/node/config.yaml").read_text(),
    "# only a comment\n",
    "---\n...\n",
    "cache:\n  ttl: 5m\n  max_bytes: 64MiB\n  refresh_ahead: 20%\n  init_startup: yes\n",
    "base: &b {region: eu-west-1, ttl: 30s}\nparameters:\n  - <<: *b\n    names: [a, b]\n",
    "x: &x {a: 1}\ny: &y {b: 2}\nm:\n  <<: [*x, *y]\n  c: 3\n",
    "s:\n  - 'single ''quoted'''\n  - \"double \\t \\u00e9 \\U0001F600\"\n  - plain text\n",
    "lit: |\n  line one\n  line two\nfold: >-\n  folded\n  text\nkeep: |+\n  kept\n\n",
    "unicode: é ü 中文 😀\nkey with spaces: 'value: with colon'\n",
    "crlf: a\r\nnext: b\r\n",
    "nel: a\x85next: b\n",
    "ls: a\u2028next: b\u2029last: c\n",
    "flow: {a: [1, {b: 2}], c: d}\nplain: a?b,c[d]\n",
    "? complex key\n: value\n? [a, b]\n: flow key\n",
    "empty:\nnull: ~\nlist:\n-\n- ''\nindented:\n  - x\n",
    "%YAML 1.1\n---\ndirective: yes\n",
    "deep: " + "[" * 63 + "]" * 63 + "\n",
    "numbers: [0x1F, 0o17, 1_000, 1.5e3, .inf, -.NaN, 2001-12-14]\n",
    "long: " + "x" * 5000 + "\n",
]
# And texts where the two scanners differ, which PyYAML reads instead (tabs, a byte-order mark,
# explicit tags, plain scalars in flow context that PyYAML ends early, no final line break).
CORPUS: List[str] = [
    *TYPICAL,
    (ROOT / "deploy/template.yaml").read_text(),  # CloudFormation's !Ref and !Sub tags
    "",
    "tags: [!!str 1, !!int '2', !!float 3, !!bool 'true', !!null '']\n",
    "\ufeffbom: first\n",
    "tabs:\tafter\n",
    "# a comment\twith a tab\na: 1\n",
    "flow: [a?b, c]\n",
    "flow: {a: , b: }\n",
    "no final break: x",
]

# Texts each loader must refuse, with PyYAML's message and line either way.
BAD: List[str] = [
    "[" * 10000,
    "parameters:\n" + "- " * 5000 + "x\n",
    "{a: " * 3000,
    "cache:\n  ttl: 1s\x01\n",
    'cache:\n  ttl: "\\U99999999"\n',
    "a: [1, 2\nb: 3\n",
    "a: b: c\n",
    "a:\n  - b\n c: d\n",
    "*undefined\n",
    "a: 1\n---\nb: 2\n",
    "a: 'unterminated\n",
    "\tindented: with a tab\n",
    "a: @reserved\n",
    "deep: " + "[" * 65 + "]" * 65 + "\n",
]


# Damage for dumped documents: every indicator, and the pieces where the scanners differ.
DAMAGE: List[str] = [
    *"[]{}-:,&*!|>'\"#\t\n ?%@`~\\",
    *[" #", ": ", "\n  ", "---\n", "...\n", "- ", "? ", "\r\n", "\x85", "\u2028", "&a ", "*a"],
    *["<<: ", "!!str ", "|\n", ">-\n", '"a\\nb"', "'x''y'", "é", "😀", "\ufeff", "\x01"],
]


def tree(node: Any) -> Any:
    """A node tree as plain data: kind, tag, value, style and both marks of every node."""
    if node is None:
        return None
    marks = tuple((m.name, m.index, m.line, m.column) for m in (node.start_mark, node.end_mark))
    base: Tuple[Any, ...] = (type(node).__name__, node.tag, marks)
    if isinstance(node, ScalarNode):
        return (*base, node.value, node.style)
    if isinstance(node, SequenceNode):
        return (*base, node.flow_style, [tree(n) for n in node.value])
    assert isinstance(node, MappingNode)
    return (*base, node.flow_style, [(tree(k), tree(v)) for k, v in node.value])


def outcome(text: str, use_libyaml: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What ``compose`` gives for ``text`` with one loader: the tree, or the error and its
    marks' lines."""
    monkeypatch.setattr(yamlload, "USE_LIBYAML", use_libyaml)
    try:
        return ("nodes", tree(yamlload.compose(text)))
    except yaml.MarkedYAMLError as exc:
        at = [(m.line, m.column) if m else None for m in (exc.context_mark, exc.problem_mark)]
        return ("error", type(exc).__name__, exc.context, exc.problem, at)
    except (yaml.YAMLError, ValueError) as exc:
        return ("error", type(exc).__name__, str(exc))


@needs_libyaml
class TestSameNodes:
    @pytest.mark.parametrize("index", range(len(CORPUS)))
    def test_each_config_composes_to_the_same_tree_and_marks(
        self, index: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every text of the corpus gives node for node the same kinds, tags, values, styles
        and start/end marks (index, line, column) through libyaml as through PyYAML (or, for
        the few PyYAML refuses, the same error)."""
        text = CORPUS[index]
        fast = outcome(text, True, monkeypatch)
        assert fast[0] == "nodes" or text not in TYPICAL, fast
        assert fast == outcome(text, False, monkeypatch)

    def test_libyaml_parses_the_valid_files(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With libyaml present a config as people write it never reaches the pure-Python
        loader (the fast path is really taken)."""

        def refuse(text: str) -> None:
            raise AssertionError("the pure-Python loader was used")

        monkeypatch.setattr(yamlload, "_compose_pure", refuse)
        for text in TYPICAL:
            yamlload.compose(text)

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        doc=st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
            lambda inner: st.one_of(
                st.lists(inner, max_size=4),
                st.dictionaries(st.text(max_size=8), inner, max_size=4),
            ),
            max_leaves=20,
        ),
        flow=st.sampled_from([None, True, False]),
        damage=st.lists(
            st.tuples(st.integers(0, 10_000), st.sampled_from(DAMAGE)),
            max_size=3,
        ),
    )
    def test_dumped_and_damaged_documents_give_the_same_outcome(
        self, doc: Any, flow: Any, damage: List[Tuple[int, str]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Any document PyYAML dumps, in either style and with a few characters of damage,
        composes to the same tree with both loaders, or fails with the same error: libyaml
        never accepts a text PyYAML refuses."""
        text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)
        for at, char in damage:
            at %= len(text) + 1
            text = text[:at] + char + text[at:]
        assert outcome(text, True, monkeypatch) == outcome(text, False, monkeypatch)


class TestSameErrors:
    @pytest.mark.parametrize("use_libyaml", [True, False], ids=["libyaml", "pure"])
    @pytest.mark.parametrize("index", range(len(BAD)))
    def test_a_bad_file_reads_the_same_with_either_loader(
        self, index: int, use_libyaml: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file that is not valid YAML (or nests too deep, or holds a control character or a
        bad escape) is the same ConfigError, message and line, whichever loader runs."""
        if use_libyaml and not yaml.__with_libyaml__:
            pytest.skip("PyYAML built without libyaml")
        path = tmp_path / "config.yaml"
        path.write_text(BAD[index], encoding="utf-8")
        errors = []
        for flag in (use_libyaml, False):
            monkeypatch.setattr(yamlload, "USE_LIBYAML", flag)
            with pytest.raises(ConfigError) as info:
                yamlload.load_yaml(str(path))
            errors.append((str(info.value), info.value.line))
        assert errors[0] == errors[1]
        assert errors[0][1] is not None, errors[0]

    def test_without_libyaml_the_pure_python_loader_reads_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When PyYAML has no libyaml the pure-Python loader is used and gives the same nodes."""

        def refuse(text: str) -> None:
            raise AssertionError("libyaml was used")

        monkeypatch.setattr(yamlload, "USE_LIBYAML", False)
        monkeypatch.setattr(yamlload, "_compose_libyaml", refuse)
        path = tmp_path / "config.yaml"
        path.write_text(SAMPLE_CONFIG_YAML)
        node: Node = yamlload.load_yaml(str(path))
        assert isinstance(node, MappingNode)
        assert [k.value for k, _ in node.value] == ["parameters", "dynamodb"]

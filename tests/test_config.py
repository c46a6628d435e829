"""Config file and environment: YAML validated against typed schemas, env vars, Settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

import attrs
import pytest
import yaml

from cachelayer import ConfigError, Duration, PluginError
from cachelayer.core import config as config_module
from cachelayer.core.config import (
    ByteSize,
    CacheSettings,
    Ratio,
    Settings,
    describe,
    load_settings,
    load_yaml,
    plugin_filters,
    structure,
)
from cachelayer.testing.sample import SAMPLE_CONFIG_YAML

# Captured before the autouse fixture below points the default at a temporary directory.
REAL_DEFAULT_CONFIG_PATH = config_module.DEFAULT_CONFIG_PATH

# ---- A schema shaped like the sample's, defined here (the real providers own theirs). ----


@attrs.frozen
class ParameterGroup:
    names: List[str]
    region: Optional[str] = None
    ttl: Optional[Duration] = None


def _key_type(instance: Any, attribute: Any, value: str) -> None:
    if value not in ("S", "N", "B"):
        raise ValueError(f"{attribute.name} must be S, N or B", attribute)


@attrs.frozen
class TableItem:
    table: str
    hashkey: str
    hashkeyvalue: str
    hashkeytype: str = attrs.field(default="S", validator=_key_type)
    sortkey: Optional[str] = None
    sortkeytype: Literal["S", "N", "B"] = "S"
    sortkeyvalue: Optional[str] = None
    ttl: Optional[Duration] = None

    def __attrs_post_init__(self) -> None:
        if (self.sortkey is None) != (self.sortkeyvalue is None):
            raise ValueError("sortkey and sortkeyvalue go together: set both or neither")


SCHEMAS: Dict[str, Any] = {
    "parameters": List[ParameterGroup],
    "secrets": List[ParameterGroup],
    "dynamodb": List[TableItem],
}


@attrs.frozen
class Aliased:
    region_name: str = attrs.field(metadata={"yaml": "region"})
    _secret_ref: str = attrs.field(default="x", metadata={"yaml": "ref"})


@attrs.frozen
class RaisesConfigError:
    name: str

    def __attrs_post_init__(self) -> None:
        raise ConfigError("names must be unique; remove the duplicate", key="name")


@attrs.frozen
class Inner:
    value: int


@attrs.frozen
class Kinds:
    text: Optional[str] = None
    number: Optional[int] = None
    real: Optional[float] = None
    flag: Optional[bool] = None
    duration: Optional[Duration] = None
    size: Optional[ByteSize] = None
    ratio: Optional[Ratio] = None
    anything: Any = None
    pair: Optional[Tuple[str, int]] = None
    many: Optional[Tuple[str, ...]] = None
    table: Optional[Dict[str, int]] = None
    either: Union[str, Inner, None] = None
    number_or_duration: Union[int, Duration, None] = None
    inner_list: Optional[List[Inner]] = None


@attrs.frozen
class Unresolvable:
    thing: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821 - the test's point


def node(text: str) -> yaml.Node:
    """Compose a YAML snippet into nodes."""
    result = yaml.compose(text, Loader=yaml.SafeLoader)
    assert result is not None
    return result


def kinds(text: str) -> Kinds:
    """Structure a snippet against Kinds."""
    return structure(node(text), Kinds, source="t.yaml", path="")


# What the built-in providers declare (ttl_environment_variable), as the app passes it.
AWS_TTL_VARIABLES = {"SSM_PARAMETER_STORE_TTL": "parameters", "SECRETS_MANAGER_TTL": "secrets"}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def settings(
    tmp_path: Path,
    text: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
    **kw: Any,
) -> Settings:
    """load_settings with a file holding ``text`` (none when None) and the given environment."""
    env = {"AWS_SESSION_TOKEN": "tok"}
    env.update(environ or {})
    if text is not None and "config_path" not in kw:
        kw["config_path"] = write(tmp_path, text)
    return load_settings(env, kw.pop("schemas", SCHEMAS), **kw)


@pytest.fixture(autouse=True)
def _default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the default config path at a file that does not exist (not the host's /var/task)."""
    monkeypatch.setattr(
        config_module, "DEFAULT_CONFIG_PATH", str(tmp_path / "var-task" / "config.yaml")
    )


# ---------------------------------------------------------------------------------------------


class TestLoadYaml:
    def test_lines_are_kept(self, tmp_path: Path) -> None:
        """Every node keeps its 1-based line for error messages."""
        root = load_yaml(write(tmp_path, "# comment\nparameters:\n  - names: [a]\n"))
        key, value = root.value[0]
        assert key.value == "parameters"
        assert key.start_mark.line + 1 == 2
        assert value.value[0].start_mark.line + 1 == 3

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming the path and how to fix it."""
        path = str(tmp_path / "nope.yaml")
        with pytest.raises(ConfigError) as info:
            load_yaml(path)
        assert info.value.source == path
        assert "not found" in str(info.value)
        assert "CACHE_EXTENSION_CONFIG" in str(info.value)

    def test_directory(self, tmp_path: Path) -> None:
        """A directory instead of a file is a ConfigError."""
        with pytest.raises(ConfigError, match="is a directory"):
            load_yaml(str(tmp_path))

    @pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A file without read permission is a ConfigError mentioning permissions."""
        path = write(tmp_path, "parameters: []\n")
        os.chmod(path, 0)
        with pytest.raises(ConfigError, match="permissions"):
            load_yaml(path)

    def test_os_error(self, tmp_path: Path) -> None:
        """Any other OS error while reading is a ConfigError with the system's reason."""
        path = write(tmp_path, "a: 1\n", "plain.yaml") + "/config.yaml"
        with pytest.raises(ConfigError, match="cannot read config file: Not a directory") as info:
            load_yaml(path)
        assert info.value.source == path

    def test_not_utf8(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are a ConfigError asking to save as UTF-8."""
        path = tmp_path / "config.yaml"
        path.write_bytes(b"parameters:\n  - names: [\xff]\n")
        with pytest.raises(ConfigError, match="not valid UTF-8"):
            load_yaml(str(path))

    def test_syntax_error_has_line_and_column(self, tmp_path: Path) -> None:
        """A YAML syntax error names the line and column."""
        path = write(tmp_path, "parameters:\n  - names: x\n    bogus: : y\n")
        with pytest.raises(ConfigError) as info:
            load_yaml(path)
        assert info.value.line == 3
        assert "line 3, column" in str(info.value)
        assert str(info.value).startswith(f"{path}:3: YAML syntax error")

    def test_tab_indentation(self, tmp_path: Path) -> None:
        """Tabs for indentation are a syntax error with a hint about spaces."""
        with pytest.raises(ConfigError, match="indent with spaces"):
            load_yaml(write(tmp_path, "parameters:\n\t- names: [a]\n"))

    def test_two_documents(self, tmp_path: Path) -> None:
        """A second YAML document is refused instead of being ignored."""
        with pytest.raises(ConfigError, match="single document"):
            load_yaml(write(tmp_path, "a: 1\n---\nb: 2\n"))

    @pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
    def test_empty_file_is_an_empty_mapping(self, tmp_path: Path, text: str) -> None:
        """An empty file is treated as an empty mapping."""
        root = load_yaml(write(tmp_path, text))
        assert isinstance(root, yaml.MappingNode)
        assert root.value == []

    @pytest.mark.parametrize(("text", "got"), [("- a\n", "a list"), ("hello\n", "'hello'")])
    def test_top_level_must_be_a_mapping(self, tmp_path: Path, text: str, got: str) -> None:
        """A top level that is not a mapping is refused, saying what it is."""
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_yaml(path)
        assert info.value.line == 1
        assert "must be a mapping of sections" in str(info.value)
        assert got in str(info.value)


class TestStrings:
    @pytest.mark.parametrize(
        ("raw", "text"),
        [
            ("0123", "0123"),
            ("123", "123"),
            ("1.50", "1.50"),
            ("true", "true"),
            ("yes", "yes"),
            ("'quoted'", "quoted"),
            ("2024-01-01", "2024-01-01"),
            ("0x1F", "0x1F"),
        ],
    )
    def test_raw_text(self, raw: str, text: str) -> None:
        """A string field takes the scalar's text as written, so numbers keep their digits."""
        assert kinds(f"text: {raw}\n").text == text

    def test_null_string_is_an_error_when_required(self) -> None:
        """An empty value for a required string is an error asking for a value."""
        with pytest.raises(ConfigError) as info:
            structure(node("value:\n"), Dict[str, str], source="t.yaml", path="x")
        assert info.value.key == "x.value"
        assert "needs a value" in str(info.value)

    @pytest.mark.parametrize(("raw", "got"), [("[a, b]", "a list"), ("{a: 1}", "a mapping")])
    def test_non_scalar(self, raw: str, got: str) -> None:
        """A list or mapping where a string is expected is an error saying what was found."""
        with pytest.raises(ConfigError, match=f"expected a string, got {got}"):
            kinds(f"text: {raw}\n")

    def test_custom_tag_is_refused(self) -> None:
        """A non-standard YAML tag is an error, not silently dropped."""
        with pytest.raises(ConfigError, match="unsupported YAML tag '!secret'"):
            kinds("text: !secret abc\n")


class TestNumbersAndBooleans:
    @pytest.mark.parametrize(
        ("raw", "value"), [("5", 5), ("-3", -3), ("1_000", 1000), ("'42'", 42)]
    )
    def test_int(self, raw: str, value: int) -> None:
        """Integers are accepted as YAML ints or digit strings."""
        assert kinds(f"number: {raw}\n").number == value

    @pytest.mark.parametrize("raw", ["1.5", "abc", "true", "[1]"])
    def test_bad_int(self, raw: str) -> None:
        """Anything but an integer is refused for an int field."""
        with pytest.raises(ConfigError, match="expected an integer"):
            kinds(f"number: {raw}\n")

    @pytest.mark.parametrize(
        ("raw", "value"), [("0.5", 0.5), ("2", 2.0), ("1e3", 1000.0), ("-1.25", -1.25)]
    )
    def test_float(self, raw: str, value: float) -> None:
        """Floats accept YAML floats, ints and exponent forms PyYAML leaves as strings."""
        assert kinds(f"real: {raw}\n").real == value

    @pytest.mark.parametrize(("raw", "message"), [("abc", "expected a number"), (".nan", "finite")])
    def test_bad_float(self, raw: str, message: str) -> None:
        """A non-number or a NaN is refused for a float field."""
        with pytest.raises(ConfigError, match=message):
            kinds(f"real: {raw}\n")

    @pytest.mark.parametrize(
        ("raw", "value"),
        [
            ("true", True),
            ("false", False),
            ("yes", True),
            ("off", False),
            ("1", True),
            ("F", False),
            ("TRUE", True),
            ("t", True),
        ],
    )
    def test_bool(self, raw: str, value: bool) -> None:
        """Booleans accept YAML's spellings and Go's."""
        assert kinds(f"flag: {raw}\n").flag is value

    @pytest.mark.parametrize("raw", ["maybe", "2", "tru"])
    def test_bad_bool(self, raw: str) -> None:
        """Anything else is refused, listing the accepted spellings."""
        with pytest.raises(ConfigError, match=r"expected true or false.*write true or false"):
            kinds(f"flag: {raw}\n")


class TestDurations:
    @pytest.mark.parametrize(
        ("raw", "seconds"),
        [
            ("30s", 30.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("0", 0.0),
            ("0s", 0.0),
        ],
    )
    def test_go_durations(self, raw: str, seconds: float) -> None:
        """Durations are Go duration strings, converted to Duration seconds."""
        value = kinds(f"duration: {raw}\n").duration
        assert isinstance(value, Duration)
        assert value == seconds

    def test_bare_number_needs_a_unit(self) -> None:
        """A bare number is an error with the hint to add a unit."""
        with pytest.raises(ConfigError) as info:
            kinds("\nduration: 30\n")
        assert info.value.line == 2
        assert info.value.key == "duration"
        assert 'missing unit in duration "30"; write e.g. 30s, 5m, 1h30m' in str(info.value)

    def test_negative_is_refused(self) -> None:
        """A negative duration is refused."""
        with pytest.raises(ConfigError, match="must not be negative, got '-5s'"):
            kinds("duration: -5s\n")

    def test_unknown_unit(self) -> None:
        """An unknown unit such as days is refused naming the unit."""
        with pytest.raises(ConfigError, match='unknown unit "d"'):
            kinds("duration: 3d\n")


class TestSizesAndRatios:
    @pytest.mark.parametrize(
        ("raw", "size"),
        [
            ("1048576", 1048576),
            ("64MiB", 64 * 1024 * 1024),
            ("512KB", 512_000),
            ("1GB", 10**9),
            ("1.5KiB", 1536),
            ("10 mib", 10 * 1024 * 1024),
            ("100B", 100),
        ],
    )
    def test_sizes(self, raw: str, size: int) -> None:
        """Sizes take bytes or a unit: KB/MB/GB powers of 1000, KiB/MiB/GiB of 1024."""
        value = kinds(f"size: {raw}\n").size
        assert isinstance(value, ByteSize)
        assert value == size

    @pytest.mark.parametrize("raw", ["12XB", "-5", "lots", "1.5"])
    def test_bad_sizes(self, raw: str) -> None:
        """A size with an unknown unit, a sign or a fraction of a byte is refused with a hint."""
        with pytest.raises(ConfigError, match="64MiB"):
            kinds(f"size: {raw}\n")

    @pytest.mark.parametrize(
        ("raw", "value"), [("0.2", 0.2), ("20%", 0.2), ("0", 0.0), ("100%", 1.0), ("1", 1.0)]
    )
    def test_ratios(self, raw: str, value: float) -> None:
        """Ratios take a fraction from 0 to 1 or a percentage."""
        assert kinds(f"ratio: '{raw}'\n").ratio == pytest.approx(value)

    @pytest.mark.parametrize("raw", ["1.5", "120%", "-0.1", "half"])
    def test_bad_ratios(self, raw: str) -> None:
        """A ratio outside 0..1 or not a number is refused with a hint."""
        with pytest.raises(ConfigError, match="20%"):
            kinds(f"ratio: {raw}\n")


class TestContainers:
    def test_list_paths_have_indices(self) -> None:
        """An error inside a list names the index in the key path."""
        with pytest.raises(ConfigError) as info:
            kinds("inner_list:\n  - value: 1\n  - value: x\n")
        assert info.value.key == "inner_list[1].value"
        assert info.value.line == 3

    def test_scalar_for_list(self) -> None:
        """A scalar where a list is expected is an error explaining the list syntax."""
        with pytest.raises(ConfigError, match="expected a list, got 'abc'; write each entry"):
            kinds("many: abc\n")

    def test_variadic_tuple(self) -> None:
        """Tuple[X, ...] gives a tuple."""
        assert kinds("many: [a, b, '3']\n").many == ("a", "b", "3")

    def test_fixed_tuple(self) -> None:
        """A fixed-length tuple checks the count and each entry's type."""
        assert kinds("pair: [a, 2]\n").pair == ("a", 2)
        with pytest.raises(ConfigError, match="exactly 2 entries, got 3"):
            kinds("pair: [a, 2, 3]\n")

    def test_dict(self) -> None:
        """Dict[str, X] structures each value, with the key in the path on error."""
        assert kinds("table: {a: 1, b: 2}\n").table == {"a": 1, "b": 2}
        with pytest.raises(ConfigError) as info:
            kinds("table:\n  a: 1\n  b: two\n")
        assert info.value.key == "table.b"
        assert info.value.line == 3

    def test_dict_duplicate_key(self) -> None:
        """A key given twice is an error pointing at both lines, not last-one-wins."""
        with pytest.raises(ConfigError, match=r"duplicate key 'a' \(first at line 2\)"):
            kinds("table:\n  a: 1\n  a: 2\n")

    def test_any(self) -> None:
        """Any takes the plain YAML value."""
        assert kinds("anything: {a: [1, true, null]}\n").anything == {"a": [1, True, None]}


class TestUnions:
    def test_scalar_goes_to_str(self) -> None:
        """In Union[str, Class], a scalar becomes the string."""
        assert kinds("either: abc\n").either == "abc"

    def test_mapping_goes_to_class(self) -> None:
        """In Union[str, Class], a mapping becomes the class."""
        assert kinds("either: {value: 3}\n").either == Inner(3)

    def test_null_is_none(self) -> None:
        """Optional accepts null."""
        assert kinds("either:\n").either is None

    def test_no_member_for_kind(self) -> None:
        """A list where no member accepts lists is an error describing the accepted forms."""
        with pytest.raises(ConfigError, match="expected a string or a mapping or nothing"):
            kinds("either: [1]\n")

    def test_error_inside_chosen_member(self) -> None:
        """An error inside the chosen member keeps its own line and path."""
        with pytest.raises(ConfigError) as info:
            kinds("either:\n  value: x\n")
        assert info.value.key == "either.value"
        assert info.value.line == 2

    def test_several_scalar_members_are_tried_in_order(self) -> None:
        """Several scalar members are tried in order; the first that accepts wins."""
        assert kinds("number_or_duration: 5\n").number_or_duration == 5
        assert kinds("number_or_duration: 5m\n").number_or_duration == 300.0
        with pytest.raises(ConfigError, match="expected an integer or a duration"):
            kinds("number_or_duration: abc\n")


class TestAttrsClasses:
    def test_unknown_key_lists_allowed_keys(self) -> None:
        """An unknown key is an error with a suggestion and the allowed keys."""
        with pytest.raises(ConfigError) as info:
            structure(
                node("names: [a]\nregoin: x\n"),
                ParameterGroup,
                source="c.yaml",
                path="parameters[0]",
            )
        assert info.value.line == 2
        assert info.value.key == "parameters[0].regoin"
        assert "did you mean 'region'?" in str(info.value)
        assert "allowed keys: names, region, ttl" in str(info.value)

    def test_missing_required_key(self) -> None:
        """A missing required key is an error at the mapping's line naming the key."""
        with pytest.raises(ConfigError) as info:
            structure(
                node("\n\nregion: a\n"), ParameterGroup, source="c.yaml", path="parameters[0]"
            )
        assert info.value.line == 3
        assert info.value.key == "parameters[0]"
        assert "missing required key 'names'; add names: <value>" in str(info.value)

    def test_several_missing_keys(self) -> None:
        """All missing required keys are named at once."""
        with pytest.raises(
            ConfigError, match="missing required keys 'table', 'hashkey', 'hashkeyvalue'"
        ):
            structure(node("ttl: 5s\n"), TableItem, source="c.yaml", path="dynamodb[0]")

    def test_not_a_mapping(self) -> None:
        """A scalar where a class is expected names the allowed keys."""
        with pytest.raises(
            ConfigError, match="expected a mapping with keys names, region, ttl, got 'abc'"
        ):
            structure(node("abc\n"), ParameterGroup, source="c.yaml", path="parameters[0]")

    def test_validator_error_points_at_the_field(self) -> None:
        """A validator's error is reported at the offending field's line and path."""
        text = "table: T\nhashkey: k\nhashkeyvalue: v\nhashkeytype: X\n"
        with pytest.raises(ConfigError) as info:
            structure(node(text), TableItem, source="c.yaml", path="dynamodb[0]")
        assert info.value.line == 4
        assert info.value.key == "dynamodb[0].hashkeytype"
        assert "hashkeytype must be S, N or B" in str(info.value)

    def test_post_init_error_points_at_the_mapping(self) -> None:
        """A cross-field check in __attrs_post_init__ is reported at the mapping's line."""
        text = "\ntable: T\nhashkey: k\nhashkeyvalue: v\nsortkey: s\n"
        with pytest.raises(ConfigError) as info:
            structure(node(text), TableItem, source="c.yaml", path="dynamodb[0]")
        assert info.value.line == 2
        assert info.value.key == "dynamodb[0]"
        assert "sortkey and sortkeyvalue go together" in str(info.value)

    def test_schema_config_error_gets_located(self) -> None:
        """A ConfigError raised by a schema's own check is given the file, line and key path."""
        with pytest.raises(ConfigError) as info:
            structure(node("\nname: a\n"), RaisesConfigError, source="c.yaml", path="s[0]")
        assert (info.value.source, info.value.line, info.value.key) == ("c.yaml", 2, "s[0].name")
        assert str(info.value) == "c.yaml:2: s[0].name: names must be unique; remove the duplicate"

    def test_literal_suggests_the_right_case(self) -> None:
        """A Literal value in the wrong case is refused with the right spelling."""
        text = (
            "table: T\nhashkey: k\nhashkeyvalue: v\nsortkey: s\nsortkeyvalue: w\nsortkeytype: n\n"
        )
        with pytest.raises(ConfigError) as info:
            structure(node(text), TableItem, source="c.yaml", path="dynamodb[0]")
        assert info.value.key == "dynamodb[0].sortkeytype"
        assert "must be one of 'S', 'N', 'B', got 'n'; did you mean 'N'?" in str(info.value)

    def test_yaml_alias_and_private_field(self) -> None:
        """metadata={'yaml': name} renames the key; private fields are set through their alias."""
        value = structure(node("region: eu-west-1\nref: r\n"), Aliased, source="c", path="")
        assert value == Aliased("eu-west-1", "r")
        with pytest.raises(ConfigError, match="allowed keys: region, ref"):
            structure(node("region_name: x\n"), Aliased, source="c", path="")

    def test_merge_keys(self) -> None:
        """YAML merge keys are applied, not reported as an unknown '<<' key."""
        text = "base: &b {region: us-east-1, names: [a]}\ngroup:\n  <<: *b\n  names: [b]\n"
        value = structure(node(text), Dict[str, ParameterGroup], source="c", path="")
        assert value["group"] == ParameterGroup(names=["b"], region="us-east-1")

    def test_merge_list_earlier_wins(self) -> None:
        """With a list of merged mappings, earlier ones win, as YAML's merge spec says."""
        text = (
            "a: &a {region: r1, names: [a]}\nb: &b {region: r2, ttl: 5s, names: [b]}\n"
            "group:\n  <<: [*a, *b]\n  names: [x]\n"
        )
        typed = structure(node(text), Dict[str, ParameterGroup], source="c", path="")
        assert typed["group"] == ParameterGroup(names=["x"], region="r1", ttl=Duration(5))
        untyped = structure(node(text), Any, source="c", path="")
        assert untyped["group"] == {"region": "r1", "ttl": "5s", "names": ["x"]}

    def test_merge_of_a_scalar(self) -> None:
        """Merging something that is not a mapping is an error explaining merge keys."""
        with pytest.raises(ConfigError, match="'<<' merges mappings"):
            structure(node("g:\n  <<: 5\n"), Dict[str, Dict[str, int]], source="c", path="")

    def test_non_scalar_key(self) -> None:
        """A complex mapping key is refused."""
        with pytest.raises(ConfigError, match="a key must be a plain name"):
            structure(node("? [a]\n: 1\n"), ParameterGroup, source="c", path="")

    def test_unresolvable_annotation_is_a_schema_bug(self) -> None:
        """A schema whose annotations cannot be resolved is a TypeError naming the class."""
        with pytest.raises(TypeError, match="Unresolvable"):
            structure(node("thing: 1\n"), Unresolvable, source="c", path="")


class TestSampleConfig:
    def test_sample_structures(self, tmp_path: Path) -> None:
        """The SPEC's sample config is accepted as is and structured against the schema."""
        s = settings(tmp_path, SAMPLE_CONFIG_YAML)
        assert s.config_loaded
        assert s.sections["parameters"] == [
            ParameterGroup(
                names=["CacheExtensions_Parameter1", "/aws/reference/secretsmanager/secret_info"],
                region="us-west-2",
            )
        ]
        assert s.sections["dynamodb"] == [
            TableItem(
                table="DynamoDbTable",
                hashkey="pKey",
                hashkeyvalue="pKey1",
                hashkeytype="S",
                sortkey="sKey",
                sortkeytype="S",
                sortkeyvalue="sKey1",
            )
        ]
        assert "secrets" not in s.sections

    def test_sample_error_names_file_line_key_and_hint(self, tmp_path: Path) -> None:
        """A typo in the sample's DynamoDB entry names the file, line, dotted key and a fix."""
        path = write(tmp_path, SAMPLE_CONFIG_YAML.replace("hashkeytype: S", "hashkeytyp: S"))
        with pytest.raises(ConfigError) as info:
            settings(tmp_path, config_path=path)
        assert str(info.value).startswith(
            f"{path}:9: dynamodb[0].hashkeytyp: unknown key 'hashkeytyp'"
        )
        assert "did you mean 'hashkeytype'?" in str(info.value)


class TestSections:
    def test_unknown_section_names_installed_providers(self, tmp_path: Path) -> None:
        """An unknown section names the file, line and the installed providers."""
        path = write(tmp_path, SAMPLE_CONFIG_YAML + "s3:\n  - bucket: b\n")
        with pytest.raises(ConfigError) as info:
            settings(tmp_path, config_path=path)
        assert info.value.line == 14
        assert info.value.source == path
        assert str(info.value) == (
            f"{path}:14: s3: unknown section 's3'; installed providers: dynamodb, parameters, "
            "secrets; is the provider package installed?"
        )

    def test_unknown_section_suggests_a_close_name(self, tmp_path: Path) -> None:
        """A misspelt section suggests the right one."""
        with pytest.raises(ConfigError, match="did you mean 'parameters'"):
            settings(tmp_path, "parameter:\n  - names: [a]\n")

    def test_broken_plugin_section(self, tmp_path: Path) -> None:
        """A section of a plugin that failed to load says so, with the load error."""
        with pytest.raises(ConfigError) as info:
            settings(
                tmp_path, "s3:\n  - bucket: b\n", broken={"s3": "ImportError: no module named x"}
            )
        assert info.value.line == 1
        assert (
            "section 's3' belongs to plugin 's3', which failed to load: "
            "ImportError: no module named x" in str(info.value)
        )

    def test_provider_without_config(self, tmp_path: Path) -> None:
        """A provider with no schema accepts an empty section and refuses content."""
        schemas = {**SCHEMAS, "health": None}
        assert settings(tmp_path, "health:\n", schemas=schemas).sections == {"health": None}
        with pytest.raises(ConfigError, match="provider 'health' takes no configuration"):
            settings(tmp_path, "health:\n  a: 1\n", schemas=schemas)

    def test_empty_section_is_an_error(self, tmp_path: Path) -> None:
        """A section left empty is an error rather than silently meaning nothing."""
        with pytest.raises(ConfigError, match="section 'secrets' is empty"):
            settings(tmp_path, "secrets:\n")

    def test_duplicate_section(self, tmp_path: Path) -> None:
        """A section given twice is an error."""
        with pytest.raises(ConfigError, match="duplicate key 'secrets'"):
            settings(tmp_path, "secrets: [{names: [a]}]\nsecrets: [{names: [b]}]\n")

    def test_only_present_sections(self, tmp_path: Path) -> None:
        """Only sections present in the file appear in Settings.sections."""
        s = settings(tmp_path, "secrets:\n  - names: [s1]\n    ttl: 10s\n")
        assert list(s.sections) == ["secrets"]
        assert s.sections["secrets"][0].ttl == 10.0

    def test_provider_named_cache(self, tmp_path: Path) -> None:
        """A provider claiming the core's 'cache' section is a plugin error."""
        with pytest.raises(PluginError, match="'cache'"):
            settings(tmp_path, "", schemas={"cache": None})


class TestCacheSection:
    def test_defaults(self, tmp_path: Path) -> None:
        """Without a cache: section, the defaults of the SPEC apply."""
        s = settings(tmp_path, "")
        assert s.cache == CacheSettings()
        assert (s.cache.ttl, s.cache.max_entries, s.cache.max_bytes) == (
            None,
            1000,
            64 * 1024 * 1024,
        )
        assert (s.cache.negative_ttl, s.cache.stale_if_error, s.cache.refresh_ahead) == (
            30.0,
            3600.0,
            0.2,
        )
        assert s.default_ttl == 3600.0
        assert s.init_startup is False

    def test_every_setting(self, tmp_path: Path) -> None:
        """Every cache: setting is read and converted."""
        s = settings(
            tmp_path,
            "cache:\n  ttl: 5m\n  max_entries: 50\n  max_bytes: 1MiB\n  negative_ttl: 10s\n"
            "  stale_if_error: 2h\n  refresh_ahead: 25%\n  init_startup: true\n",
        )
        assert s.cache == CacheSettings(
            ttl=Duration(300),
            max_entries=50,
            max_bytes=ByteSize(1 << 20),
            negative_ttl=Duration(10),
            stale_if_error=Duration(7200),
            refresh_ahead=Ratio(0.25),
            init_startup=True,
        )
        assert s.default_ttl == 300.0
        assert s.init_startup is True
        assert s.ttl_for("parameters") == 300.0

    def test_max_entries_zero_from_file(self, tmp_path: Path) -> None:
        """max_entries 0 in the file is refused at its line, with the way to disable caching."""
        with pytest.raises(ConfigError) as info:
            settings(tmp_path, "cache:\n  max_entries: 0\n")
        assert info.value.line == 2
        assert info.value.key == "cache.max_entries"
        assert "at least 1" in str(info.value)

    @pytest.mark.parametrize(
        ("text", "key"),
        [
            ("max_entries: -1", "cache.max_entries"),
            ("max_bytes: 0", "cache.max_bytes"),
            ("ttl: 1m1", "cache.ttl"),
            ("stale_if_error: 3600", "cache.stale_if_error"),
            ("refresh_ahead: 2", "cache.refresh_ahead"),
            ("init_startup: sometimes", "cache.init_startup"),
            ("max_entry: 5", "cache.max_entry"),
        ],
    )
    def test_bad_settings(self, tmp_path: Path, text: str, key: str) -> None:
        """Each bad cache: setting is an error at its line with its dotted key."""
        with pytest.raises(ConfigError) as info:
            settings(tmp_path, f"cache:\n  {text}\n")
        assert (info.value.line, info.value.key) == (2, key)


class TestConfigPath:
    def test_default_path_missing_is_a_warning(self, tmp_path: Path) -> None:
        """No file at the default path is no error: nothing is declared, and a warning says so."""
        s = settings(tmp_path)
        assert s.config_path == config_module.DEFAULT_CONFIG_PATH
        assert not s.config_loaded
        assert s.sections == {}
        assert any("no config file at" in w for w in s.warnings)

    def test_default_path_is_var_task(self) -> None:
        """The real default is /var/task/config.yaml (extensions do not get LAMBDA_TASK_ROOT)."""
        assert REAL_DEFAULT_CONFIG_PATH == "/var/task/config.yaml"

    def test_default_path_present_is_read(self, tmp_path: Path) -> None:
        """A file at the default path is read."""
        default = Path(config_module.DEFAULT_CONFIG_PATH)
        default.parent.mkdir()
        default.write_text("secrets: [{names: [a]}]\n")
        s = settings(tmp_path)
        assert s.config_loaded
        assert "secrets" in s.sections

    def test_env_names_the_file(self, tmp_path: Path) -> None:
        """CACHE_EXTENSION_CONFIG overrides the default path."""
        path = write(tmp_path, "secrets: [{names: [a]}]\n", "other.yaml")
        s = settings(tmp_path, environ={"CACHE_EXTENSION_CONFIG": path})
        assert (s.config_path, s.config_loaded) == (path, True)

    def test_argument_outranks_env(self, tmp_path: Path) -> None:
        """The config_path argument outranks CACHE_EXTENSION_CONFIG."""
        path = write(tmp_path, "", "arg.yaml")
        s = settings(
            tmp_path,
            environ={"CACHE_EXTENSION_CONFIG": str(tmp_path / "missing.yaml")},
            config_path=path,
        )
        assert s.config_path == path

    def test_explicit_missing_file_is_an_error(self, tmp_path: Path) -> None:
        """A file named explicitly that does not exist is an error."""
        missing = str(tmp_path / "missing.yaml")
        with pytest.raises(ConfigError) as info:
            settings(tmp_path, environ={"CACHE_EXTENSION_CONFIG": missing})
        assert info.value.source == missing

    def test_empty_env_is_an_error(self, tmp_path: Path) -> None:
        """An empty CACHE_EXTENSION_CONFIG is an error, not the default."""
        with pytest.raises(ConfigError, match="CACHE_EXTENSION_CONFIG: is empty"):
            settings(tmp_path, environ={"CACHE_EXTENSION_CONFIG": ""})


class TestEnvironment:
    def test_ttl_env(self, tmp_path: Path) -> None:
        """CACHE_EXTENSION_TTL is a Go duration and outranks cache.ttl."""
        s = settings(tmp_path, "cache:\n  ttl: 5m\n", {"CACHE_EXTENSION_TTL": "1h30m"})
        assert s.default_ttl == 5400.0
        assert s.ttl_for("secrets") == 5400.0

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ("30", "missing unit"),
            ("5 minutes", "unknown unit"),
            ("-1s", "must not be negative"),
            ("", "invalid duration"),
        ],
    )
    def test_bad_ttl_env(self, tmp_path: Path, raw: str, message: str) -> None:
        """A bad CACHE_EXTENSION_TTL is a ConfigError whose source is the variable."""
        with pytest.raises(ConfigError) as info:
            settings(tmp_path, environ={"CACHE_EXTENSION_TTL": raw})
        assert info.value.source == "CACHE_EXTENSION_TTL"
        assert info.value.line is None
        assert message in str(info.value)
        assert str(info.value).startswith("CACHE_EXTENSION_TTL: ")

    def test_init_startup_env(self, tmp_path: Path) -> None:
        """CACHE_EXTENSION_INIT_STARTUP takes Go booleans and outranks cache.init_startup."""
        assert (
            settings(tmp_path, environ={"CACHE_EXTENSION_INIT_STARTUP": "T"}).init_startup is True
        )
        s = settings(
            tmp_path, "cache:\n  init_startup: true\n", {"CACHE_EXTENSION_INIT_STARTUP": "0"}
        )
        assert s.init_startup is False

    def test_bad_init_startup_env(self, tmp_path: Path) -> None:
        """A non-Go boolean is an error naming the variable and the spellings."""
        with pytest.raises(
            ConfigError, match=r"^CACHE_EXTENSION_INIT_STARTUP: strconv.ParseBool.*TRUE"
        ):
            settings(tmp_path, environ={"CACHE_EXTENSION_INIT_STARTUP": "yes"})

    def test_port_precedence(self, tmp_path: Path) -> None:
        """--port outranks CACHE_EXTENSION_PORT, which outranks AWS's port variable; else 4000."""
        assert settings(tmp_path).port == 4000
        aws = {"PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": "2773"}
        assert settings(tmp_path, environ=aws).port == 2773
        both = {**aws, "CACHE_EXTENSION_PORT": "4100"}
        assert settings(tmp_path, environ=both).port == 4100
        assert settings(tmp_path, environ=both, port=4200).port == 4200

    @pytest.mark.parametrize(
        "var", ["CACHE_EXTENSION_PORT", "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"]
    )
    @pytest.mark.parametrize("raw", ["0", "65536", "http", "-1", ""])
    def test_bad_port(self, tmp_path: Path, var: str, raw: str) -> None:
        """A port outside 1..65535 or not a number is an error naming the variable."""
        with pytest.raises(ConfigError, match="from 1 to 65535") as info:
            settings(tmp_path, environ={var: raw})
        assert info.value.source == var

    def test_bad_port_argument(self, tmp_path: Path) -> None:
        """A bad --port is an error naming --port."""
        with pytest.raises(ConfigError, match=r"^--port: "):
            settings(tmp_path, port=70000)

    def test_auth(self, tmp_path: Path) -> None:
        """CACHE_EXTENSION_AUTH is token (default) or none, in any case."""
        assert settings(tmp_path).auth == "token"
        assert settings(tmp_path, environ={"CACHE_EXTENSION_AUTH": "NONE"}).auth == "none"
        assert settings(tmp_path, environ={"CACHE_EXTENSION_AUTH": "Token"}).auth == "token"
        with pytest.raises(
            ConfigError, match="CACHE_EXTENSION_AUTH: invalid value 'off'; write one of TOKEN, NONE"
        ):
            settings(tmp_path, environ={"CACHE_EXTENSION_AUTH": "off"})

    def test_token_is_never_printed(self, tmp_path: Path) -> None:
        """The session token is kept but never appears in repr or the summary."""
        s = settings(tmp_path, environ={"AWS_SESSION_TOKEN": "very-secret-token"})
        assert s.token == "very-secret-token"
        assert "very-secret-token" not in repr(s)
        assert "very-secret-token" not in describe(s)

    def test_token_auth_without_token_warns(self, tmp_path: Path) -> None:
        """Token auth without AWS_SESSION_TOKEN warns, pointing at CACHE_EXTENSION_AUTH=none."""
        s = load_settings({}, SCHEMAS)
        assert s.token is None
        assert any("AWS_SESSION_TOKEN is not set" in w for w in s.warnings)
        assert not any(
            "AWS_SESSION_TOKEN" in w
            for w in load_settings({"CACHE_EXTENSION_AUTH": "none"}, {}).warnings
        )

    def test_log_level(self, tmp_path: Path) -> None:
        """CACHE_EXTENSION_LOG_LEVEL outranks AWS's variable, whose WARN and NONE are mapped."""
        assert settings(tmp_path).log_level == "INFO"
        assert (
            settings(tmp_path, environ={"CACHE_EXTENSION_LOG_LEVEL": "debug"}).log_level == "DEBUG"
        )
        aws = {"PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "warn"}
        assert settings(tmp_path, environ=aws).log_level == "WARNING"
        assert (
            settings(tmp_path, environ={"PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL": "NONE"}).log_level
            == "CRITICAL"
        )
        assert (
            settings(tmp_path, environ={**aws, "CACHE_EXTENSION_LOG_LEVEL": "ERROR"}).log_level
            == "ERROR"
        )

    @pytest.mark.parametrize(
        "var", ["CACHE_EXTENSION_LOG_LEVEL", "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL"]
    )
    def test_bad_log_level(self, tmp_path: Path, var: str) -> None:
        """An unknown log level is an error naming the variable and the levels."""
        with pytest.raises(ConfigError, match="write one of DEBUG, INFO") as info:
            settings(tmp_path, environ={var: "verbose"})
        assert info.value.source == var

    def test_aws_ttl_variables(self, tmp_path: Path) -> None:
        """AWS's SSM and Secrets Manager TTL variables set per-section TTLs; 0 and >300 allowed."""
        s = settings(
            tmp_path,
            environ={
                "SSM_PARAMETER_STORE_TTL": "0",
                "SECRETS_MANAGER_TTL": "900",
                "CACHE_EXTENSION_TTL": "10m",
            },
            ttl_variables=AWS_TTL_VARIABLES,
        )
        assert s.env_ttl == {"parameters": 0.0, "secrets": 900.0}
        assert s.ttl_for("parameters") == 0.0
        assert s.ttl_for("secrets") == 900.0
        assert s.ttl_for("dynamodb") == 600.0

    @pytest.mark.parametrize("var", ["SSM_PARAMETER_STORE_TTL", "SECRETS_MANAGER_TTL"])
    @pytest.mark.parametrize("raw", ["5m", "-1", "1.5", ""])
    def test_bad_aws_ttl(self, tmp_path: Path, var: str, raw: str) -> None:
        """AWS's TTL variables take whole seconds; anything else is an error naming the variable."""
        with pytest.raises(ConfigError, match="whole number of seconds") as info:
            settings(tmp_path, environ={var: raw}, ttl_variables=AWS_TTL_VARIABLES)
        assert info.value.source == var

    def test_aws_cache_size(self, tmp_path: Path) -> None:
        """AWS's CACHE_SIZE sets max_entries (0 = no caching) unless the file sets it."""
        var = "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE"
        assert settings(tmp_path, environ={var: "500"}).cache.max_entries == 500
        assert settings(tmp_path, environ={var: "0"}).cache.max_entries == 0
        s = settings(tmp_path, "cache:\n  max_entries: 20\n", {var: "500"})
        assert s.cache.max_entries == 20
        assert any(var in w and "overridden" in w for w in s.warnings)
        with pytest.raises(ConfigError, match="whole number of entries") as info:
            settings(tmp_path, environ={var: "big"})
        assert info.value.source == var

    def test_aws_cache_enabled(self, tmp_path: Path) -> None:
        """AWS's CACHE_ENABLED=false disables caching; a bad value is an error."""
        var = "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED"
        assert settings(tmp_path, environ={var: "FALSE"}).cache.max_entries == 0
        assert settings(tmp_path, environ={var: "true"}).cache.max_entries == 1000
        with pytest.raises(ConfigError, match="write true or false"):
            settings(tmp_path, environ={var: "nope"})

    def test_unknown_variable_warns_with_suggestion(self, tmp_path: Path) -> None:
        """An unknown CACHE_EXTENSION_* variable warns, naming it and the closest known name."""
        s = settings(
            tmp_path, environ={"CACHE_EXTENSION_TTLL": "5m", "CACHE_EXTENSION_WHATEVER": "1"}
        )
        ttl = [w for w in s.warnings if "CACHE_EXTENSION_TTLL" in w]
        assert ttl and "did you mean CACHE_EXTENSION_TTL?" in ttl[0]
        other = [w for w in s.warnings if "CACHE_EXTENSION_WHATEVER" in w]
        assert other and "did you mean" not in other[0]
        assert s.default_ttl == 3600.0  # the misspelt variable did not take effect

    def test_known_variables_do_not_warn(self, tmp_path: Path) -> None:
        """The known variables draw no warning."""
        env = {name: "x" for name in ("CACHE_EXTENSION_PLUGINS", "CACHE_EXTENSION_DISABLE_PLUGINS")}
        s = settings(tmp_path, "", env)
        assert not any("unknown environment variable" in w for w in s.warnings)

    def test_max_connections_warns(self, tmp_path: Path) -> None:
        """AWS's MAX_CONNECTIONS has no equivalent; a warning says so rather than ignoring it."""
        s = settings(tmp_path, environ={"PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS": "3"})
        assert any("MAX_CONNECTIONS" in w for w in s.warnings)

    def test_summary_line(self, tmp_path: Path) -> None:
        """describe() summarises the effective settings in one line with Go durations."""
        s = settings(tmp_path, "secrets: [{names: [a]}]\n", {"CACHE_EXTENSION_TTL": "90m"})
        line = describe(s)
        assert "ttl=1h30m0s" in line
        assert "sections=secrets" in line
        assert "\n" not in line


class TestPluginFilters:
    def test_unset(self) -> None:
        """Unset variables load everything and disable nothing."""
        assert plugin_filters({}) == (None, ())

    def test_lists(self) -> None:
        """Comma lists are split and trimmed."""
        env = {
            "CACHE_EXTENSION_PLUGINS": " ssm, secrets ,",
            "CACHE_EXTENSION_DISABLE_PLUGINS": "dynamodb",
        }
        assert plugin_filters(env) == (("ssm", "secrets"), ("dynamodb",))

    def test_empty_allow_list(self) -> None:
        """An empty allow list is an error rather than silently loading nothing."""
        with pytest.raises(ConfigError, match=r"^CACHE_EXTENSION_PLUGINS: is empty"):
            plugin_filters({"CACHE_EXTENSION_PLUGINS": " , "})

    def test_bad_name(self) -> None:
        """A name with spaces or odd characters is an error naming the variable."""
        with pytest.raises(
            ConfigError, match=r"^CACHE_EXTENSION_DISABLE_PLUGINS: invalid plugin name 'a b'"
        ):
            plugin_filters({"CACHE_EXTENSION_DISABLE_PLUGINS": "a b"})

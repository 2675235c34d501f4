"""Safe YAML: what an attacker or a typo could send is refused quickly, with a position."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.errors import PolicyError
from engine.policy.document import load_policy, load_policy_text
from engine.policy.yamlsafe import KEY_MARKER, MAX_YAML_BYTES, MAX_YAML_DEPTH, load_yaml

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@contextmanager
def refused() -> Iterator[list[PolicyError]]:
    """Expect a ``PolicyError``; yields a list holding the error. (A bomb that were expanded
    instead would hang or exhaust memory: the suite notices; speed itself is measured in bench/.)"""
    caught: list[PolicyError] = []
    with pytest.raises(PolicyError) as info:
        yield caught
    caught.append(info.value)


def only_problem(error: PolicyError) -> tuple[int | None, int | None, str]:
    assert len(error.problems) == 1, error.problems
    problem = error.problems[0]
    assert problem.severity == "error"
    assert problem.message
    return problem.location.line, problem.location.column, problem.message


# --- refusals with a position -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "position", "fragment"),
    [
        ("billion laughs", BILLION_LAUGHS, (2, 8), "anchors and aliases"),
        ("one alias", "a: &x 1\nb: *x\n", (2, 4), "anchors and aliases"),
        ("python object", "x: !!python/object:os.system {}\n", (1, 4), "python/object:os.system"),
        (
            "python apply",
            "x: !!python/object/apply:os.system [echo hi]\n",
            (1, 4),
            "python/object/apply",
        ),
        ("python name", "x: !!python/name:os.system\n", (1, 4), "python/name:os.system"),
        ("custom tag on a mapping", "rules:\n  - !rule {id: a}\n", (2, 5), "'!rule' is not allowed"),
        ("custom tag on a sequence", "x: !list [1]\n", (1, 4), "'!list' is not allowed"),
        ("custom tag on a scalar", "x: !secret abc\n", (1, 4), "!secret"),
        ("set tag", "x: !!set {a, b}\n", (1, 4), "tag:yaml.org,2002:set"),
        ("omap tag", "x: !!omap [{a: 1}]\n", (1, 4), "tag:yaml.org,2002:omap"),
        ("merge key", "a:\n  <<: {y: 2}\n", (2, 3), "merge"),
        ("duplicate key", "a: 1\nb: 2\na: 3\n", (3, 1), "duplicate key 'a'"),
        ("duplicate key, quoted", 'rules: 1\n"rules": 2\n', (2, 1), "duplicate key 'rules'"),
        ("sequence as key", "? [a, b]\n: 1\n", (1, 3), "keys must be plain text"),
        ("mapping as key", "x:\n  ? {a: 1}\n  : 1\n", (2, 5), "keys must be plain text"),
        ("null key", "null: 1\n", (1, 1), "must be text"),
        ("tilde key", "a: 1\n~: 2\n", (2, 1), "must be text"),
        ("boolean key", "a: 1\ntrue: 2\n", (2, 1), "must be text"),
        ("unclosed flow", "a: [1, 2\nb: 3\n", (2, 2), "invalid YAML"),
        ("mapping in a plain value", "a: b: c\n", (1, 5), "invalid YAML"),
        ("tab indentation", "a:\n\tb: 1\n", (2, 1), "invalid YAML"),
        ("two documents", "a: 1\n---\nb: 2\n", (2, 1), "invalid YAML"),
    ],
)
def test_refused_with_position(name: str, text: str, position: tuple[int, int], fragment: str) -> None:
    with refused() as caught:
        load_yaml(text, "policy.yaml")
    line, column, message = only_problem(caught[0])
    assert (line, column) == position, name
    assert fragment in message
    assert str(caught[0]).startswith(f"policy.yaml:{position[0]}:{position[1]}: error: ")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x: " + "[" * 5000 + "]" * 5000 + "\n", id="flow sequences"),
        pytest.param("x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", id="flow mappings"),
        pytest.param("- " * 5000 + "x\n", id="block sequences"),
        pytest.param("".join(f"{'  ' * i}k{i}:\n" for i in range(300)) + "  " * 300 + "v\n", id="block maps"),
    ],
)
def test_deep_nesting_is_refused_at_the_limit(text: str) -> None:
    with refused() as caught:
        load_yaml(text, "deep.yaml")
    line, column, message = only_problem(caught[0])
    assert f"nesting deeper than {MAX_YAML_DEPTH} levels" in message
    assert line is not None
    assert column is not None


def test_nesting_just_under_the_limit_loads() -> None:
    depth = MAX_YAML_DEPTH - 1
    loaded = load_yaml("[" * depth + "]" * depth, "ok.yaml")
    node = loaded.data
    for _ in range(depth - 1):
        assert isinstance(node, list)
        assert len(node) == 1
        node = node[0]
    assert node == []


@pytest.mark.parametrize("size", [MAX_YAML_BYTES + 1, 2_000_000])
def test_large_text_is_refused_before_parsing(size: int) -> None:
    text = "x: " + "a" * (size - 3)
    with refused() as caught:
        load_yaml(text, "big.yaml")
    line, _, message = only_problem(caught[0])
    assert f"larger than {MAX_YAML_BYTES} bytes" in message
    assert line is None


def test_size_counts_bytes_not_characters() -> None:
    # 400,000 three-byte characters: fewer characters than the limit, more bytes.
    text = "x: " + "\u20ac" * 400_000
    with refused() as caught:
        load_yaml(text, "euro.yaml")
    assert "larger than" in only_problem(caught[0])[2]


def test_two_megabyte_policy_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("program_id: p\n# " + "x" * 2_000_000 + "\n", encoding="utf-8")
    with refused() as caught:
        load_policy(path)
    assert str(caught[0]).startswith(f"{path}: error: file is larger than")


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n"])
def test_empty_file_is_refused(text: str) -> None:
    with refused() as caught:
        load_yaml(text, "empty.yaml")
    assert "empty" in only_problem(caught[0])[2]


@pytest.mark.parametrize("text", ["---\n", "null\n", "- a\n- b\n", "just text\n", "42\n"])
def test_a_policy_must_be_a_mapping(text: str) -> None:
    with refused() as caught:
        load_policy_text(text, "p.yaml")
    line, column, message = only_problem(caught[0])
    assert (line, column) == (1, 1)
    assert "mapping" in message


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("program_id: caf\u00e9\n".encode("latin-1"))
    with refused() as caught:
        load_policy(path)
    assert "not UTF-8" in only_problem(caught[0])[2]


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with refused() as caught:
        load_policy(missing)
    assert str(caught[0]).startswith(f"{missing}: error: cannot read the file")


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f"])
def test_control_character_is_a_policy_error(char: str) -> None:
    with pytest.raises(PolicyError):
        load_yaml(f"program_id: p{char}\n", "ctrl.yaml")


def test_escaped_surrogate_pair_is_one_character() -> None:
    try:
        data = load_yaml('reason: "ok \\ud83d\\ude00"\n', "emoji.yaml").data
    except PolicyError:
        return  # refusing it is fine too
    assert data == {"reason": "ok \U0001f600"}


# --- what loads, and what it becomes -----------------------------------------------------


def test_plain_json_types_load() -> None:
    text = 'a: 1\nb: 1.5\nc: true\nd: null\ne: "text"\nf: [1, {g: h}]\n'
    assert load_yaml(text, "x").data == {
        "a": 1,
        "b": 1.5,
        "c": True,
        "d": None,
        "e": "text",
        "f": [1, {"g": "h"}],
    }


def test_dates_become_iso_strings() -> None:
    data = load_yaml("d: 2026-01-15\nt: 2026-01-15T10:30:00Z\n", "x").data
    assert data == {"d": "2026-01-15", "t": "2026-01-15T10:30:00+00:00"}


def test_number_and_date_keys_become_text() -> None:
    data = load_yaml("1: a\n2026-01-15: b\n1.5: c\n", "x").data
    assert data == {"1": "a", "2026-01-15": "b", "1.5": "c"}


def test_keys_that_collide_as_text_are_duplicates() -> None:
    with refused() as caught:
        load_yaml("1: a\n'1': b\n", "x")
    assert only_problem(caught[0])[:2] == (2, 1)


def test_anchor_without_alias_loads() -> None:
    assert load_yaml("a: &x 1\n", "x").data == {"a": 1}


def test_binary_scalar_becomes_text() -> None:
    assert load_yaml("x: !!binary aGVsbG8=\n", "x").data == {"x": "hello"}


def test_positions_of_values_and_keys() -> None:
    text = "program_id: p\nrules:\n  - id: first\n    when: {var: x}\n"
    loaded = load_yaml(text, "x")
    assert loaded.positions[("program_id",)] == (1, 13)
    assert loaded.positions[("rules", 0)] == (3, 5)
    assert loaded.positions[("rules", 0, "id")] == (3, 9)
    assert loaded.positions[("rules", 0, "when", KEY_MARKER)] == (4, 5)
    assert loaded.positions[("rules", 0, "when", "var")] == (4, 17)


def test_position_falls_back_to_the_nearest_ancestor() -> None:
    loaded = load_yaml("a:\n  b: 1\n", "x")
    assert loaded.position(("a", "b", "c", 7)) == (2, 6)
    assert loaded.position(("zzz",)) == (1, 1)


def test_windows_line_endings_and_bom_load() -> None:
    assert load_yaml("\ufeffa: 1\r\nb: 2\r\n", "x").data == {"a": 1, "b": 2}


@pytest.mark.parametrize(("text", "where"), [("\ud800", "1:1"), ("a: 1\nb: x\udc00y\n", "2:5")])
def test_a_lone_surrogate_is_a_policy_error_at_its_place(text: str, where: str) -> None:
    """Text from a store or a caller can hold one; libyaml takes only UTF-8."""
    with pytest.raises(PolicyError, match=f"^p.yaml:{where}: error: invalid text: a lone surrogate"):
        load_yaml(text, "p.yaml")

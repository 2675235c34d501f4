"""Details of the policy compiler that mutation testing found no test pinning (TESTING.md):
group conditions that read the decision, every problem of a broken policy reported where it
is written, and the file limits of ``load_policy``."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.errors import PolicyError
from engine.policy.document import expand_refs, load_policy, load_policy_text
from engine.policy.evaluator import Evaluator
from engine.policy.logic import default_engine, root_paths
from engine.policy.yamlsafe import MAX_YAML_BYTES

NOW = datetime(2026, 11, 25, tzinfo=UTC)
HEAD = """program_id: p
applies_to: [SUBMITTED]
rules:
  - id: in-tx
    when: {"==": [{"var": "site.state_code"}, "TX"]}
    status: ACTIVE
    reason: ok
"""


def groups_of(text: str, *enrollments: dict[str, Any]) -> list[list[str]]:
    """The groups each enrollment gets (from none) under the policy ``text``."""
    evaluator = Evaluator(load_policy_text(text), NOW)
    raws = [{"id": f"e{i}", "status": "SUBMITTED", **raw} for i, raw in enumerate(enrollments)]
    decisions = [evaluator.evaluate(raw) for raw in raws]
    assert all(d.error is None for d in decisions), [d.error for d in decisions]
    return [d.group_ids for d in decisions]


def problems(text: str) -> list[tuple[int | None, int | None, str]]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "policy.yaml")
    return [(p.location.line, p.location.column, p.message) for p in info.value.problems]


TX = {"site": {"state_code": "TX", "zip": "77001"}}
TX_NO_ZIP = {"site": {"state_code": "TX"}}
UNDECIDED = {"site": {"state_code": "OK", "zip": "73301"}}  # no rule, no default: no status


# --- group conditions that read the decision --------------------------------------------------


def test_missing_decision_keys_are_settled_by_the_decided_outcome() -> None:
    text = HEAD + (
        """groups:
  - id: undecided
    when: {"missing": ["decision.status"]}
    add: [UNDECIDED]
  - id: incomplete
    when: {"missing": ["decision.status", "site.zip"]}
    add: [INCOMPLETE]
"""
    )
    assert groups_of(text, TX, TX_NO_ZIP, UNDECIDED) == [[], ["INCOMPLETE"], ["UNDECIDED", "INCOMPLETE"]]


def test_a_missing_with_a_computed_key_is_left_as_written() -> None:
    text = HEAD + (
        """groups:
  - id: computed
    when: {"missing": [{"cat": ["site.", "zip"]}, "decision.status"]}
    add: [CHECK]
"""
    )
    # Facts have no ``decision`` object: as written, decision.status is always missing.
    assert groups_of(text, TX, UNDECIDED) == [["CHECK"], ["CHECK"]]


def test_a_decision_read_inside_a_literal_list_is_settled() -> None:
    text = HEAD + (
        """groups:
  - id: listed
    when: {"in": ["ACTIVE", [{"var": "decision.status"}, "PAUSED"]]}
    add: [LISTED]
"""
    )
    assert groups_of(text, TX, UNDECIDED) == [["LISTED"], []]


DEVICES = {"var": "devices"}
IS_NULL = {"==": [{"var": "decision.status"}, None]}
ROOT_READ = {"==": [{"var": "decision.status"}, "ACTIVE"]}
ACCUMULATOR = {"var": "accumulator"}


@pytest.mark.parametrize(
    "when",
    [
        {"==": ["ACTIVE", {"var": "decision.status"}]},  # any operand, not only the first
        {"in": ["ACTIVE", {"map": [[{"var": "decision.status"}], {"var": ""}]}]},  # what is iterated
        {"and": [ROOT_READ, {"==": [{"reduce": [DEVICES, ACCUMULATOR, "seed"]}, "seed"]}]},  # its start
        # Inside an iteration "decision.status" is the element's (none here), not the decision
        # (the root read makes the group one compiled per decided outcome):
        {"and": [ROOT_READ, {"some": [DEVICES, IS_NULL]}]},
        {"and": [ROOT_READ, {"all": [DEVICES, IS_NULL]}]},
        {"and": [ROOT_READ, {"none": [DEVICES, {"==": [{"var": "decision.status"}, "ACTIVE"]}]}]},
        {"and": [ROOT_READ, {"!!": [{"filter": [DEVICES, IS_NULL]}]}]},
        {"and": [ROOT_READ, {"in": [None, {"map": [DEVICES, {"var": "decision.status"}]}]}]},
        {"and": [ROOT_READ, {"==": [{"reduce": [DEVICES, {"var": "decision.status"}, "seed"]}, None]}]},
    ],
)
def test_the_decision_is_settled_in_the_root_scope_only(when: dict[str, Any]) -> None:
    assert "decision.status" in root_paths(when)
    text = f"{HEAD}groups:\n  - id: g\n    when: {json.dumps(when)}\n    add: [G]\n"
    device = {"type": "BATTERY", "attributes": {}}
    assert groups_of(text, {**TX, "devices": [device]}) == [["G"]]


def test_a_group_condition_is_compiled_once_per_decided_outcome() -> None:
    policy = load_policy_text(HEAD + """groups:
  - id: active
    when: {"==": [{"var": "decision.status"}, "ACTIVE"]}
    add: [A]
""")  # fmt: skip
    (group,) = policy.groups
    engine = default_engine()

    active = group.condition_for(engine, "ACTIVE", "in-tx")

    assert group.condition_for(engine, "ACTIVE", "in-tx") is active
    assert group.condition_for(engine, "PENDING", "in-tx") is not active
    assert group.condition_for(engine, "ACTIVE", "default") is not active


def test_what_only_a_group_reads_is_among_the_policys_reads() -> None:
    policy = load_policy_text(HEAD + """groups:
  - id: houston
    when: {"and": [{"==": [{"var": "site.city"}, "Houston"]}, {"var": "decision.status"}]}
    add: [HOUSTON]
""")  # fmt: skip
    assert set(policy.read_paths) == {"site.state_code", "site.city"}


# --- every problem, where it is written ---------------------------------------------------------


def test_every_broken_definition_is_reported() -> None:
    text = HEAD + (
        """definitions:
  a: {"ref": "nowhere"}
  b: {"bogus": [1]}
"""
    )
    assert problems(text) == [
        (9, 6, "definitions.a: unknown ref 'nowhere' (definitions: a, b)"),
        (10, 6, "definitions.b: unknown operator 'bogus'"),
    ]


def test_every_group_with_an_unknown_ref_is_reported_at_its_condition() -> None:
    text = HEAD + (
        """groups:
  - id: one
    when: {"ref": "nope"}
    add: [A]
  - id: two
    when: {"ref": "nada"}
    add: [B]
"""
    )
    assert problems(text) == [
        (10, 11, "groups.0.when: unknown ref 'nope' (definitions: none)"),
        (13, 11, "groups.1.when: unknown ref 'nada' (definitions: none)"),
    ]


def test_every_group_with_an_unknown_operator_is_reported() -> None:
    text = HEAD + (
        """groups:
  - id: one
    when: {"bogus": [1]}
    add: [A]
  - id: two
    when: {"and": [true, {"nope": []}]}
    add: [B]
"""
    )
    assert problems(text) == [
        (10, 11, "groups.0.when: unknown operator 'bogus'"),
        (13, 26, "groups.1.when: unknown operator 'nope'"),
    ]


def test_a_chain_of_refs_too_deep_names_where_it_starts() -> None:
    definitions = "".join(f'  d{i}: {{"ref": "d{i + 1}"}}\n' for i in range(1, 33)) + "  d33: true\n"
    assert problems(HEAD + "definitions:\n" + definitions) == [
        (9, 7, "definitions.d1: refs nested too deep (more than 32): d1 -> d2 -> d3 -> ..."),
    ]


def test_expand_refs_says_why_a_ref_does_not_expand() -> None:
    with pytest.raises(ValueError, match=r"^unknown ref 'b' \(definitions: a\)$"):
        expand_refs({"ref": "b"}, {"a": True})


# --- the file -----------------------------------------------------------------------------------


def test_a_file_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"

    with pytest.raises(PolicyError) as info:
        load_policy(missing)

    assert str(info.value) == f"{missing}: error: cannot read the file: No such file or directory"


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(HEAD.replace("ok", "d\xe9j\xe0 vu").encode("latin-1"))

    with pytest.raises(PolicyError) as info:
        load_policy(path)

    assert str(info.value) == f"{path}: error: the file is not UTF-8 text"


def test_a_file_of_exactly_the_size_limit_loads(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    padding = "#" * (MAX_YAML_BYTES - len(HEAD) - 1) + "\n"
    path.write_text(HEAD + padding, encoding="utf-8")
    assert path.stat().st_size == MAX_YAML_BYTES

    assert [rule.id for rule in load_policy(path).rules] == ["in-tx"]


def test_a_file_that_does_not_end_is_refused_after_the_limit(tmp_path: Path) -> None:
    """A FIFO (or /dev/zero) is read no further than one byte past the limit."""
    fifo = tmp_path / "endless.yaml"
    os.mkfifo(fifo)
    done = threading.Event()
    released: list[bool] = []

    def writer() -> None:
        with fifo.open("wb") as stream:
            stream.write(b"#" * (MAX_YAML_BYTES + 4096))
            released.append(done.wait(3.0))  # the stream stays open until the loader is done

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with pytest.raises(PolicyError, match=f"file is larger than {MAX_YAML_BYTES} bytes"):
            load_policy(fifo)
    finally:
        done.set()
        thread.join()
    assert released == [True]  # refused while the stream was still open: it was not read to its end


def test_a_file_that_is_not_a_mapping_is_refused_at_its_start() -> None:
    assert problems("- program_id: p\n") == [(1, 1, "a policy must be a mapping of keys to values")]

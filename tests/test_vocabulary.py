"""The run vocabulary is spelled once: no state name is a bare string under engine/.

Run modes, run outcomes, change states and plan states are enums in engine/runs/states.py;
everything else uses the members, so a typo is a mypy error. This scans every module under
engine/ (the Alembic migrations excepted: a revision is frozen history) for a string literal
equal to one of their values, docstrings left out. A word that is also something else
(JsonLogic's ``none``, a command named ``plan``) is allowed only where it is listed below,
with why; an entry that no longer matches anything fails too, so the list stays short.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import engine.store.schema as schema
from engine.runs.states import ChangeState, PlanState, RunMode, RunOutcome

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE = REPO_ROOT / "engine"
STATES_MODULE = "engine/runs/states.py"
MIGRATIONS = "engine/store/migrations/"
VOCABULARY = (RunMode, RunOutcome, ChangeState, PlanState)
STATE_NAMES = frozenset(member.value for enum in VOCABULARY for member in enum)

# (file or folder, word): why the word is not a state there.
NOT_A_STATE = {
    ("engine/policy/", "none"): "JsonLogic's none operator, Action.NONE and 'none known' in messages",
    ("engine/sandbox/", "none"): "the simulator's Retry-After forms and schedule names",
    ("engine/render/", "none"): "what an empty list or a missing value shows",
    ("engine/render/coverage.py", "failed"): "the count of failed policy test cases",
    ("engine/runs/backtest.py", "none"): "the backtest's column for enrollments decided no status",
    ("engine/runs/plans.py", "plan"): "where in a plan file a validation error is",
    ("engine/cli/review_cmds.py", "plan"): "the plan command and its PLAN argument",
    ("engine/cli/review_cmds.py", "apply"): "the apply command",
    ("engine/cli/review_cmds.py", "approve"): "the review approve command",
    ("engine/cli/app.py", "interrupted"): "what Ctrl-C prints",
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def state_literals(path: Path) -> Iterator[tuple[int, str]]:
    """(line, word) of each string literal in ``path`` that is a state's value."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in STATE_NAMES
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def _allowed(name: str, word: str) -> tuple[str, str] | None:
    for place, allowed_word in NOT_A_STATE:
        if allowed_word == word and (name == place or (place.endswith("/") and name.startswith(place))):
            return place, allowed_word
    return None


def _scan() -> tuple[list[str], set[tuple[str, str]]]:
    offenders, used = [], set()
    for path in sorted(ENGINE.rglob("*.py")):
        name = str(path.relative_to(REPO_ROOT))
        if name == STATES_MODULE or name.startswith(MIGRATIONS):
            continue
        for line, word in state_literals(path):
            entry = _allowed(name, word)
            if entry is None:
                offenders.append(f"{name}:{line}: {word!r}")
            else:
                used.add(entry)
    return offenders, used


def test_no_state_name_is_spelled_as_a_string_under_engine() -> None:
    offenders, _used = _scan()
    assert offenders == [], "use the enum members of engine.runs.states instead"


def test_every_allowed_word_is_still_needed() -> None:
    _offenders, used = _scan()
    assert set(NOT_A_STATE) - used == set()


def test_the_scan_sees_a_state_in_code_but_not_in_a_docstring(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        '"""Moves a change to ``planned``: "planned"."""\n'
        "def f(state):\n"
        '    """Whether it is "held"."""\n'
        '    return state == "held" or {"applied": 1}\n',
        encoding="utf-8",
    )
    assert sorted(state_literals(module)) == [(4, "applied"), (4, "held")]


def test_the_store_uses_the_application_layers_enums() -> None:
    """One definition: the store's schema imports the enums (its CHECK constraints) from
    engine.runs.states instead of defining its own."""
    assert (schema.RunMode, schema.RunOutcome, schema.ChangeState, schema.PlanState) == VOCABULARY

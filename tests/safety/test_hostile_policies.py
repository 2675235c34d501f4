"""Hostile or oversized policy files are refused in bounded time and memory, with a message.

Policies come from people and pipelines, so ``load_policy`` (and ``cli.py validate`` on top
of it) must refuse a YAML bomb, absurd nesting, a huge file, a huge condition or a huge
rule list quickly, with a ``file:line:column: error:`` line and exit code 1; never hang,
never eat the machine's memory, never end in a traceback.

Each file is validated in a child process: its peak memory (``ru_maxrss`` from ``os.wait4``)
is measured there, and an address-space limit and a kill after ``KILL_AFTER_S`` keep a policy
that does blow up from taking the test run down with it. "Quickly" is not a timed assertion
(the machine is shared; speed claims live in ``bench/``): a child still running after
``KILL_AFTER_S`` has hung, which is what the limits are there to prevent.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_process import CLI, REPO_ROOT

from engine.errors import PolicyError
from engine.policy.document import load_policy

MEMORY_GROWTH_LIMIT_MB = 200
KILL_AFTER_S = 60.0  # a hang, not a slow machine
ADDRESS_SPACE_LIMIT = 3 << 30  # a blown-up child fails its allocation instead of swapping

HEAD = "program_id: prog-hostile\napplies_to: [SUBMITTED]\n"
RULE = "rules:\n  - {id: approve, when: true, status: ACTIVE, reason: ok}\n"


def _alias_bomb() -> str:
    """The "billion laughs": nine levels of nine aliases each, 9**9 strings if expanded."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*lol{level - 1}"] * 9)
        lines.append(f"lol{level}: &lol{level} [{refs}]")
    return HEAD + RULE + "definitions:\n" + "".join(f"  {line}\n" for line in lines)


def _merge_key_bomb() -> str:
    """Aliases through YAML merge keys (``<<: *a``) instead of plain references."""
    lines = ["  m0: &m0 {a: 1, b: 2}"]
    for level in range(1, 20):
        lines.append(f"  m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}], k{level}: {level}}}")
    return HEAD + RULE + "definitions:\n" + "\n".join(lines) + "\n"


def _deep_flow_nesting() -> str:
    return (
        HEAD + "rules:\n  - {id: r, status: ACTIVE, reason: x, when: " + "[" * 10_000 + "]" * 10_000 + "}\n"
    )


def _deep_mapping_nesting() -> str:
    return HEAD + RULE + "definitions:\n  deep: " + '{"!": ' * 10_000 + "true" + "}" * 10_000 + "\n"


def _deep_block_nesting() -> str:
    """Block sequences nest on one line: ``- - - x`` is three lists deep."""
    return HEAD + RULE + "definitions:\n  deep:\n    " + "- " * 10_000 + "x\n"


def _deep_ref_chain() -> str:
    """5,000-deep nesting that only appears once refs are expanded: each definition is a
    small ``!`` around the next one, so the YAML itself is three levels deep (and the file
    stays under the size limit, so the ref limits are what refuses it)."""
    count = 5_000
    lines = [f'  d{i}: {{"!": {{ref: d{i + 1}}}}}' for i in range(count)] + [f"  d{count}: true"]
    rule = "rules:\n  - {id: r, when: {ref: d0}, status: ACTIVE, reason: x}\n"
    return HEAD + rule + "definitions:\n" + "\n".join(lines) + "\n"


def _ref_bomb() -> str:
    """The "billion laughs" of the policy language: each definition uses the next one
    twice, so 40 small definitions expand to 2**40 nodes."""
    count = 40
    lines = [f"  d{i}: {{and: [{{ref: d{i + 1}}}, {{ref: d{i + 1}}}]}}" for i in range(count)]
    lines.append(f'  d{count}: {{"==": [{{var: site.state_code}}, TX]}}')
    rule = "rules:\n  - {id: r, when: {ref: d0}, status: ACTIVE, reason: x}\n"
    return HEAD + rule + "definitions:\n" + "\n".join(lines) + "\n"


def _five_megabytes() -> str:
    return HEAD + RULE + "notes: '" + "x" * 5_000_000 + "'\n"


def _condition_of_45k_nodes() -> str:
    """9,000 comparisons under one ``or``: 45,002 condition nodes (63,000 YAML values), as
    many as the loader's size limit lets through (under 256,000 bytes)."""
    clause = '{"==": [{"var": "z"}, 1]}'
    return (
        HEAD
        + 'rules:\n  - id: r\n    status: ACTIVE\n    reason: x\n    when: {"or": ['
        + ", ".join([clause] * 9_000)
        + "]}\n"
    )


def _fifty_thousand_rules() -> str:
    rules = "".join(f"- {{id: r{i}, when: true, status: ACTIVE, reason: x}}\n" for i in range(50_000))
    return HEAD + "rules:\n" + rules


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[], str]
    expect: str  # a piece of the error message


CASES = [
    Hostile("alias-bomb", _alias_bomb, "anchors and aliases are not allowed"),
    Hostile("merge-key-bomb", _merge_key_bomb, "anchors and aliases are not allowed"),
    Hostile("10000-deep-flow-lists", _deep_flow_nesting, "nesting deeper than"),
    Hostile("10000-deep-flow-mappings", _deep_mapping_nesting, "nesting deeper than"),
    Hostile("10000-deep-block-lists", _deep_block_nesting, "nesting deeper than"),
    Hostile("5-MB-file", _five_megabytes, "larger than"),
    Hostile("50000-rules", _fifty_thousand_rules, "larger than"),
    Hostile("condition-of-45000-nodes", _condition_of_45k_nodes, "more than"),
    Hostile("5000-deep-ref-chain", _deep_ref_chain, "too deep"),
    Hostile("ref-bomb", _ref_bomb, "too large"),
]


def _case_params() -> list[Any]:
    return [pytest.param(case, id=case.name) for case in CASES]


@dataclass(frozen=True)
class ChildResult:
    code: int | None  # None: killed after KILL_AFTER_S
    output: str
    seconds: float
    max_rss_mb: float


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def _validate_with_wait4(path: Path) -> ChildResult:
    """``cli.py validate PATH`` in a child process, timed, its own peak memory measured
    (``os.wait4`` reaps it and returns its usage); killed after ``KILL_AFTER_S``. Output
    goes to a file: a pipe nobody reads while waiting would block a chatty child."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as output, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            [sys.executable, str(CLI), "validate", str(path)],
            cwd=REPO_ROOT,
            stdin=devnull,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_address_space,  # noqa: PLW1509 - no threads are started before exec
        )
        killed = False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > KILL_AFTER_S and not killed:
                process.kill()
                killed = True
            time.sleep(0.02)
        seconds = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    return ChildResult(None if killed else process.returncode, text, seconds, usage.ru_maxrss / 1024)


@pytest.fixture(scope="module")
def baseline_rss_mb(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Peak memory of validating a small, good policy: the floor hostile files are held to."""
    path = tmp_path_factory.mktemp("baseline") / "good.yaml"
    path.write_text(HEAD + RULE, encoding="utf-8")
    result = _validate_with_wait4(path)
    assert result.code == 0, result.output
    return result.max_rss_mb


@pytest.mark.parametrize("case", _case_params())
def test_cli_validate_refuses_hostile_policy_cheaply(
    case: Hostile, tmp_path: Path, baseline_rss_mb: float
) -> None:
    path = tmp_path / f"{case.name}.yaml"
    path.write_text(case.build(), encoding="utf-8")
    result = _validate_with_wait4(path)
    print(
        f"\n[{case.name}] {path.stat().st_size:,} bytes: exit {result.code} in {result.seconds:.2f}s, "
        f"peak {result.max_rss_mb:.0f} MB (baseline {baseline_rss_mb:.0f} MB)"
    )
    assert result.code is not None, f"still running after {KILL_AFTER_S:.0f}s: killed"
    assert "Traceback" not in result.output, result.output[-1500:]
    assert result.code == 1, result.output[-1500:]
    assert f"{path}" in result.output, result.output[-800:]
    assert "error:" in result.output, result.output[-800:]
    assert case.expect in result.output, result.output[-800:]
    assert result.max_rss_mb - baseline_rss_mb < MEMORY_GROWTH_LIMIT_MB


# Only the cases that end quickly either way are loaded in this process; the rest would
# take the test run with them if they blew up.
IN_PROCESS = {
    "alias-bomb",
    "merge-key-bomb",
    "10000-deep-flow-lists",
    "10000-deep-flow-mappings",
    "10000-deep-block-lists",
    "5-MB-file",
    "50000-rules",
    "5000-deep-ref-chain",
}


def test_every_in_process_case_exists() -> None:
    assert {case.name for case in CASES} >= IN_PROCESS


@pytest.mark.parametrize("case", [p for p in _case_params() if p.values[0].name in IN_PROCESS])  # type: ignore[attr-defined]
def test_load_policy_raises_policy_error_with_a_position(case: Hostile, tmp_path: Path) -> None:
    path = tmp_path / f"{case.name}.yaml"
    path.write_text(case.build(), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    (first, *_rest) = caught.value.problems
    assert str(path) in str(first)
    assert case.expect in str(first)


def test_a_huge_file_is_refused_without_being_read_whole(tmp_path: Path, baseline_rss_mb: float) -> None:
    """A 256 MB file (sparse: it costs no disk) must not be read into memory to learn that
    it is too large."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.write((HEAD + RULE).encode())
        handle.truncate(256 << 20)
    result = _validate_with_wait4(path)
    print(f"\n[256-MB-file] exit {result.code} in {result.seconds:.2f}s, peak {result.max_rss_mb:.0f} MB")
    assert result.code == 1, result.output[-800:]
    assert "larger than" in result.output
    assert result.max_rss_mb - baseline_rss_mb < MEMORY_GROWTH_LIMIT_MB

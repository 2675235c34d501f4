"""The command line through its real entry point: ``python cli.py`` and ``cli.main``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_process import CLI, cli_environment, run_cli

import cli
from engine.policy.document import policy_json_schema
from engine.policy.testfile import run_test_file

REPO_ROOT = Path(__file__).resolve().parent.parent
RULES = REPO_ROOT / "rules"
TX_POLICY = RULES / "tx_residential_battery.yaml"
NOW = "2026-11-25T00:00:00Z"
CORE_COMMANDS = ("validate", "test", "explain", "run", "schema")
RECORD_KEYS = {"enrollment_id", "current_status", "status", "reason", "rule_id", "group_ids", "action"}

ENROLLMENTS: list[Any] = [
    {
        "id": "e-approve",
        "status": "SUBMITTED",
        "site": {"state_code": "TX", "zip_code": "77002"},
        "program_specific_attributes": [
            {"name": "utility_account_number", "type": "string", "value": "TX-1"}
        ],
        "devices": [
            {"type": "BATTERY", "attributes": {"battery_capacity_wh": 13500, "battery_power_output_w": 5000}}
        ],
    },
    {"id": "e-reject", "status": "SUBMITTED", "site": {"state_code": "OK"}},
    {"id": "e-skip", "status": "ACTIVE"},
    {
        "id": "e-same",
        "status": "PENDING",
        "site": {"state_code": "TX"},
        "program_specific_attributes": [{"name": "utility_account_number", "value": "x"}],
        "devices": [
            {"type": "BATTERY", "attributes": {"battery_capacity_wh": 9000, "battery_power_output_w": 5000}}
        ],
    },
    5,
]


def subcommands() -> dict[str, str]:
    """Every subcommand of the real parser, with its one-line help."""
    parser = cli.build_parser()
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


@pytest.fixture
def input_file(write_json: Callable[..., Path]) -> Path:
    return write_json(ENROLLMENTS)


# --- help -------------------------------------------------------------------------------------


def test_core_commands_exist() -> None:
    assert set(CORE_COMMANDS) <= set(subcommands())


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_command_has_help_text(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert len(subcommands()[command]) > 10
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: autoapprove {command}")
    assert "--help" in out


def test_help_through_the_real_entry_point() -> None:
    result = run_cli(["--help"])
    assert result.code == 0
    for command in CORE_COMMANDS:
        assert command in result.stdout
    assert "Exit codes" in result.stdout
    for command in ("run", "validate"):
        sub = run_cli([command, "--help"])
        assert sub.code == 0
        assert sub.stdout.startswith(f"usage: autoapprove {command}")


def test_no_command_prints_help_and_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: autoapprove" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- validate -----------------------------------------------------------------------------------


def test_validate_the_examples() -> None:
    result = run_cli(["validate", "rules/"])
    assert result.code == 0, result.stdout + result.stderr
    assert "rules/tx_residential_battery.yaml: ok" in result.stdout
    assert result.stdout.splitlines()[-1] == "2 files, 0 errors, 0 warnings"


def test_validate_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(RULES)]) == 0
    out = capsys.readouterr().out
    assert f"{TX_POLICY}: ok (6 rules, 5 group rules, 0 warnings)" in out


def test_validate_a_broken_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "program_id: p\napplies_to: [SUBMITTED]\nrules:\n  - id: a\n    when: true\n    status: APPROVED\n"
        "    reason: r\n",
        encoding="utf-8",
    )
    assert cli.main(["validate", str(broken)]) == 1
    out = capsys.readouterr().out
    assert re.search(
        rf"^{re.escape(str(broken))}:6:13: error: rules\.0\.status: 'APPROVED'", out, re.MULTILINE
    )
    assert out.splitlines()[-1] == "1 files, 1 errors, 0 warnings"


def test_validate_a_broken_policy_through_the_entry_point(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "program_id: p\napplies_to: [SUBMITTED]\n"
        "rules: [{id: a, when: {log: 1}, status: ACTIVE, reason: r}]\n",
        encoding="utf-8",
    )
    result = run_cli(["validate", str(broken)])
    assert result.code == 1
    assert re.search(r":3:\d+: error: rules\.0\.when: unknown operator 'log'", result.stdout)
    assert "Traceback" not in result.stderr


def test_validate_strict_fails_on_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "warn.yaml"
    policy.write_text(
        "program_id: p\napplies_to: [SUBMITTED]\nrules:\n"
        '  - id: a\n    when: {"var": "site.zip_cod"}\n    status: ACTIVE\n    reason: r\n',
        encoding="utf-8",
    )
    assert cli.main(["validate", str(policy)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{policy}:5:11: warning: rules.0.when: 'site.zip_cod' is not a fact (did you mean site.zip_code?)"
        in out
    )
    assert cli.main(["validate", "--strict", str(policy)]) == 1


def test_validate_a_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert cli.main(["validate", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_validate_a_policy_with_a_control_character(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "nul.yaml"
    policy.write_text("program_id: p\x00\n", encoding="utf-8")
    assert cli.main(["validate", str(policy)]) == 1
    assert f"{policy}: error: " in capsys.readouterr().out


# --- test ---------------------------------------------------------------------------------------


def test_test_the_examples() -> None:
    cases = sum(len(run_test_file(path).cases) for path in sorted(RULES.glob("*.test.yaml")))
    result = run_cli(["test", "rules/"])
    assert result.code == 0, result.stdout + result.stderr
    assert f"{cases} passed, 0 failed" in result.stdout.splitlines()


def test_test_in_process_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["test", "-v", str(RULES / "tx_residential_battery.test.yaml")]) == 0
    out = capsys.readouterr().out
    assert "PASS " in out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.MULTILINE)


def test_failing_test_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "tx.test.yaml"
    suite.write_text(
        f"policy: {TX_POLICY}\n"
        "cases:\n"
        "  - name: wrongly expects approval\n"
        "    enrollment: {status: SUBMITTED, site: {state_code: OK}}\n"
        "    expect: {status: ACTIVE, rule_id: approve}\n",
        encoding="utf-8",
    )
    assert cli.main(["test", str(suite)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {suite}:3:5 wrongly expects approval" in out
    assert '    status: expected "ACTIVE", got "REJECTED"' in out
    assert out.splitlines()[-1] == "0 passed, 1 failed"


def test_broken_test_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "bad.test.yaml"
    suite.write_text("policy: x.yaml\ncases: {}\n", encoding="utf-8")
    assert cli.main(["test", str(suite)]) == 1
    assert f"{suite}:2:8: error: cases:" in capsys.readouterr().out


def test_no_test_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["test", str(tmp_path)]) == 1
    assert "no *.test.yaml files found" in capsys.readouterr().err


# --- run ----------------------------------------------------------------------------------------


def test_run_json_through_the_entry_point(input_file: Path) -> None:
    result = run_cli(
        [
            "run",
            "--rules",
            "rules/tx_residential_battery.yaml",
            "--input",
            str(input_file),
            "--format",
            "json",
            "--now",
            NOW,
        ]
    )
    assert result.code == 0, result.stderr
    records = json.loads(result.stdout)
    assert isinstance(records, list)
    assert len(records) == len(ENROLLMENTS)
    for record in records:
        assert set(record) >= RECORD_KEYS
    by_id = {record["enrollment_id"]: record for record in records}
    approve = by_id["e-approve"]
    assert (approve["current_status"], approve["status"], approve["rule_id"], approve["action"]) == (
        "SUBMITTED",
        "ACTIVE",
        "approve",
        "update",
    )
    assert approve["group_ids"] == ["LZ_HOUSTON"]
    assert approve["reason"] == "Meets program requirements (13500 Wh of storage)"
    assert by_id["e-reject"]["status"] == "REJECTED"
    assert by_id["e-skip"]["action"] == "skip"
    assert by_id["e-same"]["action"] == "none"
    assert by_id[None]["action"] == "error"


def test_run_csv_has_a_header(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["run", "--rules", str(TX_POLICY), "--input", str(input_file), "--format", "csv", "--now", NOW]
    )
    assert code == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split(",")
    assert set(header) >= RECORD_KEYS
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["enrollment_id"] for row in rows] == ["e-approve", "e-reject", "e-skip", "e-same", ""]
    assert rows[0]["group_ids"] == "LZ_HOUSTON"
    assert rows[1]["reason"] == "Site is in OK, outside the service territory"


def test_run_table_has_a_summary(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--rules", str(TX_POLICY), "--input", str(input_file), "--now", NOW]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Policy Texas residential battery program (2026-11-25.1, ")
    assert "Summary: 5 enrollments" in out
    assert re.search(r"SUBMITTED -> ACTIVE\s+1", out)
    assert "e-approve" in out
    assert "e-same" not in out
    assert (
        cli.main(["run", "--rules", str(TX_POLICY), "--input", str(input_file), "--now", NOW, "--all"]) == 0
    )
    assert "e-same" in capsys.readouterr().out


def test_run_accepts_a_list_or_the_api_answer(
    write_json: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = []
    for name, data in (
        ("list.json", ENROLLMENTS),
        ("answer.json", {"enrollments": ENROLLMENTS, "next": None}),
    ):
        path = write_json(data, name=name)
        assert (
            cli.main(
                ["run", "--rules", str(TX_POLICY), "--input", str(path), "--format", "json", "--now", NOW]
            )
            == 0
        )
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == len(ENROLLMENTS)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        ('[{"id": }]', "invalid JSON"),
        ('{"items": []}', "expected a list of enrollments"),
        ('"text"', "expected a list of enrollments"),
        ('{"enrollments": {"a": 1}}', "expected a list of enrollments"),
    ],
)
@pytest.mark.parametrize("command", ["run", "explain"])
def test_bad_input_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, fragment: str, command: str
) -> None:
    path = tmp_path / "input.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert cli.main([command, "--rules", str(TX_POLICY), "--input", str(path), "--now", NOW]) == 2
    captured = capsys.readouterr()
    assert str(path) in captured.err
    assert fragment in captured.err
    assert captured.err.startswith("error: ")
    assert captured.out == ""


def test_bad_input_through_the_entry_point_has_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("[1, 2", encoding="utf-8")
    result = run_cli(["run", "--rules", "rules/tx_residential_battery.yaml", "--input", str(path)])
    assert result.code == 2
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_through_the_entry_point(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = run_cli(["run", "--rules", "rules/tx_residential_battery.yaml", "--input", str(missing)])
    assert result.code == 2
    assert f"{missing}: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_deeply_nested_input_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = run_cli(
        ["run", "--rules", "rules/tx_residential_battery.yaml", "--input", str(path), "--now", NOW]
    )
    assert "Traceback" not in result.stderr
    assert result.code == 2


def test_out_of_range_number_does_not_stop_the_run(write_json: Callable[..., Path]) -> None:
    path = write_json([{"id": "big", "status": "SUBMITTED", "serial": 10**25}, ENROLLMENTS[1]])
    result = run_cli(
        [
            "run",
            "--rules",
            "rules/tx_residential_battery.yaml",
            "--input",
            str(path),
            "--format",
            "json",
            "--now",
            NOW,
        ]
    )
    assert "Traceback" not in result.stderr
    assert result.code == 0
    assert [record["enrollment_id"] for record in json.loads(result.stdout)] == ["big", "e-reject"]


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "25/11/2026", ""])
def test_bad_now_is_a_usage_error(input_file: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--rules", str(TX_POLICY), "--input", str(input_file), "--now", value])
    assert exit_info.value.code == 2
    assert "--now" in capsys.readouterr().err


def test_bad_now_through_the_entry_point(input_file: Path) -> None:
    result = run_cli(
        ["run", "--rules", "rules/tx_residential_battery.yaml", "--input", str(input_file), "--now", "soon"]
    )
    assert result.code == 2
    assert "not an ISO 8601 time" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T00:00:00Z", datetime(2026, 11, 25, tzinfo=UTC)),
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("2026-11-24T19:00:00-05:00", datetime(2026, 11, 25, tzinfo=UTC)),
        (" 2026-11-25T08:30:00 ", datetime(2026, 11, 25, 8, 30, tzinfo=UTC)),
    ],
)
def test_parse_now(text: str, expected: datetime) -> None:
    parsed = cli.parse_now(text)
    assert parsed == expected
    assert parsed.utcoffset() is not None
    assert parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_run_with_a_broken_policy_exits_1(
    tmp_path: Path, input_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("program_id: p\n", encoding="utf-8")
    assert cli.main(["run", "--rules", str(policy), "--input", str(input_file)]) == 1
    assert re.search(rf"^{re.escape(str(policy))}:1:1: error: ", capsys.readouterr().err, re.MULTILINE)


# --- explain ------------------------------------------------------------------------------------


def test_explain_names_each_evaluated_rule(input_file: Path) -> None:
    result = run_cli(
        ["explain", "--rules", "rules/tx_residential_battery.yaml", "--input", str(input_file), "--now", NOW]
    )
    assert result.code == 0, result.stderr
    out = result.stdout
    for rule_id in (
        "reject-out-of-territory",
        "needs-account-number",
        "reject-no-battery",
        "review-old-battery",
    ):
        assert f"  rule {rule_id}: no match" in out
    assert "  rule approve: MATCH" in out
    assert "  group houston-load-zone: MATCH" in out
    for enrollment_id in ("e-approve", "e-reject", "e-skip", "e-same"):
        assert f"Enrollment {enrollment_id} (status " in out


def test_explain_one_enrollment(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["explain", "--rules", str(TX_POLICY), "--input", str(input_file), "--id", "e-reject", "--now", NOW]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Enrollment e-reject (status SUBMITTED)" in out
    assert "e-approve" not in out
    assert "  rule reject-out-of-territory: MATCH" in out
    assert "  rule approve" not in out
    assert "  => REJECTED by reject-out-of-territory" in out


def test_explain_unknown_id(input_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["explain", "--rules", str(TX_POLICY), "--input", str(input_file), "--id", "nobody"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nobody" in err
    assert str(input_file) in err


# --- schema -------------------------------------------------------------------------------------


def test_schema_matches_the_shipped_file() -> None:
    result = run_cli(["schema"])
    assert result.code == 0
    shipped = json.loads((REPO_ROOT / "schema" / "policy.schema.json").read_text(encoding="utf-8"))
    assert json.loads(result.stdout) == shipped
    assert shipped == policy_json_schema()


def test_schema_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "flip-autoapprove policy"


@pytest.mark.parametrize(
    "policy",
    sorted(p for p in RULES.glob("*.yaml") if not p.name.endswith(".test.yaml")),
    ids=lambda p: p.name,
)
def test_example_policies_point_at_the_schema(policy: Path) -> None:
    first = policy.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    target = (policy.parent / first[len(prefix) :]).resolve()
    assert target == (REPO_ROOT / "schema" / "policy.schema.json").resolve()


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AUTOAPPROVE_TIMEOUT_S", "ten"), ("AUTOAPPROVE_LOCK_TTL_S", "-5"), ("FLIP_API_URL", "api.flip.energy")],
)
def test_a_bad_setting_is_a_usage_error_naming_the_variable(variable: str, value: str) -> None:
    result = run_cli(["runs", "--db", "sqlite:///:memory:"], {variable: value})
    assert result.code == 2
    assert result.stderr.startswith(f"error: {variable}=")
    assert "Traceback" not in result.stderr


def test_a_bad_key_is_named_never_shown() -> None:
    result = run_cli(["runs", "--db", "sqlite:///:memory:"], {"FLIP_API_KEY": "fl_secret_0451 x"})
    assert (result.code, result.stderr) == (2, "error: FLIP_API_KEY: contains whitespace\n")


@pytest.mark.parametrize(
    ("command", "option", "field"),
    [
        ("run", "--concurrency", "concurrency"),
        ("run", "--lock-ttl", "lock_ttl_s"),
        ("apply", "--concurrency", "concurrency"),
        ("apply", "--lock-ttl", "lock_ttl_s"),
        ("review approve", "--concurrency", "concurrency"),
    ],
)
def test_help_states_the_defaults_of_the_settings(
    command: str, option: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.config import Settings

    with pytest.raises(SystemExit):
        cli.main([*command.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())
    help_of = text[text.index(option, text.index("options:")) :]
    default = getattr(Settings(), field)
    assert f"(default: ${Settings.variable(field)}, else {default:g})" in help_of[:200]


def _answer_on_a_terminal(args: list[str], env: dict[str, str], answer: str) -> tuple[int, str]:
    """The CLI with a terminal on stdin (it asks only there), answering ``answer``."""
    terminal, its_end = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, str(CLI), *args],
            cwd=REPO_ROOT, env=cli_environment(env), stdin=its_end,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        os.close(its_end)
        os.write(terminal, answer.encode() + b"\n")  # read by the prompt's readline
        _, stderr = process.communicate(timeout=60)
    finally:
        os.close(terminal)
    return process.returncode, stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("", "https://api-utility.flip.energy"),  # unset and empty are production, for the client too
        ("  ", "https://api-utility.flip.energy"),
        ("http://127.0.0.1:9/", "http://127.0.0.1:9"),
    ],
)
def test_the_live_confirmation_shows_the_url_the_client_uses(tmp_path: Path, url: str, shown: str) -> None:
    args = ["run", "--rules", str(TX_POLICY), "--live", "--db", f"sqlite:///{tmp_path / 'store.db'}"]
    code, stderr = _answer_on_a_terminal(args, {"FLIP_API_URL": url, "FLIP_API_KEY": "fl_unused"}, "n")
    assert code == 2, stderr
    assert f"to program(s) prog-tx-residential-battery at {shown}? [y/N]" in stderr
    assert "not confirmed: nothing was sent" in stderr

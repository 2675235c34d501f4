"""Dev and demo tools: ``sandbox`` serves the simulator, ``demo`` runs the example policy against it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.options import (
    Commands,
    add_db_option,
    add_now,
    non_negative_float,
    non_negative_int,
    port,
    share,
)
from engine.cli.shared import (
    DEFAULT_RULES_DIR,
    EXIT_OK,
    Context,
    err,
    out,
    policy_files,
    render_decisions,
)
from engine.cli.watch import progress_for


def add_sandbox(commands: Commands) -> None:
    cmd = commands.add_parser(
        "sandbox",
        help="serve the local Flip API simulator on 127.0.0.1",
        description="Serve a local simulator of the Flip Utility API with seeded data: one program "
        "per example policy in rules/. A dev and test tool: it never listens beyond loopback.",
    )
    cmd.add_argument("--port", type=port, default=8765, help="port (default 8765; 0 picks a free one)")
    cmd.add_argument("--api-key", default="fl_sim_local_key", help="the key the simulator accepts")
    cmd.add_argument("--enrollments", type=non_negative_int, default=200, metavar="N",
                     help="enrollments per program (default 200)")  # fmt: skip
    cmd.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    cmd.add_argument("--latency", type=non_negative_float, default=0.0, metavar="S",
                     help="added latency per request, seconds")  # fmt: skip
    cmd.add_argument("--error-rate", type=share, default=0.0, metavar="P",
                     help="share of requests answered 500/503")  # fmt: skip
    cmd.add_argument("--rate-limit", type=share, default=0.0, metavar="P",
                     help="share of requests answered 429 with Retry-After")  # fmt: skip
    cmd.set_defaults(handler=cmd_sandbox)


def add_demo(commands: Commands) -> None:
    cmd = commands.add_parser(
        "demo",
        help="start the simulator in-process and preview the example policy against it",
        description="Needs nothing but the clone: starts the local simulator on a free port, runs "
        "the example policy in dry-run against it (store: a temporary SQLite file unless --db), "
        "and prints the preview.",
    )
    cmd.add_argument("--rules", type=Path, default=Path("rules/tx_residential_battery.yaml"),
                     metavar="POLICY", help="policy (default rules/tx_residential_battery.yaml)")  # fmt: skip
    cmd.add_argument("--enrollments", type=non_negative_int, default=200, metavar="N",
                     help="simulated enrollments (default 200)")  # fmt: skip
    cmd.add_argument("--live", action="store_true", help="also apply the decisions to the simulator")
    cmd.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    add_now(cmd)
    add_db_option(cmd)
    cmd.set_defaults(handler=cmd_demo)


def cmd_sandbox(args: argparse.Namespace, context: Context) -> int:
    from engine.sandbox.simulator import FaultConfig, SimulatorConfig, SimulatorInfo, serve

    config = SimulatorConfig(
        port=args.port,
        api_key=args.api_key,
        programs=_example_programs(args.enrollments),
        seed=args.seed,
        faults=FaultConfig(latency_s=args.latency, error_rate=args.error_rate, rate_limit=args.rate_limit),
    )

    def ready(info: SimulatorInfo) -> None:
        out(f"Flip API simulator listening on {info.base_url}")
        out(f"  export FLIP_API_URL={info.base_url}")
        out(f"  export FLIP_API_KEY={info.api_key}")
        for program, count in info.programs.items():
            out(f"  program {program}: {count} enrollments")
        out("Ctrl-C stops it.")
        sys.stdout.flush()

    serve(config, on_ready=ready)
    return EXIT_OK


def _example_programs(count: int) -> dict[str, int]:
    """One simulated program per example policy in rules/ (same program_id)."""
    from engine.errors import PolicyError
    from engine.policy.document import load_policy

    programs: dict[str, int] = {}
    for path in policy_files([DEFAULT_RULES_DIR]) if DEFAULT_RULES_DIR.is_dir() else []:
        try:
            programs[load_policy(path).program_id] = count
        except PolicyError:
            continue
    return programs or {"prog-tx-residential-battery": count, "prog-ca-ev-charging": count}


def cmd_demo(args: argparse.Namespace, context: Context) -> int:
    import tempfile

    from pydantic import SecretStr

    from engine.bootstrap import run_policy
    from engine.policy.document import load_policy
    from engine.render.text import render_run_footer
    from engine.runs.service import RunSettings
    from engine.sandbox.simulator import Simulator, SimulatorConfig

    policy = load_policy(args.rules)
    config = SimulatorConfig(programs={policy.program_id: args.enrollments}, seed=0)
    with Simulator(config) as simulator, tempfile.TemporaryDirectory() as scratch:
        info = simulator.info()
        given = context.settings
        db_url = given.db_url if given.explicitly_set("db_url") else f"sqlite:///{scratch}/demo.db"
        app = given.model_copy(
            update={"api_url": info.base_url, "api_key": SecretStr(info.api_key), "db_url": db_url}
        )
        err(f"simulator on {info.base_url} with {args.enrollments} enrollments of {policy.program_id}")
        report = run_policy(
            policy, app, RunSettings(now=args.now), progress=progress_for(None, bars=True),
            checkpoint=context.checkpoint,
        )  # fmt: skip
        out(render_decisions(report.decisions, policy, args.format))
        if args.live:
            settings = RunSettings(live=True, now=args.now)
            live = run_policy(
                policy, app, settings, progress=progress_for(None, bars=True), checkpoint=context.checkpoint
            )
            err(render_run_footer(live))
        else:
            err(render_run_footer(report))
    return EXIT_OK

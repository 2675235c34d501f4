"""Child processes of bench_scale.py, one role each, so every measurement has its own process
(its peak RSS is its own).

python bench/_scale_children.py run URL DB FORMAT [PROFILE_OUT]   # one dry run, decisions streamed
python bench/_scale_children.py cli URL DB FORMAT                  # the same through ``autoapprove run``
python bench/_scale_children.py offline INPUT FORMAT               # ``autoapprove run --input INPUT``
python bench/_scale_children.py records COUNT PATH                 # write COUNT generated enrollments
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _e2e_children import KEY, NOW, POLICY, PROGRAM


def run(url: str, db: str, fmt: str, profile_out: str | None) -> None:
    started = time.perf_counter()
    from engine.bootstrap import run_policy
    from engine.config import Settings
    from engine.policy.document import load_policy
    from engine.render.stream import decision_writer
    from engine.runs.service import RunSettings

    policy = load_policy(POLICY)
    config = Settings(api_url=url, api_key=KEY, db_url=db)
    ready = time.perf_counter()
    with open("/dev/null", "w", encoding="utf-8") as sink:
        writer = decision_writer(fmt, sink, "bench")
        profiler = None
        if profile_out:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
        report = run_policy(policy, config, RunSettings(now=NOW), on_decision=writer.write)
        writer.close()
        if profiler is not None:
            profiler.stop()
            Path(profile_out or "").write_text(
                profiler.output_text(unicode=False, color=False), encoding="utf-8"
            )
    done = time.perf_counter()
    print(json.dumps({
        "run_seconds": done - ready,
        "startup_seconds": ready - started,
        "enrollments": sum(report.action_counts.values()),
        "unchanged": report.unchanged,
        "needed": report.needed,
    }))  # fmt: skip


def cli(argv: list[str], environ: dict[str, str]) -> None:
    """One ``autoapprove`` command as a user runs it (``--format html`` explains every decision
    and writes the page), its output into a scratch file."""
    import os
    import tempfile

    started = time.perf_counter()
    from engine.cli import main

    os.environ.update(environ)
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "out")
        ready = time.perf_counter()
        code = main([*argv, "--now", NOW.isoformat(), "--out", out])
        done = time.perf_counter()
        size = Path(out).stat().st_size
    if code != 0:
        raise SystemExit(f"autoapprove exited {code}")
    print(json.dumps({"run_seconds": done - ready, "startup_seconds": ready - started, "bytes": size}))


def records(count: int, path: str) -> None:
    from engine.sandbox.generator import generate_enrollments

    with open(path, "w", encoding="utf-8") as out:
        json.dump(list(generate_enrollments(PROGRAM, count, 7, NOW)), out)
    print(json.dumps({"records": count}))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "cli":
        url, db, fmt = args[1:4]
        rules = ["run", "--rules", str(POLICY), "--format", fmt, "--db", db]
        cli(rules, {"FLIP_API_URL": url, "FLIP_API_KEY": KEY})
    elif args[0] == "offline":
        cli(["run", "--rules", str(POLICY), "--input", args[1], "--format", args[2]], {})
    elif args[0] == "records":
        records(int(args[1]), args[2])
    else:
        run(args[1], args[2], args[3], args[4] if len(args) > 4 else None)

"""Policy test cases as YAML, ready to paste under ``cases:`` in a ``*.test.yaml`` file."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import yaml

from engine.policy.cases import Case


def render_cases_yaml(cases: Sequence[Case], now: datetime, policy_label: str) -> str:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# {len(cases)} case(s) from real enrollments, decided by {policy_label} at {stamp}.",
        f'# Paste under `cases:` in a *.test.yaml whose `now:` is "{stamp}".',
    ]
    for case in cases:
        if not case.exact:
            lines.append(
                f"# {case.name}: the policy reads data left out of the case (personal fields); "
                "it expects what the case itself gets"
            )
        text = yaml.dump(  # libyaml's emitter: the same text as safe_dump, several times faster
            [case.as_dict()],
            Dumper=yaml.CSafeDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
            default_flow_style=None,
        )
        lines.append(text.rstrip("\n"))
    return "\n".join(lines) + "\n"

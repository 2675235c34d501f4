"""flip-autoapprove: rule-based auto-approval of Flip utility program enrollments.

The policy engine's public surface. The pipeline adapters (``engine.flip.client``,
``engine.store``, ``engine.sandbox.simulator``) and the wiring (``engine.bootstrap``) are imported
from their modules, so importing ``engine`` never loads httpx or SQLAlchemy.

The names below are loaded on first use (PEP 562): importing a submodule such as
``engine.cli`` (whose ``--help`` must start fast) does not load pydantic, PyYAML and
the JsonLogic library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.errors import AutoapproveError, EvaluationError, InputError, PolicyError
    from engine.policy.decision import Action, Decision, RuleTrace
    from engine.policy.document import Policy, load_policy, load_policy_text, policy_json_schema
    from engine.policy.evaluator import Evaluator
    from engine.policy.explain import Explanation, explain
    from engine.policy.lint import lint_policy
    from engine.policy.logic import evaluate_logic

_HOMES = {
    "Action": "engine.policy.decision",
    "AutoapproveError": "engine.errors",
    "Decision": "engine.policy.decision",
    "EvaluationError": "engine.errors",
    "Evaluator": "engine.policy.evaluator",
    "Explanation": "engine.policy.explain",
    "InputError": "engine.errors",
    "Policy": "engine.policy.document",
    "PolicyError": "engine.errors",
    "RuleTrace": "engine.policy.decision",
    "evaluate_logic": "engine.policy.logic",
    "explain": "engine.policy.explain",
    "lint_policy": "engine.policy.lint",
    "load_policy": "engine.policy.document",
    "load_policy_text": "engine.policy.document",
    "policy_json_schema": "engine.policy.document",
}

__all__ = [
    "Action",
    "AutoapproveError",
    "Decision",
    "EvaluationError",
    "Evaluator",
    "Explanation",
    "InputError",
    "Policy",
    "PolicyError",
    "RuleTrace",
    "evaluate_logic",
    "explain",
    "lint_policy",
    "load_policy",
    "load_policy_text",
    "policy_json_schema",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

"""flip-autoapprove: rule-based auto-approval of Flip utility program enrollments.

The policy engine's public surface. The pipeline adapters (``engine.client``,
``engine.store``, ``engine.simulator``) and the wiring (``engine.bootstrap``) are imported
from their modules, so importing ``engine`` never loads httpx or SQLAlchemy.
"""

from engine.decision import Action, Decision, RuleTrace
from engine.errors import AutoapproveError, EvaluationError, InputError, PolicyError
from engine.evaluator import Evaluator
from engine.explain import Explanation, explain
from engine.lint import lint_policy
from engine.logic import evaluate_logic
from engine.policy import Policy, load_policy, load_policy_text, policy_json_schema

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

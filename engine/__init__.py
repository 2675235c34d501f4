"""flip-autoapprove: rule-based auto-approval of Flip utility program enrollments.

The policy engine's public surface. The pipeline adapters (``engine.flip.client``,
``engine.store``, ``engine.sandbox.simulator``) and the wiring (``engine.bootstrap``) are imported
from their modules, so importing ``engine`` never loads httpx or SQLAlchemy.
"""

from engine.errors import AutoapproveError, EvaluationError, InputError, PolicyError
from engine.policy.decision import Action, Decision, RuleTrace
from engine.policy.document import Policy, load_policy, load_policy_text, policy_json_schema
from engine.policy.evaluator import Evaluator
from engine.policy.explain import Explanation, explain
from engine.policy.lint import lint_policy
from engine.policy.logic import evaluate_logic

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

"""flip-autoapprove: rule-based auto-approval of Flip utility program enrollments."""

from engine.logic import evaluate_logic

__all__ = ["evaluate_logic"]

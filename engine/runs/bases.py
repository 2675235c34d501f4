"""Where the base policy of a diff comes from: a file, ``git:REV`` or ``run:N``.

``git:REV`` is the same path as ``--rules`` at that revision (the everyday "what does my
uncommitted edit change?"); ``run:N`` is the policy text stored with run N. Reading them is
the job of adapters behind ``PolicyTexts``; this module only parses and loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from engine.errors import InputError
from engine.policy.document import Policy, load_policy, load_policy_text


class BaseKind(StrEnum):
    FILE = "file"
    GIT = "git"
    RUN = "run"


@dataclass(frozen=True)
class BaseSpec:
    kind: BaseKind
    value: str  # the path, the revision, or the run number

    @property
    def run_id(self) -> int:
        return int(self.value)


class PolicyTexts(Protocol):
    def git_text(self, path: Path, revision: str) -> tuple[str, str]:
        """``(text, label)`` of ``path`` at ``revision``; ``InputError`` if there is none."""
        ...

    def run_text(self, run_id: int) -> tuple[str, str]:
        """``(text, label)`` of the policy run ``run_id`` used; ``InputError`` if unknown."""
        ...


def parse_base(text: str) -> BaseSpec:
    """``git:REV``, ``run:N`` or a path. Raises ``InputError`` for a malformed one."""
    if text.startswith("git:"):
        revision = text[4:]
        if not revision:
            raise InputError("--base git:REV needs a revision (e.g. git:HEAD)")
        return BaseSpec(BaseKind.GIT, revision)
    if text.startswith("run:"):
        number = text[4:]
        if not number.isdigit() or int(number) <= 0:
            raise InputError(f"--base {text}: run:N needs a run number (see `autoapprove runs`)")
        return BaseSpec(BaseKind.RUN, str(int(number)))
    if not text:
        raise InputError("--base needs a policy file, git:REV or run:N")
    return BaseSpec(BaseKind.FILE, text)


def load_base(spec: BaseSpec, rules: Path, texts: PolicyTexts) -> Policy:
    """The base policy, loaded and compiled like any other (``PolicyError`` if it is broken)."""
    if spec.kind is BaseKind.FILE:
        return load_policy(Path(spec.value))
    if spec.kind is BaseKind.GIT:
        text, label = texts.git_text(rules, spec.value)
    else:
        text, label = texts.run_text(spec.run_id)
    return load_policy_text(text, label)

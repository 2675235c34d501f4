"""Warnings for a policy that loads but probably does not say what its author meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from engine.errors import EvaluationError, Problem, SourceLocation
from engine.policy.document import Policy, ReasonTemplate
from engine.policy.facts import DEVICE_KEYS, ENROLLMENT_KEYS, SITE_KEYS
from engine.policy.logic import (
    VarRead,
    default_engine,
    is_operation,
    operands,
    pointer_path,
    var_reads,
    walk_operations,
)
from engine.policy.yamlsafe import YamlPath

_RELATIONAL = frozenset({"<", "<=", ">", ">="})
_OPEN_OBJECTS = ("program.", "totals.", "site.", "devices.")  # prefixes whose next key is open
PERSONAL_FIELDS = frozenset(
    f"site.{key}"
    for key in ("first_name", "last_name", "email", "street_address", "street_address2", "company_name")
)
_ALWAYS_PRESENT = frozenset({"now", "totals.device_count", "status", "id", "decision.status"})


def lint_policy(policy: Policy) -> list[Problem]:
    """Every warning for a loaded policy: unknown fact paths, unreachable rules, coercions."""
    problems: list[Problem] = []
    for path, condition in policy.expanded.items():
        in_groups = path[0] == "groups"
        for read in var_reads(condition):
            problems.extend(_unknown_path(policy, path, read, in_groups))
        problems.extend(_coercions(policy, path, condition))
    problems.extend(_template_paths(policy))
    problems.extend(_unreachable(policy))
    return problems


def _template_paths(policy: Policy) -> Iterator[Problem]:
    templates: list[tuple[YamlPath, ReasonTemplate]] = [
        (("rules", i, "reason"), rule.reason) for i, rule in enumerate(policy.rules)
    ]
    if policy.default_reason is not None:
        templates.append((("default", "reason"), policy.default_reason))
    for where, template in templates:
        for path in template.paths:
            if path in PERSONAL_FIELDS:
                yield _warn(
                    policy, where,
                    f"{_dotted(where)}: placeholder {{{path}}} copies personal data into the status "
                    "reason, which is sent to Flip and stored",
                )  # fmt: skip
            elif not _known_root(path, in_groups=False):
                suggestion = difflib.get_close_matches(path, _root_candidates(False), n=1, cutoff=0.6)
                yield _warn(
                    policy,
                    where,
                    f"{_dotted(where)}: placeholder {{{path}}} is not a fact",
                    suggestion[0] if suggestion else None,
                )


def _warn(policy: Policy, path: YamlPath, message: str, suggestion: str | None = None) -> Problem:
    line, column = policy.yaml.position(path) or (None, None)
    return Problem(SourceLocation(policy.source, line, column), message, "warning", suggestion)


def _root_candidates(in_groups: bool) -> list[str]:
    names = [*ENROLLMENT_KEYS, *(f"site.{key}" for key in SITE_KEYS), "now", "totals.device_count"]
    names += [f"devices.0.{key}" for key in DEVICE_KEYS]
    if in_groups:
        names += ["decision.status", "decision.rule_id"]
    return names


def _known_root(path: str, in_groups: bool) -> bool:
    head, _, rest = path.partition(".")
    if head in ("program", "totals"):
        return bool(rest)
    if head == "now" or (head in ENROLLMENT_KEYS and not rest):
        return True
    if head == "site":
        key = rest.split(".")[0]
        return key in SITE_KEYS
    if head == "devices":
        parts = rest.split(".")
        return parts[0].isdigit() and (len(parts) == 1 or _known_device(".".join(parts[1:])))
    if head == "decision":
        return in_groups and rest in ("status", "rule_id")
    return head in ENROLLMENT_KEYS and head not in ("devices", "site")


def _known_device(path: str) -> bool:
    head = path.split(".", maxsplit=1)[0]
    return head in DEVICE_KEYS


def _unknown_path(policy: Policy, where: YamlPath, read: VarRead, in_groups: bool) -> Iterator[Problem]:
    if read.path == "":
        return
    location = (*where, *pointer_path(read.pointer))
    if read.scope is None:
        if _known_root(read.path, in_groups):
            return
        candidates = _root_candidates(in_groups)
    elif read.scope.endswith("devices") and "[]" not in read.scope:
        if _known_device(read.path):
            return
        candidates = list(DEVICE_KEYS)
    else:
        return  # inside an iteration over something else: element shape unknown
    suggestion = difflib.get_close_matches(read.path, candidates, n=1, cutoff=0.6)
    scope = f" (inside an iteration over {read.scope})" if read.scope else ""
    yield _warn(
        policy,
        location,
        f"{_dotted(where)}: {read.path!r} is not a fact{scope}",
        suggestion[0] if suggestion else None,
    )


def _coercions(policy: Policy, where: YamlPath, condition: Any) -> Iterator[Problem]:
    for operator, pointer, node in walk_operations(condition):
        if operator not in _RELATIONAL:
            continue
        for arg in operands(node):
            if not (is_operation(arg) and "var" in arg):
                continue
            var_args = operands(arg)
            if len(var_args) > 1 or not var_args or not isinstance(var_args[0], str):
                continue
            path = var_args[0]
            if path in _ALWAYS_PRESENT or not path:
                continue
            yield _warn(
                policy,
                (*where, *pointer_path(pointer)),
                f"{_dotted(where)}: {path!r} compared with {operator!r} is coerced to 0 when it is "
                f'missing; give a default ({{"var": ["{path}", ...]}}) or check it with "missing"',
            )


def _unreachable(policy: Policy) -> Iterator[Problem]:
    engine = default_engine()
    for index, rule in enumerate(policy.rules):
        if rule.condition.reads or _reads_anything(rule.condition.source):
            continue
        try:
            always = engine.truthy(engine.evaluate_json(rule.condition, {}))
        except EvaluationError:
            always = False  # a constant that fails to evaluate is not "always true"
        if not always:
            continue
        for later in range(index + 1, len(policy.rules)):
            yield _warn(
                policy,
                ("rules", later, "id"),
                f"rules.{later}: rule {policy.rules[later].id!r} can never match: "
                f"rule {rule.id!r} above it is always true",
            )
        if policy.document.default is not None:
            yield _warn(policy, ("default",), f"default can never apply: rule {rule.id!r} is always true")
        return


def _reads_anything(condition: Any) -> bool:
    return any(op in ("var", "missing", "missing_some") for op, _, _ in walk_operations(condition))


def _dotted(path: YamlPath) -> str:
    return ".".join(str(part) for part in path)

"""Warnings for a policy that loads but probably does not say what its author meant."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from engine.errors import EvaluationError, Problem
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
from engine.policy.sourcemap import SourceMap
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
    warnings: list[_Warning] = []
    for path, condition in _conditions(policy):
        in_groups = path[0] == "groups"
        for read in var_reads(condition):
            warnings.extend(_unknown_path(path, read, in_groups))
        warnings.extend(_coercions(path, condition))
    warnings.extend(_template_paths(policy))
    warnings.extend(_unreachable(policy))
    if not warnings:
        return []
    sources = SourceMap.of(policy)
    return [
        Problem(sources.location(path), message, "warning", suggestion)
        for path, message, suggestion in warnings
    ]


# Where in the file, what is wrong, and a suggestion.
_Warning = tuple[YamlPath, str, str | None]


def _conditions(policy: Policy) -> Iterator[tuple[YamlPath, Any]]:
    """Every condition as its refs expand, with where it is written."""
    for index, rule in enumerate(policy.rules):
        yield ("rules", index, "when"), rule.condition.source
    for index, group in enumerate(policy.groups):
        yield ("groups", index, "when"), group.source


def _template_paths(policy: Policy) -> Iterator[_Warning]:
    templates: list[tuple[YamlPath, ReasonTemplate]] = [
        (("rules", i, "reason"), rule.reason) for i, rule in enumerate(policy.rules)
    ]
    if policy.default_reason is not None:
        templates.append((("default", "reason"), policy.default_reason))
    for where, template in templates:
        for path in template.paths:
            if path in PERSONAL_FIELDS:
                yield (
                    where,
                    f"{_dotted(where)}: placeholder {{{path}}} copies personal data into the status "
                    "reason, which is sent to Flip and stored",
                    None,
                )
            elif not _known_root(path, in_groups=False):
                suggestion = difflib.get_close_matches(path, _root_candidates(False), n=1, cutoff=0.6)
                yield (
                    where,
                    f"{_dotted(where)}: placeholder {{{path}}} is not a fact",
                    suggestion[0] if suggestion else None,
                )


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


def _unknown_path(where: YamlPath, read: VarRead, in_groups: bool) -> Iterator[_Warning]:
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
    yield (
        location,
        f"{_dotted(where)}: {read.path!r} is not a fact{scope}",
        suggestion[0] if suggestion else None,
    )


def _coercions(where: YamlPath, condition: Any) -> Iterator[_Warning]:
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
            yield (
                (*where, *pointer_path(pointer)),
                f"{_dotted(where)}: {path!r} compared with {operator!r} is coerced to 0 when it is "
                f'missing; give a default ({{"var": ["{path}", ...]}}) or check it with "missing"',
                None,
            )


def _unreachable(policy: Policy) -> Iterator[_Warning]:
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
            yield (
                ("rules", later, "id"),
                f"rules.{later}: rule {policy.rules[later].id!r} can never match: "
                f"rule {rule.id!r} above it is always true",
                None,
            )
        if policy.document.default is not None:
            yield ("default",), f"default can never apply: rule {rule.id!r} is always true", None
        return


def _reads_anything(condition: Any) -> bool:
    return any(op in ("var", "missing", "missing_some") for op, _, _ in walk_operations(condition))


def _dotted(path: YamlPath) -> str:
    return ".".join(str(part) for part in path)

"""The policy file: its schema (the contract with policy authors), loading and compiling.

Loading does everything that can fail before the first enrollment is seen: safe YAML,
schema validation with ``file:line:column`` errors, ``ref`` expansion (unknown names and
cycles are errors), operator checks, reason templates, and compiling every condition.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from engine.errors import PolicyError, Problem, SourceLocation
from engine.policy.decision import DEFAULT_RULE_ID, Action, Decision
from engine.policy.logic import (
    Condition,
    LogicEngine,
    default_engine,
    is_operation,
    missing_keys,
    operands,
    pointer_path,
    root_paths,
)
from engine.policy.schema import JsonLogic, RuleCondition, with_condition_definitions
from engine.policy.statuses import EnrollmentStatus, GroupId, not_a_status
from engine.policy.yamlsafe import KEY_MARKER, MAX_YAML_BYTES, LoadedYaml, YamlPath, load_yaml

RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=100)]
MAX_RULES = 1_000
MAX_CONDITION_NODES = 5_000

SCHEMA_COMMENT = "# yaml-language-server: $schema="


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ApprovalSetting = Literal["required"]
_APPROVAL_DESCRIPTION = (
    "required: every change this decides waits in the review queue for a person "
    "(autoapprove review) instead of being sent by a live run."
)


class DefaultOutcome(_Strict):
    """The outcome when no rule matches."""

    status: EnrollmentStatus
    reason: str
    approval: ApprovalSetting | None = Field(default=None, description=_APPROVAL_DESCRIPTION)


class StatusRule(_Strict):
    """A status rule: the first whose ``when`` is truthy decides status and reason."""

    id: RuleId
    description: str | None = None
    when: RuleCondition = Field(description='A JsonLogic condition; {"ref": name} uses a definition.')
    status: EnrollmentStatus
    reason: str = Field(description="Text sent with the status; {path} placeholders, {{ }} escape.")
    approval: ApprovalSetting | None = Field(default=None, description=_APPROVAL_DESCRIPTION)


class GroupRule(_Strict):
    """A group rule: every entry whose ``when`` is truthy applies, in file order."""

    id: RuleId
    description: str | None = None
    when: RuleCondition = Field(description="A JsonLogic condition; may read decision.status.")
    add: list[GroupId] = Field(default_factory=list)
    remove: list[GroupId] = Field(default_factory=list)


class PolicyLimits(_Strict):
    """Safety limits for live runs."""

    max_reject_ratio: float | None = Field(default=None, ge=0, le=1)
    max_changes: int | None = Field(default=None, ge=0)
    allow_leaving_active: list[EnrollmentStatus] = Field(
        default_factory=list,
        description="Statuses a rule may move an ACTIVE enrollment to; others are held.",
    )


class ReviewSettings(_Strict):
    """Which changes a live run leaves for a person to approve (``autoapprove review``)."""

    require_approval: list[EnrollmentStatus] = Field(
        default_factory=list,
        description="Changes TO these statuses wait in the review queue; nothing is sent for them "
        "until a person approves (e.g. [REJECTED, UNENROLLED]: a rejection is final for the customer).",
    )


class PolicyDocument(_Strict):
    """One policy file: the rules for one Flip program."""

    program_id: str = Field(min_length=1)
    name: str | None = None
    version: str | None = None
    applies_to: list[EnrollmentStatus] = Field(min_length=1)
    definitions: dict[str, JsonLogic] = Field(default_factory=dict)
    rules: list[StatusRule] = Field(min_length=1, max_length=MAX_RULES)
    default: DefaultOutcome | None = None
    groups: list[GroupRule] = Field(default_factory=list, max_length=MAX_RULES)
    limits: PolicyLimits = Field(default_factory=PolicyLimits)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of policy files, from the same model the loader uses."""
    schema = with_condition_definitions(PolicyDocument.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flip-autoapprove policy"
    return schema


# --- reason templates --------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


@dataclass(frozen=True)
class ReasonTemplate:
    """``"Site is in {site.state_code}"``: literal parts and fact paths, parsed once."""

    text: str
    parts: tuple[tuple[bool, str], ...]  # (is_path, literal text or path)

    @classmethod
    def parse(cls, text: str) -> ReasonTemplate:
        parts: list[tuple[bool, str]] = []
        last = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append((False, text[last : match.start()]))
            token = match.group(0)
            if token in ("{{", "}}"):
                parts.append((False, token[0]))
            elif match.group(1) is not None and match.group(1).strip():
                parts.append((True, match.group(1).strip()))
            else:
                raise ValueError(f"unbalanced or empty brace at character {match.start() + 1}")
            last = match.end()
        parts.append((False, text[last:]))
        return cls(text, tuple(part for part in parts if part[1]))  # a path is never empty

    @property
    def paths(self) -> list[str]:
        return [value for is_path, value in self.parts if is_path]

    def render(self, lookup: Any) -> str:
        """Fill placeholders with ``lookup(path)``; a value that is missing renders empty."""
        return "".join(_as_text(lookup(value)) if is_path else value for is_path, value in self.parts)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


# --- compiled policy ---------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledRule:
    id: str
    condition: Condition
    status: str
    reason: ReasonTemplate


@dataclass
class CompiledGroupRule:
    """A group rule; compiled once per decided outcome when it reads ``decision.*``."""

    id: str
    source: Any
    add: tuple[str, ...]
    remove: tuple[str, ...]
    reads_decision: bool
    condition: Condition | None = None
    _by_outcome: dict[tuple[str | None, str | None], Condition] = field(default_factory=dict)

    def condition_for(self, engine: LogicEngine, status: str | None, rule_id: str | None) -> Condition:
        if not self.reads_decision:
            assert self.condition is not None
            return self.condition
        key = (status, rule_id)
        found = self._by_outcome.get(key)
        if found is None:
            decided = {"status": status, "rule_id": rule_id}
            found = engine.compile(substitute_decision(self.source, decided))
            self._by_outcome[key] = found
        return found


@dataclass
class Policy:
    """A loaded, validated and compiled policy, ready to evaluate enrollments.

    Only what evaluating needs (and the text, to store and explain it): where each part is
    written in the file is for lint and reports (``engine.policy.sourcemap.SourceMap``).
    """

    document: PolicyDocument
    source: str
    source_text: str
    content_hash: str
    rules: list[CompiledRule]
    groups: list[CompiledGroupRule]
    default_reason: ReasonTemplate | None
    read_paths: tuple[str, ...]

    @property
    def program_id(self) -> str:
        return self.document.program_id

    @property
    def name(self) -> str | None:
        return self.document.name

    @property
    def version(self) -> str | None:
        return self.document.version

    @property
    def applies_to(self) -> frozenset[str]:
        return frozenset(status.value for status in self.document.applies_to)

    @property
    def approval_statuses(self) -> frozenset[str]:
        """The statuses a change to which waits for a person (``review.require_approval``)."""
        return frozenset(status.value for status in self.document.review.require_approval)

    @property
    def approval_rules(self) -> frozenset[str]:
        """The rule ids (``default`` included) marked ``approval: required``."""
        rules = {rule.id for rule in self.document.rules if rule.approval == "required"}
        default = self.document.default
        if default is not None and default.approval == "required":
            rules.add(DEFAULT_RULE_ID)
        return frozenset(rules)

    def requires_approval(self, decision: Decision) -> bool:
        """Whether a person must approve this decision's change before it is sent.

        A change TO a status in ``review.require_approval`` waits; so does every change
        (status or groups: the groups may read the decision) decided by a rule marked
        ``approval: required``. Decisions that change nothing never wait.
        """
        if decision.action is not Action.UPDATE:
            return False
        if decision.status_changes and decision.status in self.approval_statuses:
            return True
        return decision.rule_id in self.approval_rules


def substitute_decision(node: Any, decided: dict[str, Any]) -> Any:
    """Put the decided outcome into a group condition (root scope only).

    ``{"var": "decision.status"}`` becomes the decided value; a null one is left as the
    ``var`` (facts have no ``decision`` object, so it reads null or its default and keeps
    JavaScript equality). ``missing`` of ``decision.*`` keys is settled the same way.
    """
    if isinstance(node, list):
        return [substitute_decision(item, decided) for item in node]
    if not is_operation(node):
        return node
    (operator,) = node
    args = operands(node)
    if operator == "var" and args and isinstance(args[0], str) and args[0].startswith("decision"):
        key = args[0][len("decision.") :]  # "" for the whole decision
        value = decided.get(key) if key else dict(decided)
        return node if value is None else value
    if operator == "missing":
        return _substitute_missing(node, args, decided)
    if operator in ("some", "all", "none", "filter", "map", "reduce") and len(args) >= 2:
        return {operator: [substitute_decision(args[0], decided), args[1], *args[2:]]}
    return {operator: [substitute_decision(arg, decided) for arg in args]}


def _substitute_missing(node: dict[str, Any], args: list[Any], decided: dict[str, Any]) -> Any:
    keys = missing_keys("missing", args)
    if not all(isinstance(key, str) for key in keys) or not any(k.startswith("decision.") for k in keys):
        return node
    settled = [k for k in keys if k.startswith("decision.") and decided.get(k[9:]) in (None, "")]
    others = [k for k in keys if not k.startswith("decision.")]
    return {"merge": [settled, {"missing": others}]} if others else settled


# --- loading -----------------------------------------------------------------------------


def load_policy(path: str | Path, engine: LogicEngine | None = None) -> Policy:
    """Read, validate and compile a policy file. Raises ``PolicyError`` with every problem."""
    source = str(path)
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)  # never more than the limit into memory
    except OSError as exc:
        raise PolicyError.at(source, f"cannot read the file: {exc.strerror or exc}") from exc
    if len(raw) > MAX_YAML_BYTES:
        raise PolicyError.at(source, f"file is larger than {MAX_YAML_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError.at(source, "the file is not UTF-8 text") from exc
    return load_policy_text(text, source, engine)


def load_policy_text(text: str, source: str = "<policy>", engine: LogicEngine | None = None) -> Policy:
    """Validate and compile policy YAML text. Raises ``PolicyError`` with every problem."""
    loaded = load_yaml(text, source)
    document = _validate(loaded, source)
    compiler = _Compiler(engine or default_engine(), loaded, source, document)
    return compiler.build(text)


def _validate(loaded: LoadedYaml, source: str) -> PolicyDocument:
    if not isinstance(loaded.data, dict):
        raise PolicyError.at(source, "a policy must be a mapping of keys to values", 1, 1)
    try:
        return PolicyDocument.model_validate(loaded.data)
    except ValidationError as exc:
        raise PolicyError([_problem(loaded, source, error) for error in exc.errors()]) from exc


def _problem(loaded: LoadedYaml, source: str, error: Any) -> Problem:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    lookup_path = (*loc, KEY_MARKER) if error["type"] == "extra_forbidden" else loc
    line, column = loaded.position(lookup_path) or (None, None)
    where = ".".join(str(part) for part in loc) or "policy"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "enum":
        message = not_a_status(error["input"])
    elif error["type"] == "string_pattern_mismatch":
        message = f"{error['input']!r} must be letters, digits, '-' or '_'"
    return Problem(SourceLocation(source, line, column), f"{where}: {message}")


class _Compiler:
    """Expands refs, checks operators and templates, compiles conditions."""

    def __init__(
        self, engine: LogicEngine, loaded: LoadedYaml, source: str, document: PolicyDocument
    ) -> None:
        self.engine = engine
        self.loaded = loaded
        self.source = source
        self.document = document
        self.problems: list[Problem] = []

    def error(self, path: YamlPath, message: str) -> None:
        line, column = self.loaded.position(path) or (None, None)
        self.problems.append(Problem(SourceLocation(self.source, line, column), message))

    def build(self, text: str) -> Policy:
        self._check_unique_ids()
        self._check_definitions()
        if self.problems:  # a broken definition is reported once, where it is written
            raise PolicyError(self.problems)
        rules = self._compile_rules()
        groups = self._compile_groups()
        default = self.document.default
        default_reason = self._template(default.reason, ("default", "reason")) if default else None
        if self.problems:
            raise PolicyError(self.problems)
        reads: dict[str, None] = {}
        for rule in rules:
            reads.update(dict.fromkeys(rule.condition.reads))
            reads.update(dict.fromkeys(rule.reason.paths))
        for group in groups:
            reads.update(dict.fromkeys(p for p in root_paths(group.source) if not p.startswith("decision")))
        if default_reason:
            reads.update(dict.fromkeys(default_reason.paths))
        return Policy(
            document=self.document,
            source=self.source,
            source_text=text,
            content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            rules=rules,
            groups=groups,
            default_reason=default_reason,
            read_paths=tuple(reads),
        )

    def _check_unique_ids(self) -> None:
        sections = (
            ("rules", [rule.id for rule in self.document.rules]),
            ("groups", [group.id for group in self.document.groups]),
        )
        for section, ids in sections:
            seen: set[str] = set()
            for index, entry_id in enumerate(ids):
                if entry_id in seen:
                    self.error((section, index, "id"), f"{section}[{index}].id: duplicate id {entry_id!r}")
                seen.add(entry_id)

    def _check_definitions(self) -> None:
        """Every definition must expand and use known operators, even one no rule uses yet."""
        definitions = self.document.definitions
        in_reported_cycle: set[str] = set()
        for name, body in definitions.items():
            path: YamlPath = ("definitions", name)
            try:
                expanded = _expand_refs(body, definitions, (name,))
            except _RefError as exc:
                if name not in in_reported_cycle:
                    self.error(path, f"definitions.{name}: {exc}")
                in_reported_cycle.update(exc.cycle)
                continue
            for operator, pointer in self.engine.unknown_operators(expanded):
                self.error(
                    (*path, *pointer_path(pointer)), f"definitions.{name}: unknown operator {operator!r}"
                )

    def _compile_rules(self) -> list[CompiledRule]:
        compiled = []
        for index, rule in enumerate(self.document.rules):
            condition = self._condition(rule.when, ("rules", index, "when"))
            reason = self._template(rule.reason, ("rules", index, "reason"))
            if condition is not None and reason is not None:
                compiled.append(CompiledRule(rule.id, condition, rule.status.value, reason))
        return compiled

    def _compile_groups(self) -> list[CompiledGroupRule]:
        compiled = []
        for index, group in enumerate(self.document.groups):
            path: YamlPath = ("groups", index, "when")
            expanded = self._expand(group.when, path)
            if expanded is None:
                continue
            reads_decision = any(p.startswith("decision") for p in root_paths(expanded))
            entry = CompiledGroupRule(
                group.id, expanded, tuple(group.add), tuple(group.remove), reads_decision
            )
            probe = substitute_decision(expanded, {"status": None, "rule_id": None})
            condition = self._compile(probe, path)
            if condition is None:
                continue
            if not reads_decision:
                entry.condition = condition
            compiled.append(entry)
        return compiled

    def _condition(self, when: Any, path: YamlPath) -> Condition | None:
        expanded = self._expand(when, path)
        return None if expanded is None else self._compile(expanded, path)

    def _compile(self, expanded: Any, path: YamlPath) -> Condition | None:
        for operator, pointer in self.engine.unknown_operators(expanded):
            where = pointer_path(pointer)
            self.error((*path, *where), f"{'.'.join(map(str, path))}: unknown operator {operator!r}")
        if self.problems:
            return None
        try:
            return self.engine.compile(expanded)
        except ValueError as exc:
            self.error(path, f"{'.'.join(map(str, path))}: {exc}")
            return None

    def _expand(self, node: Any, path: YamlPath) -> Any:
        if node is None:  # `when:` left empty: a rule that could never match, said so
            where = ".".join(map(str, path))
            self.error(path, f"{where}: a condition is required (`true` matches every enrollment)")
            return None
        try:
            expanded = _expand_refs(node, self.document.definitions, ())
        except _RefError as exc:
            self.error(path, f"{'.'.join(map(str, path))}: {exc}")
            return None
        return expanded

    def _template(self, text: str, path: YamlPath) -> ReasonTemplate | None:
        try:
            return ReasonTemplate.parse(text)
        except ValueError as exc:
            self.error(
                path, f"{'.'.join(map(str, path))}: reason template: {exc} (write {{{{ or }}}} for a brace)"
            )
            return None


class _RefError(Exception):
    def __init__(self, message: str, cycle: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.cycle = cycle


MAX_REF_DEPTH = 32


def _expand_refs(
    node: Any, definitions: dict[str, Any], stack: tuple[str, ...], budget: list[int] | None = None
) -> Any:
    """Replace ``{"ref": name}`` by the definition, refusing unknown names, cycles, chains
    deeper than ``MAX_REF_DEPTH`` and expansions beyond ``MAX_CONDITION_NODES`` (a small
    file whose definitions each use the next twice would otherwise grow exponentially)."""
    budget = [MAX_CONDITION_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise _RefError(f"condition too large: more than {MAX_CONDITION_NODES} parts (refs expanded)")
    if isinstance(node, list):
        return [_expand_refs(item, definitions, stack, budget) for item in node]
    if not is_operation(node):
        return node
    (operator,) = node
    if operator == "ref":
        name = node["ref"]
        if not isinstance(name, str) or name not in definitions:
            known = ", ".join(sorted(definitions)) or "none"
            raise _RefError(f"unknown ref {name!r} (definitions: {known})")
        if name in stack:
            raise _RefError(f"ref cycle: {' -> '.join((*stack, name))}", (*stack, name))
        if len(stack) >= MAX_REF_DEPTH:
            chain = " -> ".join(stack[:3])
            raise _RefError(f"refs nested too deep (more than {MAX_REF_DEPTH}): {chain} -> ...")
        return _expand_refs(definitions[name], definitions, (*stack, name), budget)
    return {operator: _expand_refs(node[operator], definitions, stack, budget)}


def expand_refs(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every ``{"ref": name}`` replaced by its definition (of a loaded policy,
    whose refs are known to expand)."""
    try:
        return _expand_refs(node, definitions, ())
    except _RefError as exc:
        raise ValueError(str(exc)) from exc

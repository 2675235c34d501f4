"""JsonLogic conditions: the one module that knows which JsonLogic library we use.

The library is datalogic-py (a Rust core: compile once, evaluate many against a pre-parsed
``DataHandle``), chosen by measurement (see ``bench/``). Three things are added on top of it,
all as rewrites or custom operators at compile time so the hot path stays native:

* ``missing`` / ``missing_some`` follow json-logic-js: a null or empty-string value counts as
  missing (datalogic-py counts them as present).
* ``==`` / ``!=`` between a value and a non-null literal are false / true when the value is
  null, as in JavaScript (datalogic-py coerces ``null == 0`` and ``null == ""`` to true).
* The ``days_between`` operator for dates.

Only the classic JsonLogic operators plus ours are accepted; the library's many extensions
(and anything like json-logic-qubit's ``method``) are refused at load time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import datalogic_py

from engine.errors import EvaluationError

CLASSIC_OPERATORS = frozenset(
    {
        "var", "missing", "missing_some", "if", "?:", "==", "===", "!=", "!==", "!", "!!",
        "or", "and", ">", ">=", "<", "<=", "max", "min", "+", "-", "*", "/", "%",
        "map", "reduce", "filter", "all", "none", "some", "merge", "in", "cat", "substr",
    }
)  # fmt: skip
CUSTOM_OPERATORS = frozenset({"days_between"})
ALLOWED_OPERATORS = CLASSIC_OPERATORS | CUSTOM_OPERATORS
# Operators whose second argument is evaluated once per element, with `var` reading the element.
SCOPED_OPERATORS = frozenset({"map", "reduce", "filter", "all", "none", "some"})

_MISSING_OP = "__aa_missing"
_MISSING_SOME_OP = "__aa_missing_some"


def is_operation(node: Any) -> bool:
    """A JsonLogic operation is an object with exactly one key."""
    return isinstance(node, dict) and len(node) == 1


def operands(node: dict[str, Any]) -> list[Any]:
    """The argument list of an operation (a lone argument is a list of one)."""
    (args,) = node.values()
    return args if isinstance(args, list) else [args]


def walk_operations(node: Any, pointer: str = "") -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield ``(operator, json_pointer, node)`` for every operation in a condition."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk_operations(item, f"{pointer}/{index}")
    elif is_operation(node):
        (operator,) = node
        yield operator, pointer, node
        yield from walk_operations(node[operator], f"{pointer}/{_escape(operator)}")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointer_path(pointer: str) -> tuple[str | int, ...]:
    """A JSON pointer (``/and/0/var``) as a path of keys and indexes."""
    parts: list[str | int] = []
    for token in pointer.split("/")[1:]:
        text = token.replace("~1", "/").replace("~0", "~")
        parts.append(int(text) if text.isdigit() else text)
    return tuple(parts)


# --- reads: which facts a condition looks at -------------------------------------------


@dataclass(frozen=True)
class VarRead:
    """One ``var`` in a condition: its path, whether it has a default, and its scope."""

    path: str
    has_default: bool
    scope: str | None  # None at the root; else the path of the collection being iterated
    pointer: str


def var_reads(node: Any, scope: str | None = None, pointer: str = "") -> Iterator[VarRead]:
    """Every literal ``var`` path a condition reads, with the collection scope it is read in."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from var_reads(item, scope, f"{pointer}/{index}")
        return
    if not is_operation(node):
        return
    (operator,) = node
    args = operands(node)
    here = f"{pointer}/{_escape(operator)}"
    if operator == "var":
        if args and isinstance(args[0], str | int):
            yield VarRead(str(args[0]), len(args) > 1, scope, pointer)
        return
    if operator in ("missing", "missing_some"):
        keys = _literal_keys(args[1:2] if operator == "missing_some" else args)
        for key in keys or []:
            yield VarRead(key, True, scope, pointer)
    if operator in SCOPED_OPERATORS and len(args) >= 2:
        yield from var_reads(args[0], scope, f"{here}/0")
        inner = _collection_path(args[0], scope)
        yield from var_reads(args[1], inner, f"{here}/1")
        for index, arg in enumerate(args[2:], start=2):
            yield from var_reads(arg, scope, f"{here}/{index}")
        return
    for index, arg in enumerate(args):
        yield from var_reads(arg, scope, f"{here}/{index}")


def _collection_path(node: Any, scope: str | None) -> str:
    if is_operation(node) and "var" in node:
        args = operands(node)
        if args and isinstance(args[0], str):
            return f"{scope}[].{args[0]}" if scope else args[0]
    return "?"  # iterating over something computed: reads inside are not checked


def root_paths(node: Any) -> list[str]:
    """Root-scope paths a condition reads, plus the collections it iterates, in order."""
    seen: dict[str, None] = {}
    for read in var_reads(node):
        root = read.path if read.scope is None else read.scope.split("[]")[0]
        if root and root != "?":
            seen.setdefault(root, None)
    return list(seen)


# --- rewrites ---------------------------------------------------------------------------


def normalize(node: Any) -> Any:
    """Rewrite a condition so the library evaluates it with json-logic-js semantics."""
    if isinstance(node, list):
        return [normalize(item) for item in node]
    if not is_operation(node):
        return node
    (operator,) = node
    args = [normalize(arg) for arg in operands(node)]
    if operator == "missing":
        return _rewrite_missing(node[operator], args)
    if operator == "missing_some":
        return _rewrite_missing_some(args)
    if operator in ("==", "!="):
        return _rewrite_loose_equality(operator, args)
    return {operator: args}


def _literal_keys(args: list[Any]) -> list[str] | None:
    """The key list of ``missing`` when it is written literally, else None (computed)."""
    keys = args[0] if len(args) == 1 and isinstance(args[0], list) else args
    if all(isinstance(key, str | int) and not isinstance(key, bool) for key in keys):
        return [str(key) for key in keys]
    return None


def _absent(key: str) -> dict[str, Any]:
    value = {"var": key}
    return {"or": [{"===": [value, None]}, {"===": [value, ""]}]}


def _missing_list(keys: list[str]) -> Any:
    if not keys:
        return {"merge": []}
    return {"merge": [{"if": [_absent(key), [key], []]} for key in keys]}


def _rewrite_missing(raw: Any, args: list[Any]) -> Any:
    keys = _literal_keys(args)
    if keys is not None:
        return _missing_list(keys)
    # Computed keys: hand the keys and the current data to a custom operator.
    computed = args[0] if len(args) == 1 else {"merge": args}
    return {_MISSING_OP: [computed, {"var": ""}]}


def _rewrite_missing_some(args: list[Any]) -> Any:
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], list):
        keys = _literal_keys([args[1]])
        if keys is not None:
            if not keys:
                return {"merge": []}
            present = {"+": [{"if": [_absent(key), 0, 1]} for key in keys]}
            return {"if": [{">=": [present, args[0]]}, {"merge": []}, _missing_list(keys)]}
    return {_MISSING_SOME_OP: [*args[:2], {"var": ""}]}


def _is_plain_literal(node: Any) -> bool:
    return node is not None and isinstance(node, str | int | float | bool)


def _rewrite_loose_equality(operator: str, args: list[Any]) -> Any:
    plain = {operator: args}
    if len(args) != 2:
        return plain
    left, right = args
    if _is_plain_literal(left) == _is_plain_literal(right):
        return plain
    value = right if _is_plain_literal(left) else left
    if value is None:
        return plain
    # JavaScript: null == <non-null literal> is false (datalogic-py coerces null to 0 or "").
    return {"if": [{"===": [value, None]}, operator == "!=", plain]}


# --- custom operators (called by the library with JSON text) ----------------------------


def _json_operator(func: Callable[..., Any]) -> Callable[[str], str]:
    def call(arguments: str) -> str:
        args = json.loads(arguments)
        return json.dumps(func(*args) if isinstance(args, list) else func(args))

    return call


def _missing_keys(keys: Any, data: Any) -> list[Any]:
    if not isinstance(keys, list):
        keys = [keys]
    return [key for key in keys if lookup(data, key) in (None, "")]


def _missing_some(need: Any, keys: Any, data: Any) -> list[Any]:
    missing = _missing_keys(keys, data)
    wanted = need if isinstance(need, int) else 0
    return [] if len(keys) - len(missing) >= wanted else missing


def lookup(data: Any, path: Any) -> Any:
    """The value at a dotted path (``site.zip_code``, ``devices.0.type``), or None."""
    current = data
    for part in str(path).split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def parse_date(value: Any) -> date | None:
    """An ISO date or date-time (``2026-03-14``, ``2026-03-14T10:00:00Z``) as a date, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date()


def days_between(start: Any = None, end: Any = None, *_: Any) -> int | None:
    """Whole days from ``start`` to ``end`` (negative when end is earlier); null if unknown."""
    first, last = parse_date(start), parse_date(end)
    if first is None or last is None:
        return None
    return (last - first).days


_CUSTOM_IMPLEMENTATIONS: dict[str, Callable[[str], str]] = {
    "days_between": _json_operator(days_between),
    _MISSING_OP: _json_operator(_missing_keys),
    _MISSING_SOME_OP: _json_operator(_missing_some),
}


# --- compile and evaluate ---------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One compiled condition: the source as written (refs expanded) and the native rule."""

    source: Any
    normalized: Any
    native: datalogic_py.Rule = field(repr=False, compare=False)
    reads: tuple[str, ...] = ()


class LogicEngine:
    """Compiles conditions and evaluates them; one per process is plenty (thread-safe)."""

    def __init__(self) -> None:
        self._engine = datalogic_py.Engine(custom_operators=_CUSTOM_IMPLEMENTATIONS)
        self._sessions = threading.local()

    def unknown_operators(self, rule: Any) -> list[tuple[str, str]]:
        """``(operator, pointer)`` for every operator that is not allowed."""
        return [
            (operator, pointer)
            for operator, pointer, _ in walk_operations(rule)
            if operator not in ALLOWED_OPERATORS
        ]

    def compile(self, rule: Any) -> Condition:
        """Compile a condition (refs already expanded). Raises ``ValueError`` on a bad rule."""
        bad = self.unknown_operators(rule)
        if bad:
            operator, pointer = bad[0]
            raise ValueError(f"unknown operator {operator!r} at {pointer or '/'}")
        normalized = normalize(rule)
        try:
            native = self._engine.compile(json.dumps(normalized))
        except datalogic_py.DataLogicError as exc:
            raise ValueError(f"cannot compile condition: {exc}") from exc
        return Condition(rule, normalized, native, tuple(root_paths(rule)))

    def session(self) -> LogicSession:
        """A hot-loop evaluator; safe to share, each thread gets its own native session."""
        return LogicSession(self._engine, self._sessions)

    def evaluate_json(self, condition: Condition, data: Any) -> Any:
        """Evaluate and return the condition's value (not just its truthiness)."""
        try:
            return condition.native.evaluate(json.dumps(data))
        except datalogic_py.DataLogicError as exc:
            raise EvaluationError(_describe(exc)) from exc

    def truthy(self, value: Any) -> bool:
        """JsonLogic truthiness (``[]``, ``0``, ``""``, ``null`` and ``"0"``-free rules)."""
        return bool(self._engine.truthy(json.dumps(value)))


class LogicSession:
    """Evaluates compiled conditions against facts converted once per enrollment.

    The library's native sessions may only be used, and dropped, by the thread that made
    them. They live in thread-local storage, never in objects the garbage collector could
    free on another thread; each call picks the current thread's session.
    """

    def __init__(self, engine: datalogic_py.Engine, sessions: threading.local) -> None:
        self._engine = engine
        self._sessions = sessions

    @property
    def _session(self) -> datalogic_py.Session:
        session: datalogic_py.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = self._engine.session()
            self._sessions.session = session
        return session

    @staticmethod
    def prepare(facts: Any) -> datalogic_py.DataHandle:
        """Convert facts once; evaluate many conditions against the result.

        Values the library cannot hold (integers beyond 64 bits, lone surrogates) are
        made representable on a second try, so one odd field does not spoil a decision.
        """
        try:
            return datalogic_py.DataHandle(facts)
        except datalogic_py.DataLogicError:
            pass
        try:
            return datalogic_py.DataHandle(representable(facts))
        except datalogic_py.DataLogicError as exc:
            raise EvaluationError(f"enrollment data cannot be evaluated: {_describe(exc)}") from exc

    def truthy_function(self) -> Any:
        """The native ``(rule, handle) -> bool`` call, for hot loops (raises ``LogicError``)."""
        return self._session.evaluate_truthy

    def value(self, condition: Condition, data: datalogic_py.DataHandle) -> Any:
        """The condition's value (not just its truthiness), as a Python value."""
        try:
            return self._session.evaluate_data(condition.native, data)
        except datalogic_py.DataLogicError as exc:
            raise EvaluationError(_describe(exc)) from exc

    def is_true(self, condition: Condition, data: datalogic_py.DataHandle) -> bool:
        try:
            return self._session.evaluate_truthy(condition.native, data)
        except datalogic_py.DataLogicError as exc:
            raise EvaluationError(_describe(exc)) from exc


_INT64 = 2**63


def representable(value: Any) -> Any:
    """A copy where out-of-range integers become floats and lone surrogates become U+FFFD."""
    if isinstance(value, dict):
        return {representable(k): representable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [representable(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


LogicError = datalogic_py.DataLogicError  # what native calls raise


def describe_logic_error(exc: Exception) -> str:
    """A short description of a library error, for decisions and messages."""
    return _describe(exc) if isinstance(exc, datalogic_py.DataLogicError) else str(exc)


def _describe(exc: datalogic_py.DataLogicError) -> str:
    operator = getattr(exc, "operator", None)
    where = f" in {operator!r}" if operator else ""
    text = str(exc).split(" (in operator", 1)[0]
    if '"NaN"' in text or "NaN" in text:
        text = "a value is not a number"
    return f"{text}{where}"


_DEFAULT_ENGINE: list[LogicEngine] = []


def default_engine() -> LogicEngine:
    """The process-wide engine, built on first use (never at import)."""
    if not _DEFAULT_ENGINE:
        _DEFAULT_ENGINE.append(LogicEngine())
    return _DEFAULT_ENGINE[0]


def evaluate_logic(rule: Any, data: Any) -> Any:
    """Apply one JsonLogic condition to ``data`` through exactly the path policies use."""
    engine = default_engine()
    try:
        condition = engine.compile(rule)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    return engine.evaluate_json(condition, data)

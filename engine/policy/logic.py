"""JsonLogic conditions: the one module that knows which JsonLogic library we use.

The library is datalogic-py (a Rust core: compile once, evaluate many against a pre-parsed
``DataHandle``), chosen by measurement (see ``bench/``). Three things are added on top of it,
all as rewrites or custom operators at compile time so the hot path stays native:

* ``missing`` / ``missing_some`` follow json-logic-js: a null or empty-string value counts as
  missing (datalogic-py counts them as present).
* ``==`` / ``!=`` between a value and a non-null literal are false / true when the value is
  null, as in JavaScript (datalogic-py coerces ``null == 0`` and ``null == ""`` to true).
* An object, even ``{}``, is truthy (datalogic-py counts ``{}`` as falsy) wherever
  truthiness decides: ``!``, ``!!``, ``if``/``?:``, ``and``/``or``, the predicate of
  ``filter``/``some``/``all``/``none``, and a rule's ``when`` itself.
* ``merge`` keeps ``null`` items (datalogic-py drops them).
* The ``days_between`` operator for dates.

Both references (json-logic-js and the community's test suites) agree on each of these.
Only operands that can hold an object (``var``, ``reduce``, ``if``/``and``/``or`` over
such) get the truthiness rewrite, so comparisons and the usual ``and`` of comparisons
compile exactly as written.

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
from engine.policy.text import joined_surrogates

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
        keys = literal_keys(missing_keys(operator, args))
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
    """Rewrite a condition so the library returns the value json-logic-js returns."""
    if isinstance(node, list):
        return [normalize(item) for item in node]
    if not is_operation(node):
        return node
    (operator,) = node
    rewrite = _VALUE_REWRITES.get(operator, _plain)
    return rewrite(operator, operands(node))


def normalize_test(node: Any) -> Any:
    """Rewrite a condition whose truthiness is all that counts (a ``when``, an ``if`` test).

    The result may have another value than the condition, but the library finds it truthy
    exactly when json-logic-js finds the condition truthy; that needs no second evaluation
    of ``and``/``or`` operands.
    """
    if _is_literal_object(node):
        return True
    if is_operation(node):
        (operator,) = node
        if operator in ("and", "or"):
            return {operator: [normalize_test(arg) for arg in operands(node)]}
        if operator in ("if", "?:"):
            return {operator: _if_arguments(operands(node), normalize_test)}
        if operator == "!!" and operands(node):  # only truthiness counts: `!!x` is x
            return normalize_test(operands(node)[0])
    value = normalize(node)
    return _object_is_truthy(node, value) if _may_be_object(node) else value


def _object_is_truthy(node: Any, value: Any) -> Any:
    if is_operation(node) and "var" in node:  # reading twice is cheaper than wrapping
        return {"or": [value, _is_object(value)]}
    element = {"var": ""}
    return {"some": [[value], {"or": [element, _is_object(element)]}]}  # evaluates `value` once


def _plain(operator: str, raw: list[Any]) -> Any:
    return {operator: [normalize(arg) for arg in raw]}


def _rewrite_negation(operator: str, raw: list[Any]) -> Any:
    return {operator: [normalize_test(arg) for arg in raw]}


def _rewrite_if(operator: str, raw: list[Any]) -> Any:
    return {operator: _if_arguments(raw, normalize)}


def _rewrite_predicate(operator: str, raw: list[Any]) -> Any:
    if len(raw) < 2:
        return _plain(operator, raw)
    return {operator: [normalize(raw[0]), normalize_test(raw[1]), *map(normalize, raw[2:])]}


def _rewrite_missing_node(operator: str, raw: list[Any]) -> Any:
    args = [normalize(arg) for arg in raw]
    return _rewrite_missing(args) if operator == "missing" else _rewrite_missing_some(args)


def _rewrite_equality(operator: str, raw: list[Any]) -> Any:
    return _rewrite_loose_equality(operator, [normalize(arg) for arg in raw])


# Operators whose second argument is a predicate on each element.
_PREDICATE_OPERATORS = frozenset({"filter", "some", "all", "none"})
# Operators whose value may be an object: only these need the truthiness rewrite.
_MAY_BE_OBJECT = frozenset({"var", "reduce", "if", "?:", "and", "or"})
# Operators whose value is always an array (merge wraps anything else into one).
_ALWAYS_ARRAY = frozenset({"merge", "map", "filter", "missing", "missing_some"})


def _is_literal_object(node: Any) -> bool:
    return isinstance(node, dict) and not is_operation(node)


def _is_object(value: Any) -> dict[str, Any]:
    return {"===": [{"type": value}, "object"]}


def _may_be_object(node: Any) -> bool:
    if _is_literal_object(node):
        return True
    if not is_operation(node):
        return False
    (operator,) = node
    if operator not in _MAY_BE_OBJECT:
        return False
    if operator in ("if", "?:"):
        return any(_may_be_object(branch) for branch in _if_branches(operands(node)))
    if operator in ("and", "or"):
        return any(_may_be_object(arg) for arg in operands(node))
    return True


def _if_branches(args: list[Any]) -> list[Any]:
    """The arguments of ``if`` that can be its value: every second one, and the else."""
    branches = args[1::2]
    return [*branches, args[-1]] if len(args) % 2 == 1 else branches


def _if_arguments(args: list[Any], branch: Callable[[Any], Any]) -> list[Any]:
    return [normalize_test(arg) if index % 2 == 0 and index < len(args) - 1 else branch(arg)
            for index, arg in enumerate(args)]  # fmt: skip


def _rewrite_connective(operator: str, raw: list[Any]) -> Any:
    """``and``/``or`` return an operand; when one may be an object, test it with JavaScript
    truthiness: ``and(a, b)`` becomes ``if(a is truthy, b, a)``, ``or(a, b)`` ``if(.., a, b)``."""
    values = [normalize(arg) for arg in raw]
    if not any(_may_be_object(arg) for arg in raw[:-1]):
        return {operator: values}  # only the last operand may be an object: it is returned as is
    result = values[-1]
    for arg, value in zip(reversed(raw[:-1]), reversed(values[:-1]), strict=True):
        test = normalize_test(arg)
        result = {"if": [test, result, value]} if operator == "and" else {"if": [test, value, result]}
    return result


def _rewrite_merge(operator: str, raw: list[Any]) -> Any:
    """json-logic-js concatenates: ``null`` items stay (datalogic-py drops them, inside
    arrays too). Each argument becomes a list of one-element lists, which merge never drops;
    a ``map`` then takes each item back out. A merge of null-free literals stays native."""
    args = [normalize(arg) for arg in raw]
    if all(_null_free_literal(arg) for arg in raw):
        return {operator: args}
    singletons = [_as_singletons(r, a) for r, a in zip(raw, args, strict=True)]
    return {"map": [{operator: singletons}, {"var": "0"}]}


def _null_free_literal(node: Any) -> bool:
    if isinstance(node, list):
        return all(item is not None and not isinstance(item, list | dict) for item in node)
    return node is not None and not isinstance(node, dict)


def _as_singletons(raw: Any, value: Any) -> Any:
    wrap_each = {"map": [value, [{"var": ""}]]}
    if isinstance(raw, list):
        return [[item] for item in value]
    if not is_operation(raw):
        return [[value]]
    (operator,) = raw
    if operator in _ALWAYS_ARRAY:
        return wrap_each
    if operator in _MAY_BE_OBJECT:
        return {"if": [{"===": [{"type": value}, "array"]}, wrap_each, [[value]]]}
    return [[value]]  # a number, string, boolean or null: one item


def missing_keys(operator: str, args: list[Any]) -> list[Any]:
    """The keys a ``missing`` (its arguments, or its one list argument) or ``missing_some``
    (its second argument) checks, as written: literal keys or operations computing them."""
    written = args[1:2] if operator == "missing_some" else args
    return written[0] if len(written) == 1 and isinstance(written[0], list) else written


def literal_keys(keys: list[Any]) -> list[str] | None:
    """``keys`` as paths when each is written literally (text or a whole number), else None."""
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


def _rewrite_missing(args: list[Any]) -> Any:
    keys = literal_keys(missing_keys("missing", args))
    if keys is not None:
        return _missing_list(keys)
    # Computed keys: hand the keys and the current data to a custom operator.
    computed = args[0] if len(args) == 1 else {"merge": args}
    return {_MISSING_OP: [computed, {"var": ""}]}


def _rewrite_missing_some(args: list[Any]) -> Any:
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], list):
        keys = literal_keys(args[1])
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
    # JavaScript: null == <non-null literal> is false (datalogic-py coerces null to 0 or "").
    if value is None:
        return operator == "!="
    return {"if": [{"===": [value, None]}, operator == "!=", plain]}


_VALUE_REWRITES: dict[str, Callable[[str, list[Any]], Any]] = {
    "!": _rewrite_negation,
    "!!": _rewrite_negation,
    "if": _rewrite_if,
    "?:": _rewrite_if,
    "and": _rewrite_connective,
    "or": _rewrite_connective,
    **dict.fromkeys(_PREDICATE_OPERATORS, _rewrite_predicate),
    "merge": _rewrite_merge,
    "missing": _rewrite_missing_node,
    "missing_some": _rewrite_missing_node,
    "==": _rewrite_equality,
    "!=": _rewrite_equality,
}


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


def _custom_implementations() -> dict[str, Callable[[str], str]]:
    return {
        "days_between": _json_operator(days_between),
        _MISSING_OP: _json_operator(_missing_keys),
        _MISSING_SOME_OP: _json_operator(_missing_some),
    }


# --- compile and evaluate ---------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One compiled condition: the source as written (refs expanded) and the native rules.

    ``native`` (compiled from ``normalized``) is for truthiness, the hot path; ``value``
    returns the condition's JsonLogic value (the same rule unless an object could decide).
    """

    source: Any
    normalized: Any
    native: datalogic_py.Rule = field(repr=False, compare=False)
    value: datalogic_py.Rule = field(repr=False, compare=False)
    reads: tuple[str, ...] = ()


class LogicEngine:
    """Compiles conditions and evaluates them; one per process is plenty (thread-safe)."""

    def __init__(self) -> None:
        self._engine = datalogic_py.Engine(custom_operators=_custom_implementations())
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
        test, value = normalize_test(rule), normalize(rule)
        native = self._native(test)
        value_native = native if value == test else self._native(value)
        return Condition(rule, test, native, value_native, tuple(root_paths(rule)))

    def _native(self, normalized: Any) -> datalogic_py.Rule:
        try:
            return self._engine.compile(json.dumps(normalized))
        except datalogic_py.DataLogicError as exc:
            raise ValueError(f"cannot compile condition: {exc}") from exc

    def session(self) -> LogicSession:
        """A hot-loop evaluator; safe to share, each thread gets its own native session."""
        return LogicSession(self._engine, self._sessions)

    def evaluate_json(self, condition: Condition, data: Any) -> Any:
        """Evaluate and return the condition's value (not just its truthiness)."""
        try:
            return condition.value.evaluate(json.dumps(data))
        except datalogic_py.DataLogicError as exc:
            raise EvaluationError(_describe(exc)) from exc

    def truthy(self, value: Any) -> bool:
        """JsonLogic truthiness: false, null, 0, "" and [] are falsy; every object is truthy."""
        return isinstance(value, dict) or bool(self._engine.truthy(json.dumps(value)))


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
    """A copy where out-of-range integers become floats, split surrogate pairs are joined
    and lone surrogates become U+FFFD."""
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
        return joined_surrogates(value)
    return value


LogicError = datalogic_py.DataLogicError  # what native calls raise


def describe_logic_error(exc: Exception) -> str:
    """A short description of a library error, for decisions and messages."""
    return _describe(exc) if isinstance(exc, datalogic_py.DataLogicError) else str(exc)


def _describe(exc: datalogic_py.DataLogicError) -> str:
    operator = getattr(exc, "operator", None)
    where = f" in {operator!r}" if operator else ""
    text = str(exc).split(" (in operator", 1)[0]
    if "NaN" in text:  # the library throws {"type": "NaN"}
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

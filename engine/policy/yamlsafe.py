"""Safe YAML loading that remembers where every value came from.

Policies and policy tests are YAML written by people and pushed by pipelines, so the
loader refuses what a policy never needs and an attacker would use: tags other than
the plain JSON ones, anchors and aliases (the "billion laughs" bomb), files over a size
limit and nesting deeper than any real policy. Every value keeps its line and column so
errors can say ``file:line:column``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.errors import PolicyError
from engine.policy.text import joined_surrogates

MAX_YAML_BYTES = 256_000  # real policies are a few KB
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 50_000

Position = tuple[int, int]
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
KEY_MARKER = "<key>"  # positions[(*path, KEY_MARKER)] is where the key of path is written
YamlPath = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedYaml:
    """A YAML document as plain JSON-like data, with the position of every value."""

    data: Any
    positions: dict[YamlPath, Position]

    def position(self, path: YamlPath) -> Position | None:
        """The position of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(tuple(path[:end]))
            if found is not None:
                return found
        return None


class _Loader(yaml.CSafeLoader):
    """libyaml's parser and composer (fast, in C) with the plain JSON-like constructors."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source


_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_events(text: str, source: str) -> None:
    """Refuse aliases, deep nesting and too many values from the event stream, before any
    tree is built: the composer recurses once per level, so depth is bounded first."""
    parser = _Loader(text, source)
    depth = nodes = 0
    try:
        while (event := parser.get_event()) is not None:
            if isinstance(event, yaml.AliasEvent):
                raise _refuse(source, "anchors and aliases are not allowed", event.start_mark)
            if isinstance(event, _CLOSES):
                depth -= 1
                continue
            if not isinstance(event, (*_OPENS, yaml.ScalarEvent)):
                continue
            nodes += 1
            if depth + 1 > MAX_YAML_DEPTH:
                raise _refuse(source, f"nesting deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
            if nodes > MAX_YAML_NODES:
                raise _refuse(source, f"more than {MAX_YAML_NODES} values", None)
            if isinstance(event, _OPENS):
                depth += 1
    except yaml.MarkedYAMLError as exc:
        # libyaml's scanner reads ahead through flow brackets and stops at its own limit (1000).
        if "maximum nesting depth" not in str(exc.problem):
            raise
        mark = exc.problem_mark or exc.context_mark
        raise _refuse(source, f"nesting deeper than {MAX_YAML_DEPTH} levels", mark) from exc
    finally:
        parser.dispose()


def _refuse(source: str, message: str, mark: Any) -> PolicyError:
    if mark is None:
        return PolicyError.at(source, message)
    return PolicyError.at(source, message, mark.line + 1, mark.column + 1)


def load_yaml(text: str, source: str) -> LoadedYaml:
    """Parse one YAML document into JSON-like data. Raises ``PolicyError`` on anything else."""
    if len(text) > MAX_YAML_BYTES or len(text.encode("utf-8", errors="replace")) > MAX_YAML_BYTES:
        raise PolicyError.at(source, f"file is larger than {MAX_YAML_BYTES} bytes")
    try:
        loader = _Loader(text, source)
    except yaml.YAMLError as exc:
        raise PolicyError.at(source, f"invalid YAML: {exc}".splitlines()[0]) from exc
    except UnicodeEncodeError as exc:  # libyaml takes UTF-8: a lone surrogate has none
        line = text.count("\n", 0, exc.start) + 1
        column = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        message = "invalid text: a lone surrogate (not a character)"
        raise PolicyError.at(source, message, line, column) from exc
    try:
        _check_events(text, source)
        root = loader.get_single_node()
        if root is None:
            raise PolicyError.at(source, "the file is empty")
        positions: dict[YamlPath, Position] = {}
        data = _construct(loader, root, (), positions, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        raise _refuse(source, f"invalid YAML: {problem}", mark) from exc
    except yaml.YAMLError as exc:
        raise PolicyError.at(source, f"invalid YAML: {exc}") from exc
    except RecursionError as exc:
        raise PolicyError.at(source, "nesting too deep") from exc
    finally:
        loader.dispose()
    return LoadedYaml(data, positions)


def _construct(
    loader: _Loader,
    node: Node,
    path: YamlPath,
    positions: dict[YamlPath, Position],
    source: str,
) -> Any:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, MappingNode | SequenceNode) and node.tag not in _PLAIN_TAGS:
        raise _refuse(source, f"YAML tag {node.tag!r} is not allowed", node.start_mark)
    if isinstance(node, MappingNode):
        return _construct_mapping(loader, node, path, positions, source)
    if isinstance(node, SequenceNode):
        return [
            _construct(loader, item, (*path, index), positions, source)
            for index, item in enumerate(node.value)
        ]
    if isinstance(node, ScalarNode):
        return _plain_scalar(loader.construct_object(node))
    raise _refuse(source, "unsupported YAML node", node.start_mark)


def _construct_mapping(
    loader: _Loader,
    node: MappingNode,
    path: YamlPath,
    positions: dict[YamlPath, Position],
    source: str,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            raise _refuse(source, "mapping keys must be plain text", key_node.start_mark)
        key = _plain_scalar(loader.construct_object(key_node))
        if key is None or isinstance(key, bool | list | dict):
            raise _refuse(source, f"mapping key {key_node.value!r} must be text", key_node.start_mark)
        key = str(key)
        if key in result:
            raise _refuse(source, f"duplicate key {key!r}", key_node.start_mark)
        positions[(*path, key, KEY_MARKER)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        result[key] = _construct(loader, value_node, (*path, key), positions, source)
    return result


def _plain_scalar(value: Any) -> Any:
    """YAML dates and times become ISO strings: facts and JsonLogic only know JSON types."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return joined_surrogates(value)
    return value

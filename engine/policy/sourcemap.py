"""Where each part of a loaded policy is written in its file.

Lint warnings, coverage reports and rule hits point at lines and columns; evaluating does
not need them, so the runtime ``Policy`` does not carry them. ``SourceMap.of`` reads the
policy's own text again (the text it was loaded from: the positions are the file's).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import SourceLocation
from engine.policy.document import Policy
from engine.policy.yamlsafe import LoadedYaml, YamlPath, load_yaml

__all__ = ["SourceMap"]


@dataclass(frozen=True)
class SourceMap:
    """The file and its YAML, with the position of every value."""

    source: str
    loaded: LoadedYaml

    @classmethod
    def of(cls, policy: Policy) -> SourceMap:
        return cls(policy.source, load_yaml(policy.source_text, policy.source))

    def position(self, path: YamlPath) -> tuple[int | None, int | None]:
        """Line and column of ``path``, or of its nearest ancestor that has one."""
        return self.loaded.position(path) or (None, None)

    def location(self, path: YamlPath) -> SourceLocation:
        line, column = self.position(path)
        return SourceLocation(self.source, line, column)

"""Where policies and their tests are: the one search for them under a path.

Light on purpose (no YAML, no pydantic): the CLI lists files before it loads anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["POLICY_SUFFIX", "TEST_SUFFIX", "find_policy_files"]

POLICY_SUFFIX = ".yaml"
TEST_SUFFIX = ".test.yaml"


def find_policy_files(paths: Iterable[Path], *, tests: bool = False) -> list[Path]:
    """Each path named as it is, and for each folder the files under it (subfolders too),
    sorted: policies (``*.yaml`` but not ``*.test.yaml``) or, with ``tests``, policy test
    files (``*.test.yaml``). A named path is not checked: reading it says what is wrong."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
        elif tests:
            found.extend(sorted(path.rglob(f"*{TEST_SUFFIX}")))
        else:
            found.extend(
                p for p in sorted(path.rglob(f"*{POLICY_SUFFIX}")) if not p.name.endswith(TEST_SUFFIX)
            )
    return found

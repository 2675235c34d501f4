"""Decisions held on disk between evaluation and storage, so memory stays flat.

A run stores nothing until the whole enrollment list has arrived (a truncated answer must
leave no decision behind), yet must not hold every decision in memory. The spool pickles
decisions to an anonymous temporary file in chunks and reads them back in order once; the
file disappears when closed or when the process dies.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from typing import IO

from engine.policy.decision import Decision

__all__ = ["DecisionSpool"]


class DecisionSpool:
    """Append decisions, then iterate them once, in the order they came."""

    CHUNK = 1000

    def __init__(self, *, on_disk: bool = True) -> None:
        self.on_disk = on_disk  # False: keep them in memory (the caller holds them anyway)
        self._file: IO[bytes] | None = None
        self._chunk: list[Decision] = []
        self.count = 0

    def append(self, decision: Decision) -> None:
        self._chunk.append(decision)
        self.count += 1
        if self.on_disk and len(self._chunk) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._chunk:
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="autoapprove-spool-")  # noqa: SIM115 - closed by close()
        pickle.dump(self._chunk, self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._chunk = []

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Decision]:
        if self._file is not None:
            self._flush()
            self._file.seek(0)
            while True:
                try:
                    chunk: list[Decision] = pickle.load(self._file)  # noqa: S301 - our own file
                except EOFError:
                    break
                yield from chunk
        else:
            yield from self._chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunk = []

    def __enter__(self) -> DecisionSpool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

"""The decision store: policy versions, runs, decisions, and the outbox of live runs.

``Store`` is made of one part per concern, each over the shared ``StoreBase`` (engine,
clock, fencing; ``base``): ``PolicyVersions`` (``policy_versions``), ``RunRecords``
(``run_records``), ``Decisions`` (``decisions``), ``Outbox`` (``outbox``), ``SavedPlans``
(``plans``) and ``ReviewQueue`` (``review``). Beside them: ``connection`` (URL and engine
setup), ``storable`` (text cleaning), ``rows`` (row encoding and bulk insert/COPY) and
``records`` (what callers get back).

``Store`` takes an SQLAlchemy ``Engine`` (``Store.open`` builds one from a URL). Every
method runs its own short transaction and returns plain frozen dataclasses, so
no transaction or session ever stays open between calls.

The outbox: a live run's decisions with action ``update`` are stored ``planned`` with the
PATCH body to send and a ``change_key``. The applier moves each one through
``mark_in_flight`` and ``record_outcome``; a run that finds changes an earlier run left
open (``open_changes``) re-checks them and records them ``recovered`` or ``superseded``.

Fencing: a run started under a program lock records the lock's fencing token, and every
later write for that run (its decisions, its outcome) is refused with ``LockHeldError`` once
another holder has taken the lock. Writes on decisions of an *earlier* run must pass the
current lease's ``fencing_token`` explicitly; without it they are checked against the token
of the run that made the decision, which fails once the lock has changed hands.
"""

from __future__ import annotations

from typing import Self

from sqlalchemy import Engine

from engine.clock import Clock, utc_now
from engine.runs.ports import Outcome
from engine.runs.records import (
    DecisionRecord,
    PlannedChange,
    PlanRecord,
    PolicyVersionRecord,
    ReviewRecord,
    RunRecord,
)
from engine.store.base import BATCH_SIZE
from engine.store.connection import create_engine_for_url, resolve_db_url
from engine.store.decisions import Decisions
from engine.store.migrations import upgrade
from engine.store.outbox import Outbox, api_error_locations
from engine.store.plans import SavedPlans
from engine.store.policy_versions import PolicyVersions
from engine.store.review import ReviewQueue
from engine.store.rows import change_key
from engine.store.run_records import RunRecords

__all__ = [
    "BATCH_SIZE",
    "DecisionRecord",
    "Outcome",
    "PlanRecord",
    "PlannedChange",
    "PolicyVersionRecord",
    "ReviewRecord",
    "RunRecord",
    "Store",
    "api_error_locations",
    "change_key",
    "create_engine_for_url",
    "resolve_db_url",
]


class Store(PolicyVersions, RunRecords, Decisions, Outbox, SavedPlans, ReviewQueue):
    """The decision store over an injected engine. Does not migrate: see ``Store.open``."""

    @classmethod
    def open(
        cls,
        target: str | Engine,
        *,
        migrate: bool = True,
        clock: Clock = utc_now,
    ) -> Self:
        """A store on an engine or URL (resolved as in ``resolve_db_url``), migrated to head.

        A store opened from a URL owns its engine and disposes of it in ``close()``.
        """
        if isinstance(target, Engine):
            store = cls(target, clock=clock)
        else:
            engine = create_engine_for_url(resolve_db_url(target))
            store = cls(engine, clock=clock, owns_engine=True)
        if migrate:
            try:
                store.migrate()
            except BaseException:
                store.close()
                raise
        return store

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there)."""
        upgrade(self._engine)

    def close(self) -> None:
        """Dispose of the engine if this store created it."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

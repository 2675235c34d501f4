"""The decision store: runs, decisions, the outbox of live runs, and program locks.

Nothing here touches a database at import time: build an engine with
``create_engine_for_url`` (or pass your own) and open a ``Store`` on it.

::

    with Store.open("sqlite:///autoapprove.db") as store:        # migrates to head
        with acquire_program_lock(store.engine, program_id, holder="host:pid") as lock:
            run_id = store.start_run(program_id, RunMode.LIVE, policy_id, now,
                                     holder=lock.holder, fencing_token=lock.fencing_token)
            store.add_decisions(run_id, program_id, decisions)
            ...
            store.finish_run(run_id, RunOutcome.COMPLETED, report.counts())
"""

from engine.runs.ports import Outcome
from engine.runs.records import (
    DecisionRecord,
    PlannedChange,
    PlanRecord,
    PolicyVersionRecord,
    ReviewRecord,
    RunRecord,
)
from engine.runs.states import ChangeState, PlanState, RunMode, RunOutcome
from engine.store.base import BATCH_SIZE
from engine.store.connection import create_engine_for_url, resolve_db_url
from engine.store.locks import ProgramLock, acquire_program_lock
from engine.store.migrations import current_revision, head_revision, upgrade
from engine.store.outbox import api_error_locations
from engine.store.repository import Store
from engine.store.rows import change_key

__all__ = [
    "BATCH_SIZE",
    "ChangeState",
    "DecisionRecord",
    "Outcome",
    "PlanRecord",
    "PlanState",
    "PlannedChange",
    "PolicyVersionRecord",
    "ProgramLock",
    "ReviewRecord",
    "RunMode",
    "RunOutcome",
    "RunRecord",
    "Store",
    "acquire_program_lock",
    "api_error_locations",
    "change_key",
    "create_engine_for_url",
    "current_revision",
    "head_revision",
    "resolve_db_url",
    "upgrade",
]

"""The one module that picks concrete adapters: the httpx client and the SQLAlchemy store.

Everything else takes its collaborators as arguments; the CLI calls these functions with the
``engine.config.Settings`` it built once from the environment and its flags.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.errors import InputError
from engine.flip.client import ApiSettings, FlipClient, Secret
from engine.policy.decision import Decision
from engine.policy.document import Policy, load_policy_text
from engine.policy.explain import Explanation, explain
from engine.runs.apply import ReviewApplier, plan_document
from engine.runs.bases import load_base, parse_base
from engine.runs.checkpoints import Checkpoint, no_checkpoint
from engine.runs.plans import PlanDocument
from engine.runs.ports import ProgressCallback
from engine.runs.report import RunReport
from engine.runs.service import EvaluatedCallback, RunService, RunSettings
from engine.store import DecisionRecord, PolicyVersionRecord, ReviewRecord, Store
from engine.store.applied import applied_statuses
from engine.store.locks import ProgramLock, acquire_program_lock
from engine.vcs.git import show_file


def open_store(settings: Settings) -> Store:
    """The decision store, migrated to the latest schema on first use."""
    return Store.open(settings.db_url, migrate=True)


def api_settings(settings: Settings) -> ApiSettings:
    """How to reach the API; ``InputError`` naming ``FLIP_API_KEY`` when there is no key."""
    return ApiSettings(
        api_key=Secret(settings.require_api_key().get_secret_value()),
        base_url=settings.api_url,
        timeout_s=settings.timeout_s,
        max_attempts=settings.max_attempts,
        backoff_initial_s=settings.backoff_initial_s,
        backoff_max_s=settings.backoff_max_s,
        max_retry_after_s=settings.max_retry_after_s,
        max_requests_per_s=settings.max_rps,
    )


def open_client(settings: Settings) -> FlipClient:
    return FlipClient(api_settings(settings))


def _lock_factory(
    store: Store, config: Settings
) -> Callable[[str, str], AbstractContextManager[ProgramLock]]:
    """Program locks on the store's database, with the configured lease length."""

    @contextmanager
    def lock_factory(program: str, holder: str) -> Iterator[ProgramLock]:
        with acquire_program_lock(store.engine, program, holder, ttl_s=config.lock_ttl_s) as lock:
            yield lock

    return lock_factory


@contextmanager
def review_applier(
    config: Settings,
    settings: RunSettings,
    *,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    checkpoint: Checkpoint = no_checkpoint,
) -> Iterator[ReviewApplier]:
    """The applier of saved plans and approvals, with the real client and store."""
    with open_client(config) as client, open_store(config) as store:
        lock_factory = _lock_factory(store, config)

        settings = replace(settings, api_url=client.settings.base_url)
        yield ReviewApplier(
            client, store, settings, lock_factory=lock_factory, progress=progress, stop=stop,
            checkpoint=checkpoint,
        )  # fmt: skip


def run_policy(
    policy: Policy,
    config: Settings,
    settings: RunSettings,
    *,
    program_id: str | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    on_evaluated: EvaluatedCallback | None = None,
    on_finish: Callable[[RunReport], None] | None = None,
    on_decision: Callable[[Decision], None] | None = None,
    checkpoint: Checkpoint = no_checkpoint,
) -> RunReport:
    """One run with the real client and store; ``on_finish`` sees its report even when it fails.
    ``checkpoint`` is called at each named step (``engine.runs.checkpoints``)."""
    with open_client(config) as client, open_store(config) as store:
        lock_factory = _lock_factory(store, config)

        settings = replace(settings, api_url=client.settings.base_url)
        service = RunService(
            policy, client, store, settings, lock_factory=lock_factory, progress=progress, stop=stop,
            on_evaluated=on_evaluated, on_finish=on_finish, on_decision=on_decision, checkpoint=checkpoint,
        )  # fmt: skip
        return service.run(program_id)


@dataclass(frozen=True)
class ReviewQueue:
    """The changes waiting for approval, and (when asked for) the stored policy versions they
    were decided under, by id."""

    changes: list[ReviewRecord]
    policies: dict[int, Policy] = field(default_factory=dict)


def review_queue(config: Settings, program_id: str | None, *, with_policies: bool = False) -> ReviewQueue:
    """The review queue, oldest first; ``with_policies`` also loads the policies (the HTML
    report names them and withholds reasons that copy personal data)."""
    with open_store(config) as store:
        changes = store.review_queue(program_id)
        if not with_policies:
            return ReviewQueue(changes)
        policies = {}
        for version_id in sorted({c.policy_version_id for c in changes if c.policy_version_id is not None}):
            version = store.policy_version(version_id)
            if version is not None:
                policies[version_id] = load_policy_text(
                    version.source_text, f"<stored policy version {version_id}>"
                )
    return ReviewQueue(changes, policies)


def plan_document_of(config: Settings, plan_id: int) -> PlanDocument:
    """A stored plan as its file shows it."""
    with open_store(config) as store:
        return plan_document(store, plan_id)


@dataclass(frozen=True)
class StoredExplanation:
    """An enrollment's latest stored decision, replayed rule by rule when the API is reachable."""

    record: DecisionRecord
    version: PolicyVersionRecord | None
    replay: Explanation | None = None
    facts_unchanged: bool | None = None
    note: str | None = None


def explain_stored(config: Settings, enrollment_id: str) -> StoredExplanation:
    """The latest stored decision of an enrollment, replayed with the stored policy text at the
    stored evaluation time against the enrollment as the API has it now."""
    with open_store(config) as store:
        record = store.latest_decision(enrollment_id)
        if record is None:
            raise InputError(f"no stored decision for enrollment {enrollment_id!r}")
        version = store.policy_version(record.policy_version_id) if record.policy_version_id else None
    if version is None:
        return StoredExplanation(record, None, note="the policy text of this decision is not stored")
    try:
        settings = api_settings(config)
    except InputError:
        note = "set FLIP_API_KEY (and FLIP_API_URL) to replay it rule by rule against the enrollment"
        return StoredExplanation(record, version, note=note)
    policy = load_policy_text(version.source_text, f"<stored policy version {version.id}>")
    with FlipClient(settings) as client:
        raw = client.get_enrollment_dict(enrollment_id)
    replay = explain(policy, raw, record.run_now)
    unchanged = replay.decision.facts_fingerprint == record.decision.facts_fingerprint
    return StoredExplanation(record, version, replay, unchanged)


# --- reviewing a policy change (read-only: nothing is stored as a run, nothing is sent) ---


def list_enrollment_dicts(config: Settings, program_id: str) -> list[dict[str, Any]]:
    """Every enrollment of a program as the API lists it (the only request made)."""
    with open_client(config) as client:
        return list(client.iter_enrollment_dicts(program_id))


@dataclass(frozen=True)
class StoredPolicyTexts:
    """Base policies of a diff: a file at a git revision, or the text a stored run used."""

    config: Settings

    def git_text(self, path: Path, revision: str) -> tuple[str, str]:
        return show_file(path, revision)

    def run_text(self, run_id: int) -> tuple[str, str]:
        with open_store(self.config) as store:
            run = store.run(run_id)
            if run is None:
                raise InputError(f"run:{run_id}: no such run in the store (see `autoapprove runs`)")
            version = store.policy_version(run.policy_version_id) if run.policy_version_id else None
        if version is None:
            raise InputError(f"run:{run_id}: the policy text of that run is not stored")
        return version.source_text, f"<policy of run {run_id}>"


def load_diff_base(config: Settings, base: str, rules: Path) -> Policy:
    """The base policy named by ``--base``: a path, ``git:REV`` or ``run:N``."""
    return load_base(parse_base(base), rules, StoredPolicyTexts(config))


def applied_by_this_tool(config: Settings, program_id: str) -> dict[str, str]:
    """The status this tool last applied to each enrollment of a program (from the store)."""
    with open_store(config) as store:
        return applied_statuses(store.engine, program_id)

"""The one module that picks concrete adapters: the httpx client and the SQLAlchemy store.

Everything else takes its collaborators as arguments; the CLI calls these functions with a
configuration object built from its arguments and the environment it was given.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.client import ApiSettings, FlipClient
from engine.policy import Policy
from engine.service import ProgressCallback, RunReport, RunService, RunSettings
from engine.store import Store
from engine.store.locks import ProgramLock, acquire_program_lock

LOCK_TTL_S = 300.0


@dataclass(frozen=True)
class AppConfig:
    """Where the product's data and the API are: built by the CLI, passed in everywhere."""

    environ: Mapping[str, str] = field(default_factory=dict)
    db_url: str | None = None
    secrets_file: Path | None = None
    api_overrides: Mapping[str, Any] = field(default_factory=dict)
    lock_ttl_s: float = LOCK_TTL_S


def open_store(config: AppConfig) -> Store:
    """The decision store, migrated to the latest schema on first use."""
    return Store.open(config.db_url, environ=config.environ, migrate=True)


def api_settings(config: AppConfig) -> ApiSettings:
    return ApiSettings.from_env(config.environ, config.secrets_file, **dict(config.api_overrides))


def open_client(config: AppConfig) -> FlipClient:
    return FlipClient(api_settings(config))


def run_policy(
    policy: Policy,
    config: AppConfig,
    settings: RunSettings,
    *,
    program_id: str | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """One run with the real client and store."""
    with open_client(config) as client, open_store(config) as store:

        @contextmanager
        def lock_factory(program: str, holder: str) -> Iterator[ProgramLock]:
            with acquire_program_lock(store.engine, program, holder, ttl_s=config.lock_ttl_s) as lock:
                yield lock

        service = RunService(
            policy, client, store, settings, lock_factory=lock_factory, progress=progress, stop=stop
        )
        return service.run(program_id)

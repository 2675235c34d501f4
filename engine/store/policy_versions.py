"""Policy versions: every policy text a run used, kept once per program and hash."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.runs.records import PolicyVersionRecord
from engine.store.base import StoreBase
from engine.store.locks import database_errors, write_transaction
from engine.store.schema import PolicyVersionRow
from engine.store.storable import storable_or_none, storable_text


class PolicyVersions(StoreBase):
    """Policy texts exactly as runs used them, so their decisions can be replayed."""

    def save_policy_version(
        self, program_id: str, name: str, version: str | None, content_hash: str, source_text: str
    ) -> int:
        """Keep a policy text; returns its id. The same hash for the same program is kept
        once: saving it again returns the existing id."""
        with database_errors("could not save the policy version"):
            existing = self._policy_version_id(program_id, content_hash)
            if existing is not None:
                return existing
            values = {
                "program_id": program_id,
                "name": storable_text(name),
                "version": storable_or_none(version),
                "content_hash": content_hash,
                "source_text": storable_text(source_text),
                "first_seen_at": self._clock(),
            }
            statement = insert(PolicyVersionRow).values(values).returning(PolicyVersionRow.id)
            try:
                with write_transaction(self._engine) as connection:
                    return connection.execute(statement).scalar_one()
            except IntegrityError:
                # Another process saved the same text in between.
                existing = self._policy_version_id(program_id, content_hash)
                if existing is None:
                    raise
                return existing

    def _policy_version_id(self, program_id: str, content_hash: str) -> int | None:
        query = select(PolicyVersionRow.id).where(
            PolicyVersionRow.program_id == program_id,
            PolicyVersionRow.content_hash == content_hash,
        )
        with self._engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    def policy_version(self, policy_version_id: int) -> PolicyVersionRecord | None:
        """The policy text a run used, so its decisions can be explained and replayed."""
        with database_errors("could not read the policy version"), Session(self._engine) as s:
            row = s.get(PolicyVersionRow, policy_version_id)
            if row is None:
                return None
            return PolicyVersionRecord(
                id=row.id,
                program_id=row.program_id,
                name=row.name,
                version=row.version,
                content_hash=row.content_hash,
                source_text=row.source_text,
                first_seen_at=row.first_seen_at,
            )

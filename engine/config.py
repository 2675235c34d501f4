"""Settings: every environment variable, default and limit of the product, in one typed object.

The CLI builds one :class:`Settings` per invocation with :meth:`Settings.load` (the
environment, then the command's flags over it) and passes it, or the parts needed, down.
Nothing else reads the environment, and nothing is read when this module is imported.
``Settings(field=value, ...)`` builds one from values alone (tests, library callers): it
reads no environment.

::

    variable (field)                                  default
    FLIP_API_KEY (api_key)                            none: commands that call the API need it
    FLIP_API_KEY_FILE (api_key_file)                  none; FLIP_API_KEY wins when both are set
    FLIP_API_URL (api_url)                            https://api-utility.flip.energy
    AUTOAPPROVE_DB (db_url; --db)                     sqlite:///autoapprove.db
    AUTOAPPROVE_LOG_FORMAT (log_format; --log-format) text
    AUTOAPPROVE_NOTIFY_URL (notify_url; --notify-url) none
    AUTOAPPROVE_TIMEOUT_S (timeout_s)                 10: every API call
    AUTOAPPROVE_MAX_ATTEMPTS (max_attempts)           4: the retry budget of a call
    AUTOAPPROVE_BACKOFF_INITIAL_S (backoff_initial_s) 0.2: jittered exponential backoff ...
    AUTOAPPROVE_BACKOFF_MAX_S (backoff_max_s)         5: ... up to this between attempts
    AUTOAPPROVE_MAX_RETRY_AFTER_S (max_retry_after_s) 30: a longer Retry-After defers the change
    AUTOAPPROVE_CONCURRENCY (concurrency; --concurrency)  8 concurrent requests of a live run
    AUTOAPPROVE_MAX_RPS (max_rps; --max-rps)          none: no rate limit
    AUTOAPPROVE_LOCK_TTL_S (lock_ttl_s; --lock-ttl)   300: the SQLite lease of a program lock

An empty variable counts as unset (``FLIP_API_URL=""`` is production). A bad value raises
:class:`~engine.errors.InputError` naming the variable (never quoting the key, a database
URL or a webhook URL, which carry secrets). The API key is a ``SecretStr``: it appears in no
``repr``, ``str`` or error message.

The ``DEFAULT_*`` constants are the defaults, written once: the adapters' own keyword
defaults (``ApiSettings``, the program lock, ``RunSettings``) refer to them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from engine.errors import InputError

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_BACKOFF_INITIAL_S",
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DB_URL",
    "DEFAULT_LOCK_TTL_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_RETRY_AFTER_S",
    "DEFAULT_TIMEOUT_S",
    "KEY_VARIABLE",
    "Settings",
    "check_api_key",
]

DEFAULT_API_URL = "https://api-utility.flip.energy"
DEFAULT_DB_URL = "sqlite:///autoapprove.db"
"""A SQLite file in the working directory."""
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF_INITIAL_S = 0.2
DEFAULT_BACKOFF_MAX_S = 5.0
DEFAULT_MAX_RETRY_AFTER_S = 30.0
DEFAULT_CONCURRENCY = 8
DEFAULT_LOCK_TTL_S = 300.0

KEY_VARIABLE = "FLIP_API_KEY"
# Never quoted in an error: the key, and URLs that may carry a password or a webhook token.
_UNQUOTED = frozenset({"api_key", "db_url", "notify_url"})


def check_api_key(key: str) -> str:
    """The key without surrounding whitespace; ``ValueError`` (never quoting it) if unusable."""
    key = key.strip()
    if not key:
        raise ValueError("is empty")
    if any(ch.isspace() for ch in key):
        raise ValueError("contains whitespace")
    return key


class Settings(BaseSettings):
    """The product's configuration (see the module docstring for every variable)."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        validate_by_alias=True,
        validate_by_name=True,
        hide_input_in_errors=True,
    )

    api_url: str = Field(DEFAULT_API_URL, validation_alias="FLIP_API_URL")
    api_key: SecretStr | None = Field(None, validation_alias="FLIP_API_KEY")
    api_key_file: Path | None = Field(None, validation_alias="FLIP_API_KEY_FILE")
    db_url: str = Field(DEFAULT_DB_URL, validation_alias="AUTOAPPROVE_DB")
    log_format: Literal["text", "json"] = Field("text", validation_alias="AUTOAPPROVE_LOG_FORMAT")
    notify_url: str | None = Field(None, validation_alias="AUTOAPPROVE_NOTIFY_URL")
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, validation_alias="AUTOAPPROVE_TIMEOUT_S")
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, validation_alias="AUTOAPPROVE_MAX_ATTEMPTS")
    backoff_initial_s: float = Field(
        DEFAULT_BACKOFF_INITIAL_S, ge=0, validation_alias="AUTOAPPROVE_BACKOFF_INITIAL_S"
    )
    backoff_max_s: float = Field(DEFAULT_BACKOFF_MAX_S, ge=0, validation_alias="AUTOAPPROVE_BACKOFF_MAX_S")
    max_retry_after_s: float = Field(
        DEFAULT_MAX_RETRY_AFTER_S, ge=0, validation_alias="AUTOAPPROVE_MAX_RETRY_AFTER_S"
    )
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, validation_alias="AUTOAPPROVE_CONCURRENCY")
    max_rps: float | None = Field(None, gt=0, validation_alias="AUTOAPPROVE_MAX_RPS")
    lock_ttl_s: float = Field(DEFAULT_LOCK_TTL_S, gt=0, validation_alias="AUTOAPPROVE_LOCK_TTL_S")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, /, **overrides: Any) -> Self:
        """The settings from ``environ`` (default: this process's environment), then the
        ``overrides`` (the command's flags, by field name; ``None`` means not given) over them.

        A bad value raises ``InputError`` naming its variable (or field, for an override).
        """
        source = _MappingEnvSource(cls, os.environ if environ is None else environ)
        from_env = cls._validated(source(), cls.variable)
        given = {name: value for name, value in overrides.items() if value is not None}
        if not given:
            return from_env
        return cls._validated({**from_env.model_dump(exclude_unset=True), **given}, str)

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of a field (``api_url`` -> ``FLIP_API_URL``)."""
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else field

    @classmethod
    def _validated(cls, values: Mapping[str, Any], name_of: Callable[[str], str]) -> Self:
        try:
            return cls(**values)
        except ValidationError as exc:
            # Not chained: a pydantic error may quote the raw input (the key, say).
            raise InputError(_describe(exc, name_of)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: ``load`` reads the environment it is handed, no dotenv."""
        return (init_settings,)

    @field_validator("api_url", mode="after")
    @classmethod
    def _one_api_url(cls, value: str) -> str:
        """The one resolution of the API URL: blank is production, no trailing slash."""
        url = value.strip().rstrip("/") or DEFAULT_API_URL
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url

    @field_validator("api_key", mode="before")
    @classmethod
    def _usable_key(cls, value: Any) -> Any:
        if isinstance(value, str):
            return check_api_key(value) if value.strip() else None
        return value

    @field_validator("db_url", mode="after")
    @classmethod
    def _db_url_or_default(cls, value: str) -> str:
        return value.strip() or DEFAULT_DB_URL

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        chosen = value.strip().lower() or "text"
        if chosen not in ("text", "json"):
            raise ValueError("not a log format (text or json)")
        return chosen

    @field_validator("notify_url", mode="after")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    def require_api_key(self) -> SecretStr:
        """The API key: ``FLIP_API_KEY``, else the one in ``FLIP_API_KEY_FILE`` (read now, a
        ``FLIP_API_KEY=...`` line or the file's only line). ``InputError`` when neither has one."""
        if self.api_key is not None:
            return self.api_key
        key = _key_from_file(self.api_key_file) if self.api_key_file is not None else None
        if not key:
            where = f" or in {self.api_key_file}" if self.api_key_file is not None else ""
            raise InputError(f"{KEY_VARIABLE} is not set: set it in the environment{where}")
        try:
            return SecretStr(check_api_key(key))
        except ValueError as exc:
            raise InputError(f"{KEY_VARIABLE} in {self.api_key_file}: {exc}") from None

    def explicitly_set(self, field: str) -> bool:
        """Whether ``field`` was given (by the environment or a flag) rather than defaulted."""
        return field in self.model_fields_set


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a mapping handed in instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k: v for k, v in self._environ.items() if not (self.env_ignore_empty and v == "")}


def _describe(exc: ValidationError, name_of: Callable[[str], str]) -> str:
    """One line per bad value, naming its variable; quoting the value unless it is a secret."""
    lines = []
    fields = {Settings.variable(name): name for name in Settings.model_fields}
    for error in exc.errors(include_url=False, include_input=True):
        loc = str(error["loc"][0]) if error["loc"] else "settings"
        field = fields.get(loc, loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        quoted = "" if field in _UNQUOTED or "input" not in error else f"={error['input']!r}"
        lines.append(f"{name_of(field)}{quoted}: {message}")
    return "; ".join(lines)


def _key_from_file(path: Path) -> str | None:
    """The key in a secrets file: a ``FLIP_API_KEY=...`` line, or the file's only line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the secrets file {path}") from exc
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for line in lines:
        name, sep, value = line.removeprefix("export ").partition("=")
        if sep and name.strip() == KEY_VARIABLE:
            return value.strip().strip("'\"")
    if len(lines) == 1 and "=" not in lines[0]:
        return lines[0]
    return None

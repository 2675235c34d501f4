"""``engine.config.Settings``: every variable, its default, its parsing, and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from engine.config import (
    DEFAULT_API_URL,
    DEFAULT_DB_URL,
    DEFAULT_LOCK_TTL_S,
    Settings,
)
from engine.errors import InputError

CANARY = "fl_canary_0123456789"

# What the README documents, variable by variable: its field and the default.
DEFAULTS = {
    "FLIP_API_KEY": ("api_key", None),
    "FLIP_API_KEY_FILE": ("api_key_file", None),
    "FLIP_API_URL": ("api_url", "https://api-utility.flip.energy"),
    "AUTOAPPROVE_DB": ("db_url", "sqlite:///autoapprove.db"),
    "AUTOAPPROVE_LOG_FORMAT": ("log_format", "text"),
    "AUTOAPPROVE_NOTIFY_URL": ("notify_url", None),
    "AUTOAPPROVE_TIMEOUT_S": ("timeout_s", 10.0),
    "AUTOAPPROVE_MAX_ATTEMPTS": ("max_attempts", 4),
    "AUTOAPPROVE_BACKOFF_INITIAL_S": ("backoff_initial_s", 0.2),
    "AUTOAPPROVE_BACKOFF_MAX_S": ("backoff_max_s", 5.0),
    "AUTOAPPROVE_MAX_RETRY_AFTER_S": ("max_retry_after_s", 30.0),
    "AUTOAPPROVE_CONCURRENCY": ("concurrency", 8),
    "AUTOAPPROVE_MAX_RPS": ("max_rps", None),
    "AUTOAPPROVE_LOCK_TTL_S": ("lock_ttl_s", 300.0),
}


def test_every_field_has_its_documented_variable_and_default() -> None:
    settings = Settings.load({})
    assert {Settings.variable(name) for name in Settings.model_fields} == set(DEFAULTS)
    for variable, (field, default) in DEFAULTS.items():
        assert Settings.variable(field) == variable
        assert getattr(settings, field) == default, variable
    assert settings.model_fields_set == set()
    assert (settings.api_url, settings.db_url, settings.lock_ttl_s) == (
        DEFAULT_API_URL,
        DEFAULT_DB_URL,
        DEFAULT_LOCK_TTL_S,
    )


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        ("FLIP_API_URL", "http://127.0.0.1:8765/", "http://127.0.0.1:8765"),
        ("FLIP_API_URL", "  https://sandbox.example ", "https://sandbox.example"),
        ("FLIP_API_KEY_FILE", "/etc/autoapprove/key", Path("/etc/autoapprove/key")),
        ("AUTOAPPROVE_DB", "postgresql://autoapprove@db/aa", "postgresql://autoapprove@db/aa"),
        ("AUTOAPPROVE_LOG_FORMAT", " JSON ", "json"),
        ("AUTOAPPROVE_LOG_FORMAT", "text", "text"),
        ("AUTOAPPROVE_NOTIFY_URL", "https://hooks.example/T0/B0", "https://hooks.example/T0/B0"),
        ("AUTOAPPROVE_TIMEOUT_S", "2.5", 2.5),
        ("AUTOAPPROVE_MAX_ATTEMPTS", "1", 1),
        ("AUTOAPPROVE_BACKOFF_INITIAL_S", "0", 0.0),
        ("AUTOAPPROVE_BACKOFF_MAX_S", "1.5", 1.5),
        ("AUTOAPPROVE_MAX_RETRY_AFTER_S", "120", 120.0),
        ("AUTOAPPROVE_CONCURRENCY", "16", 16),
        ("AUTOAPPROVE_MAX_RPS", "12.5", 12.5),
        ("AUTOAPPROVE_LOCK_TTL_S", "60", 60.0),
    ],
)
def test_each_variable_is_read_and_parsed(variable: str, text: str, expected: Any) -> None:
    field = DEFAULTS[variable][0]
    settings = Settings.load({variable: text, "UNRELATED": "x"})
    assert getattr(settings, field) == expected
    assert settings.explicitly_set(field)


@pytest.mark.parametrize("variable", sorted(DEFAULTS))
def test_an_empty_variable_counts_as_unset(variable: str) -> None:
    field, default = DEFAULTS[variable]
    assert getattr(Settings.load({variable: ""}), field) == default


def test_a_blank_url_is_production_whatever_the_whitespace() -> None:
    """One resolution of the URL: what the confirmation shows is what the client calls."""
    assert Settings.load({"FLIP_API_URL": "   "}).api_url == DEFAULT_API_URL
    assert Settings.load({"FLIP_API_URL": "/"}).api_url == DEFAULT_API_URL
    assert Settings(api_url="").api_url == DEFAULT_API_URL


def test_the_key_is_stripped_and_blank_is_no_key() -> None:
    key = Settings.load({"FLIP_API_KEY": f" {CANARY}\n"}).api_key
    assert key is not None
    assert key.get_secret_value() == CANARY
    assert Settings.load({"FLIP_API_KEY": "  \n"}).api_key is None


def test_flags_win_over_the_environment_and_none_is_not_given() -> None:
    env = {"AUTOAPPROVE_DB": "sqlite:///env.db", "AUTOAPPROVE_LOCK_TTL_S": "60", "FLIP_API_KEY": CANARY}
    settings = Settings.load(env, db_url="sqlite:///flag.db", lock_ttl_s=None, concurrency=3)
    assert (settings.db_url, settings.lock_ttl_s, settings.concurrency) == ("sqlite:///flag.db", 60.0, 3)
    assert settings.api_key == SecretStr(CANARY)
    assert settings.model_fields_set == {"db_url", "lock_ttl_s", "concurrency", "api_key"}
    assert not settings.explicitly_set("timeout_s")


def test_the_key_is_in_no_repr_str_or_dump() -> None:
    settings = Settings.load({"FLIP_API_KEY": CANARY})
    for shown in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.api_key)):
        assert CANARY not in shown
    assert "**********" in repr(settings)


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("AUTOAPPROVE_TIMEOUT_S", "ten", "AUTOAPPROVE_TIMEOUT_S='ten': Input should be a valid number"),
        ("AUTOAPPROVE_TIMEOUT_S", "0", "AUTOAPPROVE_TIMEOUT_S='0': Input should be greater than 0"),
        ("AUTOAPPROVE_MAX_ATTEMPTS", "0", "AUTOAPPROVE_MAX_ATTEMPTS='0': Input should be greater than"),
        ("AUTOAPPROVE_MAX_ATTEMPTS", "2.5", "AUTOAPPROVE_MAX_ATTEMPTS='2.5': Input should be a valid int"),
        ("AUTOAPPROVE_BACKOFF_MAX_S", "-1", "AUTOAPPROVE_BACKOFF_MAX_S='-1'"),
        ("AUTOAPPROVE_MAX_RETRY_AFTER_S", "soon", "AUTOAPPROVE_MAX_RETRY_AFTER_S='soon'"),
        ("AUTOAPPROVE_CONCURRENCY", "many", "AUTOAPPROVE_CONCURRENCY='many'"),
        ("AUTOAPPROVE_MAX_RPS", "0", "AUTOAPPROVE_MAX_RPS='0': Input should be greater than 0"),
        ("AUTOAPPROVE_LOCK_TTL_S", "5m", "AUTOAPPROVE_LOCK_TTL_S='5m'"),
        ("AUTOAPPROVE_LOG_FORMAT", "yaml", "AUTOAPPROVE_LOG_FORMAT='yaml': not a log format (text or json)"),
        ("FLIP_API_URL", "api.flip.energy", "FLIP_API_URL='api.flip.energy': must start with http:// or"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        Settings.load({variable: text})
    assert str(caught.value).startswith(message)
    assert caught.value.__cause__ is None  # the pydantic error (which quotes inputs) is not kept


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(InputError) as caught:
        Settings.load({"AUTOAPPROVE_TIMEOUT_S": "x", "AUTOAPPROVE_CONCURRENCY": "y"})
    assert "AUTOAPPROVE_TIMEOUT_S" in str(caught.value)
    assert "AUTOAPPROVE_CONCURRENCY" in str(caught.value)


def test_an_error_never_quotes_the_key() -> None:
    with pytest.raises(InputError) as caught:
        Settings.load({"FLIP_API_KEY": f"{CANARY} oops"})
    assert str(caught.value) == "FLIP_API_KEY: contains whitespace"


@pytest.mark.parametrize("field", ["db_url", "notify_url"])
def test_an_error_never_quotes_a_url_that_may_carry_a_secret(field: str) -> None:
    """A database URL may hold a password, a webhook URL a token: named, never shown."""
    with pytest.raises(InputError) as caught:
        Settings.load({}, **{field: ["postgresql://u:hunter2@db/aa"]})
    assert str(caught.value) == f"{field}: Input should be a valid string"


def test_a_bad_flag_value_names_the_field() -> None:
    with pytest.raises(InputError, match=r"lock_ttl_s=-1\.0: Input should be greater than 0"):
        Settings.load({}, lock_ttl_s=-1.0)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(InputError, match="lock_ttl=5: Extra inputs are not permitted"):
        Settings.load({}, lock_ttl=5)


# --- the key, from the environment or a secrets file ----------------------------------------


def test_the_key_from_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    secrets = tmp_path / "flip.env"
    secrets.write_text(f"{CANARY}\n", encoding="utf-8")
    both = Settings.load({"FLIP_API_KEY": "fl_env", "FLIP_API_KEY_FILE": str(secrets)})
    assert both.require_api_key().get_secret_value() == "fl_env"


@pytest.mark.parametrize("content", [f"{CANARY}\n", f"# key\nexport FLIP_API_KEY='{CANARY}'\nOTHER=1\n"])
def test_the_key_from_a_secrets_file(tmp_path: Path, content: str) -> None:
    secrets = tmp_path / "flip.env"
    secrets.write_text(content, encoding="utf-8")
    settings = Settings.load({"FLIP_API_KEY_FILE": str(secrets)})
    assert settings.require_api_key().get_secret_value() == CANARY


def test_no_key_names_the_variable_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"FLIP_API_KEY is not set: set it in the environment$"):
        Settings.load({}).require_api_key()
    other = tmp_path / "other.env"
    other.write_text("OTHER=1\n", encoding="utf-8")
    with pytest.raises(InputError, match=f"FLIP_API_KEY is not set: set it in the environment or in {other}"):
        Settings.load({"FLIP_API_KEY_FILE": str(other)}).require_api_key()
    with pytest.raises(InputError, match="cannot read the secrets file"):
        Settings.load({"FLIP_API_KEY_FILE": str(tmp_path / "missing.env")}).require_api_key()


def test_a_bad_key_in_the_file_is_named_never_shown(tmp_path: Path) -> None:
    secrets = tmp_path / "flip.env"
    secrets.write_text(f"FLIP_API_KEY={CANARY} x\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        Settings.load({"FLIP_API_KEY_FILE": str(secrets)}).require_api_key()
    assert str(caught.value) == f"FLIP_API_KEY in {secrets}: contains whitespace"


def test_settings_built_from_values_read_nothing_else() -> None:
    settings = Settings(api_key=CANARY, timeout_s=3)
    assert settings.model_fields_set == {"api_key", "timeout_s"}
    assert settings.require_api_key() == SecretStr(CANARY)

"""A thin, typed client of the Flip Utility API (see ``flip-utility-api.md``).

Synchronous on purpose: one ``httpx.Client`` is thread-safe, so a caller that needs
concurrency shares one :class:`FlipClient` across a thread pool. Everything that must be
shared between those threads lives in the client: the connection pool, the "paused until"
gate a 429 closes for *all* threads, and the optional rate limiter
(``max_requests_per_s``, requests spaced at least ``1/max_requests_per_s`` apart): both are
a :class:`~engine.flip.throttle.Throttle`. The streamed, paged list is in ``engine.flip.listing``.

Retries (tenacity, jittered exponential backoff, at most ``max_attempts`` attempts):

* connection errors, timeouts, 5xx and 429 are retried; a 429 waits ``Retry-After``
  (seconds or an HTTP-date, read against the answer's ``Date``) or, without it, the
  backoff; a ``Retry-After`` above ``max_retry_after_s`` raises
  :class:`~engine.errors.ApiRetryableError` at once with ``retry_after`` set, so the
  caller defers the change instead of hanging;
* the one non-idempotent call, ``create_group`` (POST), is retried only when the request
  surely did not take effect (connection refused, pool timeout, 429); after an ambiguous
  failure :meth:`FlipClient.ensure_group` looks again instead of creating twice;
* 401/403 raise :class:`~engine.errors.ApiAuthError`, other 4xx
  :class:`~engine.errors.ApiError` with the body's ``code``, ``message``, ``detail`` and
  ``errors``; neither is retried. A body that cannot be understood raises
  :class:`~engine.errors.ApiResponseError`. Retries exhausted raise ``ApiRetryableError``.

Attempts: :attr:`FlipClient.last_attempts` is, for the calling thread, the number of HTTP
attempts of its last call (also when that call raised); for a streamed list, the attempts
of every page opened so far (another call made by the same thread between two pages
starts the count again).

The API key is a :class:`Secret`: it appears in no repr, exception message or log line
(the client logs retries on the ``engine.flip.client`` logger).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from engine.config import (
    DEFAULT_API_URL,
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_RETRY_AFTER_S,
    DEFAULT_TIMEOUT_S,
    KEY_VARIABLE,
)
from engine.errors import (
    ApiAuthError,
    ApiError,
    ApiResponseError,
    ApiRetryableError,
    InputError,
)
from engine.flip.listing import follow_pages
from engine.flip.models import ApiErrorBody, EnrollmentPatch, Group, GroupCreate
from engine.flip.throttle import Throttle

__all__ = ["DEFAULT_BASE_URL", "SANDBOX_BASE_URL", "ApiSettings", "FlipClient", "Secret"]

_log = logging.getLogger("engine.flip.client")

DEFAULT_BASE_URL = DEFAULT_API_URL
SANDBOX_BASE_URL = "https://api-utility-sandbox.flip.energy"
_USER_AGENT = "flip-autoapprove/0.1"
_SNIPPET = 200
# Failures after which a POST surely did not reach the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


class Secret:
    """A string that is never shown: ``repr`` and ``str`` are ``Secret('***')``.

    The value comes out only through :meth:`reveal`. Copying keeps the same object;
    pickling is refused so the value cannot leak into a file by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise InputError("a Secret holds a string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> NoReturn:
        raise InputError("a Secret cannot be pickled")


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """How to reach the API. The composition root builds it from ``engine.config.Settings``
    (whose defaults these are); nothing is read at import time."""

    api_key: Secret
    base_url: str = DEFAULT_BASE_URL
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S
    max_requests_per_s: float | None = None  # None: unlimited

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, Secret) or not self.api_key:
            raise InputError(f"an API key is required ({KEY_VARIABLE})")
        if not self.base_url.startswith(("http://", "https://")):
            raise InputError(f"the API URL must start with http:// or https://: {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.timeout_s <= 0 or self.max_attempts < 1:
            raise InputError("timeout_s must be positive and max_attempts at least 1")
        if min(self.backoff_initial_s, self.backoff_max_s, self.max_retry_after_s) < 0:
            raise InputError("backoff and Retry-After limits must not be negative")
        if self.max_requests_per_s is not None and self.max_requests_per_s <= 0:
            raise InputError("max_requests_per_s must be positive (or None for no limit)")


# --- reading answers ------------------------------------------------------------------------


@dataclass
class _Failure:
    """A failed answer, parsed as far as it goes."""

    status: int
    code: str | None = None
    message: str | None = None
    detail: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _one_line(text: str, limit: int = _SNIPPET) -> str:
    return " ".join(text.split())[:limit]


def _failure(response: httpx.Response, redact: Callable[[str], str]) -> _Failure:
    """The documented error body of ``response``, tolerant of anything else."""
    failure = _Failure(response.status_code)
    try:
        body = ApiErrorBody.model_validate(response.json())
    except (ValueError, ValidationError, RecursionError):
        text = redact(_one_line(response.text)) if response.content else ""
        failure.message = text or None
        return failure
    failure.code = body.code
    failure.message = None if body.message is None else redact(body.message)
    failure.detail = [d.model_dump(exclude_none=True) for d in body.detail or []]
    failure.errors = [e.model_dump(exclude_none=True) for e in body.errors or []]
    return failure


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP-date), or None."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        until = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return max(0.0, (until - _server_now(response)).total_seconds())


def _server_now(response: httpx.Response) -> datetime:
    """The server's clock (its Date header) so an HTTP-date is not read against our skew."""
    try:
        moment = parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError):
        return datetime.now(UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _model(model: type[_M], data: Any, what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiResponseError(f"{what}: unexpected answer shape at {_places(exc)}") from exc


def _places(exc: ValidationError) -> str:
    """Where validation failed, never the values (they hold personal data)."""
    return ", ".join(".".join(map(str, e["loc"])) or "<root>" for e in exc.errors()[:5])


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        kind = response.headers.get("Content-Type", "unknown type")
        raise ApiResponseError(
            f"{what}: the answer is not JSON ({kind})", status_code=response.status_code
        ) from exc
    except RecursionError as exc:  # the standard parser's own limit (about 1,000 levels)
        raise ApiResponseError(
            f"{what}: the answer is nested too deeply to read", status_code=response.status_code
        ) from exc


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    data = _json(response, what)
    if not isinstance(data, dict):
        raise ApiResponseError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _enrollment_path(enrollment_id: str) -> str:
    return f"/v1/enrollments/{quote(enrollment_id, safe='')}"


def _groups_path(program_id: str) -> str:
    return f"/v1/programs/{quote(program_id, safe='')}/groups"


def _already_exists(exc: ApiError) -> bool:
    return exc.status_code == 409 or (exc.status_code == 422 and exc.code == "group_already_exists")


# --- the client -----------------------------------------------------------------------------


class FlipClient:
    """The Flip Utility API, one method per endpoint. Thread-safe; use as a context manager.

    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``sleep`` and
    ``clock`` (monotonic seconds) drive every wait, so tests need no patching.
    """

    def __init__(
        self,
        settings: ApiSettings,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._throttle = Throttle(clock, sleep, settings.max_requests_per_s)
        self._local = threading.local()
        self._backoff = wait_random_exponential(
            multiplier=settings.backoff_initial_s, max=settings.backoff_max_s
        )
        self._http = httpx.Client(
            base_url=settings.base_url,
            headers={
                "Authorization": f"Bearer {settings.api_key.reveal()}",
                "Accept": "application/json",
                "User-Agent": _USER_AGENT,
            },
            timeout=httpx.Timeout(settings.timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"FlipClient(base_url={self.settings.base_url!r})"

    def __enter__(self) -> FlipClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def last_attempts(self) -> int:
        """HTTP attempts of the calling thread's last call (see the module docstring)."""
        return int(getattr(self._local, "attempts", 0))

    # enrollments

    def iter_enrollment_dicts(self, program_id: str) -> Iterator[dict[str, Any]]:
        """Every enrollment of ``program_id`` as the raw dict the API sent, streamed.

        The answer is parsed while it arrives (ijson): the body is never held together
        with a parsed copy. Pages are followed when the answer carries a top-level
        ``next_cursor`` (or ``next``), sent back as ``?cursor=``.

        A truncated or malformed answer raises ``ApiResponseError`` *while iterating*,
        possibly after some enrollments were yielded: drain the iterator completely
        before acting on what it gave (``list(...)`` does).
        """
        self._local.attempts = 0
        what = f"GET /v1/enrollments?program_id={program_id}"

        def open_page(cursor: str | None) -> httpx.Response:
            params = {"program_id": program_id}
            if cursor is not None:
                params["cursor"] = cursor
            return self._open_list(params, what)

        yield from follow_pages(open_page, what, self._transport_text)

    def get_enrollment_dict(self, enrollment_id: str) -> dict[str, Any]:
        path = _enrollment_path(enrollment_id)
        return _json_object(self._call("GET", path), f"GET {path}")

    def update_enrollment(self, enrollment_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH one enrollment; returns the enrollment as the API answered after the change.

        ``body`` is checked against the wire model first (``InputError`` when it does not
        fit: nothing is sent). Retried like a read: the body sets absolute values, so
        sending it twice is safe.
        """
        path = _enrollment_path(enrollment_id)
        try:
            patch = EnrollmentPatch.model_validate(body)
        except ValidationError as exc:
            raise InputError(f"PATCH {path}: not a valid body at {_places(exc)}") from exc
        response = self._call("PATCH", path, body=patch.body())
        return _json_object(response, f"PATCH {path}")

    # groups

    def list_groups(self, program_id: str) -> list[Group]:
        """The program's groups (a bare list as documented; ``{"groups": [...]}`` accepted)."""
        path = _groups_path(program_id)
        data = _json(self._call("GET", path), f"GET {path}")
        if isinstance(data, dict) and isinstance(data.get("groups"), list):
            data = data["groups"]
        if not isinstance(data, list):
            raise ApiResponseError(f"GET {path}: expected a list of groups")
        return [_model(Group, g, f"GET {path}") for g in data]

    def create_group(self, program_id: str, group: GroupCreate) -> Group:
        """POST a new group. Not retried after an ambiguous failure: see :meth:`ensure_group`."""
        path = _groups_path(program_id)
        response = self._call("POST", path, body=group.model_dump(mode="json"), idempotent=False)
        return _model(Group, _json_object(response, f"POST {path}"), f"POST {path}")

    def ensure_group(self, program_id: str, group_id: str, name: str) -> tuple[Group, bool]:
        """The group ``group_id``, created with ``name`` if the program lacks it.

        Returns ``(group, created)``. An existing group is returned as it is (not renamed).
        "Already exists" counts as success. After an ambiguous failure of the POST (timeout,
        dropped connection, 5xx) the groups are listed again instead of posting twice; if
        the group is there then, ``created`` is True (it was missing just before our POST).
        """
        try:
            wanted = GroupCreate(id=group_id, name=name)
        except ValidationError as exc:
            raise InputError(f"invalid group id {group_id!r} (letters, digits, - and _)") from exc
        found = self._find_group(program_id, group_id)
        if found is not None:
            return found, False
        try:
            return self.create_group(program_id, wanted), True
        except ApiRetryableError as exc:
            failure: ApiError = exc
            created = True
        except ApiError as exc:
            if not _already_exists(exc):
                raise
            failure, created = exc, False
        found = self._find_group(program_id, group_id)
        if found is None:
            raise failure
        return found, created

    def _find_group(self, program_id: str, group_id: str) -> Group | None:
        return next((g for g in self.list_groups(program_id) if g.id == group_id), None)

    # one call, with retries

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        self._local.attempts = 0
        what = f"{method} {path}"
        attempt = partial(self._send, method, path, what, body=body)
        return self._retrying(attempt, what, idempotent)

    def _retrying(self, attempt: Callable[[], _T], what: str, idempotent: bool) -> _T:
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(partial(self._should_retry, idempotent=idempotent)),
            sleep=self._sleep,
            before_sleep=partial(self._log_retry, what),
            reraise=False,
        )
        try:
            return retrying(attempt)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise self._gave_up(what, last) from last

    def _gave_up(self, what: str, last: BaseException | None) -> ApiRetryableError:
        attempts = self.settings.max_attempts
        if not isinstance(last, ApiRetryableError):
            return ApiRetryableError(f"{what}: gave up after {attempts} attempts")
        return ApiRetryableError(
            f"{last} (gave up after {attempts} attempts)",
            retry_after=last.retry_after,
            status_code=last.status_code,
            code=last.code,
            detail=last.detail,
            errors=last.errors,
        )

    def _should_retry(self, exc: BaseException, *, idempotent: bool) -> bool:
        if not isinstance(exc, ApiRetryableError):
            return False
        if exc.retry_after is not None and exc.retry_after > self.settings.max_retry_after_s:
            return False
        if idempotent:
            return True
        return exc.status_code == 429 or isinstance(exc.__cause__, _NOT_SENT)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, ApiRetryableError) and exc.status_code == 429 and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def _log_retry(self, what: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        _log.warning(
            "%s failed (%s); attempt %d of %d, retrying in %.2fs",
            what,
            exc,
            state.attempt_number,
            self.settings.max_attempts,
            delay,
        )

    # one attempt

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One attempt: wait for the gate, send, and raise for anything but a 2xx."""
        self._local.attempts = self.last_attempts + 1
        self._throttle.acquire()
        request = self._http.build_request(method, path, params=params, json=body)
        try:
            response = self._http.send(request, stream=stream)
            if response.status_code >= 300 and stream:
                response.read()
        except httpx.TimeoutException as exc:
            raise ApiRetryableError(f"{what}: timed out after {self.settings.timeout_s}s") from exc
        except httpx.TransportError as exc:
            raise ApiRetryableError(f"{what}: connection failed: {self._transport_text(exc)}") from exc
        if response.status_code >= 300:
            response.close()
            self._raise_for(response, what)
        return response

    def _transport_text(self, exc: httpx.HTTPError) -> str:
        return self._redact(f"{type(exc).__name__}: {_one_line(str(exc))}")

    def _redact(self, text: str) -> str:
        key = self.settings.api_key.reveal()
        return text.replace(key, "***") if key else text

    def _raise_for(self, response: httpx.Response, what: str) -> NoReturn:
        failure = _failure(response, self._redact)
        status = failure.status
        said = f"{failure.code}: {failure.message}" if failure.code else failure.message or "no details"
        fields: dict[str, Any] = {
            "status_code": status,
            "code": failure.code,
            "detail": failure.detail,
            "errors": failure.errors,
        }
        if status == 429:
            raise self._rate_limited(response, what, said, fields)
        if status in (401, 403):
            raise ApiAuthError(
                f"{what}: the API refused the key ({status}, {said}); "
                f"check {KEY_VARIABLE} and that the key is allowed for this program",
                **fields,
            )
        if status >= 500:
            raise ApiRetryableError(f"{what}: server error {status} ({said})", **fields)
        raise ApiError(f"{what}: {status} {said}", **fields)

    def _rate_limited(
        self, response: httpx.Response, what: str, said: str, fields: dict[str, Any]
    ) -> ApiRetryableError:
        """Close the gate for every thread; too long a Retry-After is given back at once."""
        asked = _retry_after(response)
        cap = self.settings.max_retry_after_s
        if asked is not None and asked > cap:
            message = f"{what}: rate limited, asked to wait {asked:.0f}s (more than {cap:.0f}s)"
            return ApiRetryableError(message, retry_after=asked, **fields)
        pause = asked
        if pause is None:
            exponent = max(0, self.last_attempts - 1)
            pause = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2**exponent)
        self._throttle.pause(pause)
        return ApiRetryableError(f"{what}: rate limited ({said})", retry_after=pause, **fields)

    # the streamed list

    def _open_list(self, params: dict[str, str], what: str) -> httpx.Response:
        attempt = partial(self._send, "GET", "/v1/enrollments", what, params=params, stream=True)
        return self._retrying(attempt, what, idempotent=True)

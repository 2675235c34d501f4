"""The Flip API client against the running simulator (real HTTP on 127.0.0.1), with
``httpx.MockTransport`` only where a test needs a precise canned answer."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import pickle
import threading
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import Settings
from engine.errors import ApiAuthError, ApiError, ApiResponseError, ApiRetryableError, InputError
from engine.flip.client import DEFAULT_BASE_URL, ApiSettings, FlipClient, Secret
from engine.flip.models import Group, GroupCreate
from engine.sandbox.generator import CA_EV_PROGRAM, TX_BATTERY_PROGRAM
from engine.sandbox.simulator import Simulator

from .conftest import FakeTime, client_settings, sim_config

CANARY = "fl_canary_3f9a1c7e5d2b4a60"


def _first_id(sim: Simulator, program_id: str = TX_BATTERY_PROGRAM) -> str:
    return sim.enrollment_ids(program_id)[0]


def _mock_client(
    handler: Callable[[httpx.Request], httpx.Response], fake_time: FakeTime, **changes: Any
) -> FlipClient:
    settings = ApiSettings(
        api_key=Secret(changes.pop("key", CANARY)),
        base_url="https://api.test",
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        **changes,
    )
    return FlipClient(
        settings, transport=httpx.MockTransport(handler), sleep=fake_time.sleep, clock=fake_time.monotonic
    )


# --- reading --------------------------------------------------------------------------------


def test_lists_every_enrollment_as_sent(simulator: Simulator, api_client: FlipClient) -> None:
    assert list(api_client.iter_enrollment_dicts(TX_BATTERY_PROGRAM)) == simulator.enrollments(
        TX_BATTERY_PROGRAM
    )
    assert api_client.last_attempts == 1
    ids = [enrollment["id"] for enrollment in api_client.iter_enrollment_dicts(CA_EV_PROGRAM)]
    assert ids == simulator.enrollment_ids(CA_EV_PROGRAM)


def test_lists_2000_enrollments(fake_time: FakeTime) -> None:
    with Simulator(sim_config(programs={CA_EV_PROGRAM: 2000})) as sim:
        settings = client_settings(sim)
        with FlipClient(settings, sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
            ids = [e["id"] for e in client.iter_enrollment_dicts(CA_EV_PROGRAM)]
        assert ids == sim.enrollment_ids(CA_EV_PROGRAM)
        assert sim.request_counts() == {"GET": 1}


def test_follows_pages_of_the_simulator(fake_time: FakeTime) -> None:
    with Simulator(sim_config(page_size=7)) as sim:
        with FlipClient(client_settings(sim), sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
            dicts = list(client.iter_enrollment_dicts(TX_BATTERY_PROGRAM))
            assert client.last_attempts == 8
        assert dicts == sim.enrollments(TX_BATTERY_PROGRAM)
        assert [r.query.rsplit("cursor=", 1)[-1] for r in sim.request_log()][1:] == [
            str(n) for n in range(7, 50, 7)
        ]


def test_follows_next_cursor_and_next(fake_time: FakeTime) -> None:
    pages = {
        None: {"enrollments": [{"id": "a"}, {"id": "b"}], "next_cursor": "p2"},
        "p2": {"next": "p3", "enrollments": [{"id": "c"}]},
        "p3": {"enrollments": [{"id": "d"}], "next_cursor": None},
    }
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with _mock_client(handler, fake_time) as client:
        assert [e["id"] for e in client.iter_enrollment_dicts("prog-x")] == ["a", "b", "c", "d"]
    assert seen == [
        {"program_id": "prog-x"},
        {"program_id": "prog-x", "cursor": "p2"},
        {"program_id": "prog-x", "cursor": "p3"},
    ]


def test_a_repeating_cursor_is_refused(fake_time: FakeTime) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"enrollments": [{"id": "a"}], "next_cursor": "same"})

    with _mock_client(handler, fake_time) as client, pytest.raises(ApiResponseError, match="repeats"):
        list(client.iter_enrollment_dicts("prog-x"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"enrollments": []}', []),
        (
            b'{"enrollments": [{"id": "a", "status": "SUBMITTED", "x": 1.5}]}',
            [{"id": "a", "status": "SUBMITTED", "x": 1.5}],
        ),
    ],
)
def test_list_bodies_that_are_fine(fake_time: FakeTime, body: bytes, expected: list[Any]) -> None:
    with _mock_client(lambda r: httpx.Response(200, content=body), fake_time) as client:
        assert list(client.iter_enrollment_dicts("prog-x")) == expected


@pytest.mark.parametrize(
    "body",
    [b'{"data": []}', b"[]", b'{"enrollments": [1, 2]}', b'{"enrollments": [{"id": "a"}', b"<html>", b""],
    ids=["no-enrollments-key", "bare-list", "not-objects", "unterminated", "html", "empty"],
)
def test_list_bodies_that_are_not_understood(fake_time: FakeTime, body: bytes) -> None:
    with _mock_client(lambda r: httpx.Response(200, content=body), fake_time) as client:
        with pytest.raises(ApiResponseError):
            list(client.iter_enrollment_dicts("prog-x"))
        assert client.last_attempts == 1


@pytest.mark.parametrize("fault", ["truncate", "malformed"])
def test_cut_or_malformed_list_raises_response_error(
    simulator: Simulator, api_client: FlipClient, fault: str
) -> None:
    simulator.script("GET", r"^/v1/enrollments$", fault)
    with pytest.raises(ApiResponseError, match=r"cut off|malformed"):
        list(api_client.iter_enrollment_dicts(TX_BATTERY_PROGRAM))
    assert list(api_client.iter_enrollment_dicts(TX_BATTERY_PROGRAM)) == simulator.enrollments(
        TX_BATTERY_PROGRAM
    )


def test_get_enrollment(simulator: Simulator, api_client: FlipClient) -> None:
    enrollment_id = _first_id(simulator)
    assert api_client.get_enrollment_dict(enrollment_id) == simulator.enrollment(enrollment_id)


def test_unknown_enrollment_is_a_plain_api_error(simulator: Simulator, api_client: FlipClient) -> None:
    with pytest.raises(ApiError) as excinfo:
        api_client.get_enrollment_dict("no-such-id")
    assert type(excinfo.value) is ApiError
    assert excinfo.value.status_code == 404
    assert excinfo.value.code == "not_found"
    assert simulator.requests_for("no-such-id") == {"GET": 1}


@pytest.mark.parametrize(
    ("fault", "message"), [("malformed", "not JSON"), ("deep", "nested too deeply to read")]
)
def test_an_unreadable_single_answer_is_a_clear_error_not_retried(
    simulator: Simulator, api_client: FlipClient, fault: str, message: str
) -> None:
    enrollment_id = _first_id(simulator)
    simulator.script("GET", enrollment_id, fault)
    with pytest.raises(ApiResponseError, match=message):
        api_client.get_enrollment_dict(enrollment_id)
    assert simulator.requests_for(enrollment_id) == {"GET": 1}


# --- writing --------------------------------------------------------------------------------


def test_update_enrollment(simulator: Simulator, api_client: FlipClient) -> None:
    enrollment_id = _first_id(simulator)
    body = {"status": "ACTIVE", "status_reason": "rules", "group_ids": ["LZ_NORTH"]}
    answer = api_client.update_enrollment(enrollment_id, body)
    assert answer == simulator.enrollment(enrollment_id)
    assert answer["status"] == "ACTIVE"
    assert answer["site"]["groups"] == [{"id": "LZ_NORTH", "name": "North load zone"}]
    assert simulator.patch_count(enrollment_id) == 1


@pytest.mark.parametrize(
    "body", [{"status": "NOPE"}, {"group_ids": ["has space"]}, {"status_reason": "x", "extra": 1}]
)
def test_a_body_outside_the_wire_model_is_refused_and_not_sent(
    simulator: Simulator, api_client: FlipClient, body: dict[str, object]
) -> None:
    enrollment_id = _first_id(simulator)
    with pytest.raises(InputError, match="not a valid body at"):
        api_client.update_enrollment(enrollment_id, body)
    assert simulator.patch_count(enrollment_id) == 0


def test_422_is_not_retried_and_its_fields_are_parsed(simulator: Simulator, api_client: FlipClient) -> None:
    enrollment_id = _first_id(simulator)
    with pytest.raises(ApiError) as excinfo:
        api_client.update_enrollment(enrollment_id, {"group_ids": ["LZ_NORTH", "NOPE"]})
    error = excinfo.value
    assert not isinstance(error, ApiRetryableError)
    assert error.status_code == 422
    assert error.code == "group_not_found"
    assert error.detail[0]["loc"] == ["body", "group_ids", 1]
    assert error.errors[0]["path"] == "body.group_ids.1"
    assert "NOPE" in str(error)
    assert simulator.patch_count(enrollment_id) == 1
    assert api_client.last_attempts == 1


def test_patch_is_retried_after_a_timeout_that_applied(simulator: Simulator, fake_time: FakeTime) -> None:
    enrollment_id = _first_id(simulator)
    simulator.set_faults(hang_s=1.0)
    simulator.script("PATCH", enrollment_id, "timeout", after_apply=True)
    settings = client_settings(simulator, timeout_s=0.2)
    with FlipClient(settings, sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
        answer = client.update_enrollment(enrollment_id, {"status": "PAUSED"})
        assert client.last_attempts == 2
    assert answer["status"] == "PAUSED"
    assert simulator.patch_count(enrollment_id) == 2


# --- groups ---------------------------------------------------------------------------------


def test_list_and_create_groups(simulator: Simulator, api_client: FlipClient) -> None:
    groups = api_client.list_groups(CA_EV_PROGRAM)
    assert [g.model_dump() for g in groups] == simulator.groups(CA_EV_PROGRAM)
    created = api_client.create_group(CA_EV_PROGRAM, GroupCreate(id="PILOT_X", name="Pilot X"))
    assert created == Group(id="PILOT_X", name="Pilot X")
    assert simulator.groups(CA_EV_PROGRAM)[-1] == {"id": "PILOT_X", "name": "Pilot X"}


def test_ensure_group_finds_or_creates(simulator: Simulator, api_client: FlipClient) -> None:
    existing, created = api_client.ensure_group(TX_BATTERY_PROGRAM, "LZ_NORTH", "ignored name")
    assert (existing.id, existing.name, created) == ("LZ_NORTH", "North load zone", False)
    assert simulator.request_counts() == {"GET": 1}
    new, created = api_client.ensure_group(TX_BATTERY_PROGRAM, "LZ_COAST", "Coast load zone")
    assert (new.id, new.name, created) == ("LZ_COAST", "Coast load zone", True)
    assert simulator.request_counts() == {"GET": 2, "POST": 1}


def test_ensure_group_does_not_create_twice_after_a_timeout_that_applied(
    simulator: Simulator, fake_time: FakeTime
) -> None:
    simulator.set_faults(hang_s=1.0)
    simulator.script("POST", "groups$", "timeout", after_apply=True)
    settings = client_settings(simulator, timeout_s=0.2)
    with FlipClient(settings, sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
        group, created = client.ensure_group(CA_EV_PROGRAM, "PILOT_TOU", "TOU pilot")
    assert (group.id, group.name, created) == ("PILOT_TOU", "TOU pilot", True)
    assert [g["id"] for g in simulator.groups(CA_EV_PROGRAM)].count("PILOT_TOU") == 1
    assert simulator.request_counts() == {"GET": 2, "POST": 1}


def test_ensure_group_treats_already_exists_as_success(fake_time: FakeTime) -> None:
    groups: list[dict[str, str]] = []
    posts: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            answer = list(groups)
            groups.append({"id": "G", "name": "made by someone else"})  # the race
            return httpx.Response(200, json=answer)
        posts.append(json.loads(request.content))
        body = {
            "code": "group_already_exists",
            "message": "exists",
            "status_code": 422,
            "detail": [],
            "errors": [],
        }
        return httpx.Response(422, json=body)

    with _mock_client(handler, fake_time) as client:
        group, created = client.ensure_group("prog-x", "G", "mine")
    assert (group.id, group.name, created) == ("G", "made by someone else", False)
    assert posts == [{"id": "G", "name": "mine"}]


def test_create_group_is_not_retried_after_an_ambiguous_5xx(
    simulator: Simulator, api_client: FlipClient
) -> None:
    simulator.script("POST", "groups$", "500")
    with pytest.raises(ApiRetryableError) as excinfo:
        api_client.create_group(CA_EV_PROGRAM, GroupCreate(id="G2", name="G two"))
    assert excinfo.value.status_code == 500
    assert simulator.request_counts() == {"POST": 1}


def test_ensure_group_refuses_a_bad_id(api_client: FlipClient) -> None:
    with pytest.raises(InputError, match="invalid group id"):
        api_client.ensure_group(CA_EV_PROGRAM, "no spaces", "x")


# --- retries --------------------------------------------------------------------------------


def test_retries_5xx_then_succeeds(simulator: Simulator, api_client: FlipClient, fake_time: FakeTime) -> None:
    enrollment_id = _first_id(simulator)
    simulator.script("GET", enrollment_id, "500")
    simulator.script("GET", enrollment_id, "503")
    assert api_client.get_enrollment_dict(enrollment_id)["id"] == enrollment_id
    assert api_client.last_attempts == 3
    assert simulator.requests_for(enrollment_id) == {"GET": 3}
    assert len(fake_time.sleeps) == 2
    assert all(0 <= s <= 0.05 for s in fake_time.sleeps)


@pytest.mark.parametrize("fault", ["drop", "truncate", "timeout"])
def test_retries_connection_faults(simulator: Simulator, fake_time: FakeTime, fault: str) -> None:
    enrollment_id = _first_id(simulator)
    simulator.set_faults(hang_s=1.0)
    simulator.script("GET", enrollment_id, fault)
    settings = client_settings(simulator, timeout_s=0.2)
    with FlipClient(settings, sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
        assert client.get_enrollment_dict(enrollment_id)["id"] == enrollment_id
        assert client.last_attempts == 2


def test_gives_up_after_max_attempts(simulator: Simulator, api_client: FlipClient) -> None:
    enrollment_id = _first_id(simulator)
    simulator.script("GET", enrollment_id, "503", times=10)
    with pytest.raises(ApiRetryableError, match="gave up after 4 attempts") as excinfo:
        api_client.get_enrollment_dict(enrollment_id)
    assert excinfo.value.status_code == 503
    assert excinfo.value.code == "service_unavailable"
    assert excinfo.value.retry_after is None
    assert api_client.last_attempts == 4
    assert simulator.requests_for(enrollment_id) == {"GET": 4}


def test_unreachable_server_is_retryable(fake_time: FakeTime) -> None:
    sim = Simulator(sim_config()).start()
    settings = client_settings(sim, api_key=Secret(CANARY))
    sim.stop()
    with FlipClient(settings, sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
        with pytest.raises(ApiRetryableError, match="connection failed") as excinfo:
            client.list_groups(CA_EV_PROGRAM)
        assert client.last_attempts == 4
    assert CANARY not in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ApiRetryableError)


def test_retries_are_logged_without_the_key(
    simulator: Simulator, fake_time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    simulator.set_api_key(CANARY)
    simulator.script("GET", "groups$", "500")
    settings = client_settings(simulator, api_key=Secret(CANARY))
    with FlipClient(settings, sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
        caplog.set_level(logging.DEBUG)
        client.list_groups(CA_EV_PROGRAM)
    retries = [r for r in caplog.records if r.name == "engine.flip.client"]
    assert len(retries) == 1
    assert "retrying" in retries[0].getMessage()
    assert all(CANARY not in r.getMessage() for r in caplog.records)


# --- 429 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_retry_after_and_sends_nothing_meanwhile(
    simulator: Simulator, api_client: FlipClient, fake_time: FakeTime, form: str
) -> None:
    enrollment_id = _first_id(simulator)
    simulator.script("GET", enrollment_id, "429", retry_after=3, retry_after_form=form)
    requests_at_sleep: list[int] = []
    fake_time.on_sleep = lambda s: requests_at_sleep.append(sum(simulator.request_counts().values()))
    assert api_client.get_enrollment_dict(enrollment_id)["id"] == enrollment_id
    assert fake_time.sleeps == [3.0]
    assert requests_at_sleep == [1]
    assert simulator.requests_for(enrollment_id) == {"GET": 2}
    assert api_client.last_attempts == 2


def test_429_without_retry_after_backs_off(
    simulator: Simulator, api_client: FlipClient, fake_time: FakeTime
) -> None:
    simulator.script("GET", "groups$", "429", retry_after=None)
    api_client.list_groups(TX_BATTERY_PROGRAM)
    assert fake_time.sleeps == [0.01]


def test_429_pauses_every_thread_of_the_client(
    simulator: Simulator, api_client: FlipClient, fake_time: FakeTime
) -> None:
    first, second = simulator.enrollment_ids(TX_BATTERY_PROGRAM)[:2]
    simulator.script("GET", first, "429", retry_after=5)
    events: list[tuple[str, float, int]] = []

    def other_thread_call() -> None:
        api_client.get_enrollment_dict(second)

    def on_sleep(seconds: float) -> None:
        events.append((threading.current_thread().name, seconds, sum(simulator.request_counts().values())))
        if len(events) == 1:  # while the first thread waits, another one tries to send
            worker = threading.Thread(target=other_thread_call, name="other")
            worker.start()
            worker.join()

    fake_time.on_sleep = on_sleep
    api_client.get_enrollment_dict(first)
    assert events[0][1:] == (5.0, 1)
    assert events[1] == ("other", 5.0, 1)  # the other thread waited before sending anything
    assert simulator.requests_for(second) == {"GET": 1}
    assert simulator.requests_for(first) == {"GET": 2}


def test_a_retry_after_above_the_cap_is_given_back_at_once(
    simulator: Simulator, api_client: FlipClient, fake_time: FakeTime
) -> None:
    enrollment_id = _first_id(simulator)
    simulator.script("PATCH", enrollment_id, "429", retry_after=3600)
    with pytest.raises(ApiRetryableError) as excinfo:
        api_client.update_enrollment(enrollment_id, {"status": "ACTIVE"})
    assert excinfo.value.retry_after == 3600
    assert excinfo.value.status_code == 429
    assert fake_time.sleeps == []
    assert simulator.patch_count(enrollment_id) == 1
    assert api_client.last_attempts == 1


def test_http_date_retry_after_is_read_against_the_server_date(fake_time: FakeTime) -> None:
    answers = iter(
        [
            httpx.Response(
                429,
                headers={
                    "Date": formatdate(1_000_000, usegmt=True),
                    "Retry-After": formatdate(1_000_012, usegmt=True),
                },
            ),
            httpx.Response(200, json=[]),
        ]
    )
    with _mock_client(lambda r: next(answers), fake_time) as client:
        assert client.list_groups("prog-x") == []
    assert fake_time.sleeps == [12.0]


def test_rate_limiter_spaces_requests(fake_time: FakeTime) -> None:
    sent_at: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_at.append(fake_time.monotonic())
        return httpx.Response(200, json=[])

    with _mock_client(handler, fake_time, max_requests_per_s=4) as client:
        for _ in range(6):
            client.list_groups("prog-x")
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert gaps == pytest.approx([0.25] * 5)


# --- auth and secrets -----------------------------------------------------------------------


def test_401_is_an_auth_error_and_not_retried(simulator: Simulator, fake_time: FakeTime) -> None:
    settings = client_settings(simulator, api_key=Secret(CANARY))
    with FlipClient(settings, sleep=fake_time.sleep, clock=fake_time.monotonic) as client:
        with pytest.raises(ApiAuthError, match="FLIP_API_KEY") as excinfo:
            list(client.iter_enrollment_dicts(TX_BATTERY_PROGRAM))
        assert client.last_attempts == 1
    assert excinfo.value.status_code == 401
    assert simulator.request_counts() == {"GET": 1}
    assert CANARY not in str(excinfo.value)
    assert fake_time.sleeps == []


def test_the_key_never_shows(fake_time: FakeTime) -> None:
    def echo_handler(request: httpx.Request) -> httpx.Response:
        # A server that echoes the header it got back into the error message.
        message = f"bad header {request.headers['Authorization']}"
        return httpx.Response(400, json={"code": "bad", "message": message, "status_code": 400})

    settings = ApiSettings(api_key=Secret(CANARY))
    with _mock_client(echo_handler, fake_time) as client:
        with pytest.raises(ApiError) as excinfo:
            client.list_groups("prog-x")
        shown = [repr(settings), str(settings), repr(settings.api_key), f"{settings.api_key}", repr(client)]
        shown += [str(excinfo.value), repr(excinfo.value), json.dumps(excinfo.value.errors)]
    assert all(CANARY not in text for text in shown)
    assert "Secret('***')" in repr(settings)
    assert "bad header Bearer ***" in str(excinfo.value)
    assert settings.api_key.reveal() == CANARY


def test_a_secret_is_not_picklable_but_copies(fake_time: FakeTime) -> None:
    secret = Secret(CANARY)
    with pytest.raises(InputError):
        pickle.dumps(secret)
    assert copy.deepcopy(secret) is secret
    assert Secret(CANARY) == secret
    assert Secret("other") != secret


def test_the_client_settings_come_from_the_product_settings(tmp_path: Path) -> None:
    from engine.bootstrap import api_settings

    secrets = tmp_path / "flip.env"
    secrets.write_text(f"FLIP_API_KEY={CANARY}\n", encoding="utf-8")
    given = Settings(
        api_url="http://127.0.0.1:9/", api_key_file=secrets, timeout_s=2.5, max_attempts=2,
        backoff_initial_s=0.01, backoff_max_s=0.02, max_retry_after_s=3.0, max_rps=7.0,
    )  # fmt: skip
    assert api_settings(given) == ApiSettings(
        api_key=Secret(CANARY), base_url="http://127.0.0.1:9", timeout_s=2.5, max_attempts=2,
        backoff_initial_s=0.01, backoff_max_s=0.02, max_retry_after_s=3.0, max_requests_per_s=7.0,
    )  # fmt: skip
    assert api_settings(Settings(api_key=CANARY)).base_url == DEFAULT_BASE_URL
    with pytest.raises(InputError, match="FLIP_API_KEY is not set"):
        api_settings(Settings())


def test_settings_are_validated() -> None:
    with pytest.raises(InputError):
        ApiSettings(api_key=Secret(""))
    with pytest.raises(InputError):
        ApiSettings(api_key=Secret(CANARY), base_url="ftp://x")
    with pytest.raises(InputError):
        ApiSettings(api_key=Secret(CANARY), max_attempts=0)

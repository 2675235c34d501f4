"""The Flip API simulator, over real HTTP on 127.0.0.1: auth, endpoints, errors, state,
counters and every fault kind."""

from __future__ import annotations

import http.client
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from engine.errors import InputError
from engine.sandbox.generator import CA_EV_PROGRAM, TX_BATTERY_PROGRAM
from engine.sandbox.simulator import FaultConfig, Simulator, SimulatorConfig

from .conftest import sim_config

ERROR_KEYS = {"code", "message", "status_code", "detail", "errors"}


def _first_id(sim: Simulator, program_id: str = TX_BATTERY_PROGRAM) -> str:
    return sim.enrollment_ids(program_id)[0]


def _assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["status_code"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}
    for item in body["errors"]:
        assert set(item) == {"message", "path"}
    return body


# --- configuration and lifecycle ------------------------------------------------------------


def test_refuses_any_host_but_loopback() -> None:
    with pytest.raises(InputError, match=r"127\.0\.0\.1"):
        SimulatorConfig(host="0.0.0.0")


def test_base_url_is_loopback_on_a_free_port(simulator: Simulator) -> None:
    assert simulator.base_url.startswith("http://127.0.0.1:")
    assert not simulator.base_url.endswith(":0")
    info = simulator.info()
    assert info.base_url == simulator.base_url
    assert info.api_key == "fl_sim_local_key"
    assert info.programs == {TX_BATTERY_PROGRAM: 50, CA_EV_PROGRAM: 50}


def test_stop_cuts_open_keep_alive_connections(simulator: Simulator, sim_http: httpx.Client) -> None:
    assert sim_http.get("/v1/programs/prog-ca-ev-charging/groups").status_code == 200
    simulator.stop()
    with pytest.raises(httpx.TransportError):
        sim_http.get("/v1/programs/prog-ca-ev-charging/groups")


def test_keeps_the_connection_alive(simulator: Simulator) -> None:
    port = int(simulator.base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": "Bearer fl_sim_local_key"}
    try:
        conn.request("GET", f"/v1/enrollments/{_first_id(simulator)}", headers=headers)
        first = conn.getresponse()
        assert len(first.read()) == int(first.headers["Content-Length"])
        sock = conn.sock
        conn.request("GET", f"/v1/programs/{TX_BATTERY_PROGRAM}/groups", headers=headers)
        second = conn.getresponse()
        assert second.status == 200
        assert len(second.read()) == int(second.headers["Content-Length"])
        assert conn.sock is sock  # same connection, not reopened
    finally:
        conn.close()


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer fl_wrong"}, {"Authorization": "fl_sim_local_key"}],
    ids=["missing", "wrong", "not-bearer"],
)
def test_401_without_the_right_key(simulator: Simulator, headers: dict[str, str]) -> None:
    response = httpx.get(f"{simulator.base_url}/v1/enrollments/{_first_id(simulator)}", headers=headers)
    _assert_error_shape(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_key_rotation(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.set_api_key("fl_rotated")
    assert sim_http.get("/v1/programs/prog-ca-ev-charging/groups").status_code == 401
    rotated = {"Authorization": "Bearer fl_rotated"}
    assert sim_http.get("/v1/programs/prog-ca-ev-charging/groups", headers=rotated).status_code == 200


def test_state_report_needs_the_key(simulator: Simulator, sim_http: httpx.Client) -> None:
    assert httpx.get(f"{simulator.base_url}/_sim/state").status_code == 401
    state = sim_http.get("/_sim/state").json()
    assert state["programs"][TX_BATTERY_PROGRAM]["enrollments"] == 50
    assert sum(state["programs"][CA_EV_PROGRAM]["statuses"].values()) == 50
    assert state["requests"]["GET"] == 2
    assert state["faults"]["rate_limit"] == 0.0


# --- reading --------------------------------------------------------------------------------


def test_list_answers_every_enrollment_of_the_program(simulator: Simulator, sim_http: httpx.Client) -> None:
    response = sim_http.get("/v1/enrollments", params={"program_id": CA_EV_PROGRAM})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["enrollments"]
    assert body["enrollments"] == simulator.enrollments(CA_EV_PROGRAM)
    assert len(body["enrollments"]) == 50


def test_list_pages_when_configured() -> None:
    with Simulator(sim_config(page_size=20)) as sim:
        headers = {"Authorization": "Bearer fl_sim_local_key"}
        url = f"{sim.base_url}/v1/enrollments"
        first = httpx.get(url, params={"program_id": CA_EV_PROGRAM}, headers=headers).json()
        assert len(first["enrollments"]) == 20
        assert first["next_cursor"] == "20"
        last = httpx.get(url, params={"program_id": CA_EV_PROGRAM, "cursor": "40"}, headers=headers).json()
        assert len(last["enrollments"]) == 10
        assert "next_cursor" not in last


def test_get_one(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator)
    response = sim_http.get(f"/v1/enrollments/{enrollment_id}")
    assert response.json() == simulator.enrollment(enrollment_id)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/enrollments/no-such-id"),
        ("PATCH", "/v1/enrollments/no-such-id"),
        ("GET", "/v1/enrollments?program_id=prog-nope"),
        ("GET", "/v1/programs/prog-nope/groups"),
        ("PATCH", f"/v1/programs/{TX_BATTERY_PROGRAM}/groups/NOPE"),
        ("GET", "/v2/whatever"),
    ],
)
def test_404_for_unknown_things(sim_http: httpx.Client, method: str, path: str) -> None:
    response = sim_http.request(method, path, json={"status": "ACTIVE"})
    assert response.status_code == 404
    assert set(response.json()) == ERROR_KEYS


def test_wrong_method_is_405(sim_http: httpx.Client) -> None:
    response = sim_http.delete(f"/v1/programs/{TX_BATTERY_PROGRAM}/groups")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


# --- PATCH /v1/enrollments/{id} -------------------------------------------------------------


def test_patch_sets_status_and_replaces_groups(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator)
    path = f"/v1/enrollments/{enrollment_id}"
    body = {"status": "ACTIVE", "status_reason": "ok", "group_ids": ["LZ_NORTH", "PILOT_VPP"]}
    answer = sim_http.patch(path, json=body).json()
    assert answer["status"] == "ACTIVE"
    assert answer["status_reason"] == "ok"
    assert answer["enrolled_at"] is not None
    assert answer["site"]["groups"] == [
        {"id": "LZ_NORTH", "name": "North load zone"},
        {"id": "PILOT_VPP", "name": "Virtual power plant pilot"},
    ]
    assert simulator.enrollment(enrollment_id) == answer
    unchanged = sim_http.patch(path, json={"status_reason": "still ok", "group_ids": None}).json()
    assert [g["id"] for g in unchanged["site"]["groups"]] == ["LZ_NORTH", "PILOT_VPP"]
    assert unchanged["status"] == "ACTIVE"
    replaced = sim_http.patch(path, json={"group_ids": ["LZ_WEST"]}).json()
    assert [g["id"] for g in replaced["site"]["groups"]] == ["LZ_WEST"]
    emptied = sim_http.patch(path, json={"group_ids": []}).json()
    assert emptied["site"]["groups"] == []


def test_updated_at_moves_forward_on_every_change(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator, CA_EV_PROGRAM)
    path = f"/v1/enrollments/{enrollment_id}"
    seen = [simulator.enrollment(enrollment_id)["updated_at"]]
    for status in ("PENDING", "ACTIVE", "ACTIVE"):
        seen.append(sim_http.patch(path, json={"status": status}).json()["updated_at"])
    seen.append(simulator.edit_enrollment(enrollment_id, status="PAUSED")["updated_at"])
    seen.append(sim_http.get(path).json()["updated_at"])
    assert seen[:-1] == sorted(set(seen[:-1]))  # strictly increasing
    assert seen[-1] == seen[-2]  # a read changes nothing


def test_edit_enrollment_is_what_the_api_then_serves(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator)
    edited = simulator.edit_enrollment(enrollment_id, status="REJECTED", group_ids=["LZ_SOUTH"])
    served = sim_http.get(f"/v1/enrollments/{enrollment_id}").json()
    assert served == edited
    assert served["status"] == "REJECTED"
    assert served["site"]["groups"] == [{"id": "LZ_SOUTH", "name": "South load zone"}]
    with pytest.raises(InputError):
        simulator.edit_enrollment("no-such-id", status="ACTIVE")


@pytest.mark.parametrize(
    ("body", "code", "loc", "error_type"),
    [
        ({"status": "APPROVED"}, "validation_error", ["body", "status"], "enum"),
        ({"group_ids": ["bad id!"]}, "validation_error", ["body", "group_ids", 0], "string_pattern_mismatch"),
        ({"group_ids": [""]}, "validation_error", ["body", "group_ids", 0], "string_pattern_mismatch"),
        ({"group_ids": ["LZ_NORTH", "NOPE"]}, "group_not_found", ["body", "group_ids", 1], "group_not_found"),
        ({"statuss": "ACTIVE"}, "validation_error", ["body", "statuss"], "extra_forbidden"),
        ({"group_ids": "LZ_NORTH"}, "validation_error", ["body", "group_ids"], "list_type"),
    ],
    ids=["bad-status", "bad-group-id", "empty-group-id", "unknown-group", "unknown-key", "not-a-list"],
)
def test_patch_422_in_the_documented_shape(
    simulator: Simulator,
    sim_http: httpx.Client,
    body: dict[str, Any],
    code: str,
    loc: list[Any],
    error_type: str,
) -> None:
    enrollment_id = _first_id(simulator)
    before = simulator.enrollment(enrollment_id)
    response = sim_http.patch(f"/v1/enrollments/{enrollment_id}", json=body)
    answer = _assert_error_shape(response, 422, code)
    assert answer["detail"] == [{"loc": loc, "msg": answer["detail"][0]["msg"], "type": error_type}]
    assert answer["errors"][0]["path"] == ".".join(map(str, loc))
    assert simulator.enrollment(enrollment_id) == before  # nothing applied


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_patch_body_must_be_a_json_object(simulator: Simulator, sim_http: httpx.Client, raw: bytes) -> None:
    response = sim_http.patch(f"/v1/enrollments/{_first_id(simulator)}", content=raw)
    _assert_error_shape(response, 422, "validation_error")


# --- groups ---------------------------------------------------------------------------------


def test_create_list_and_duplicate_group(simulator: Simulator, sim_http: httpx.Client) -> None:
    path = f"/v1/programs/{CA_EV_PROGRAM}/groups"
    created = sim_http.post(path, json={"id": "PILOT_NEW", "name": "New pilot"})
    assert created.status_code == 201
    assert created.json() == {"id": "PILOT_NEW", "name": "New pilot"}
    assert {"id": "PILOT_NEW", "name": "New pilot"} in sim_http.get(path).json()
    assert simulator.groups(CA_EV_PROGRAM)[-1] == {"id": "PILOT_NEW", "name": "New pilot"}
    again = sim_http.post(path, json={"id": "PILOT_NEW", "name": "Other"})
    _assert_error_shape(again, 422, "group_already_exists")
    assert simulator.groups(CA_EV_PROGRAM)[-1]["name"] == "New pilot"


@pytest.mark.parametrize(
    "body",
    [
        {"id": "has space", "name": "x"},
        {"name": "x"},
        {"id": "OK_ID"},
        {"id": "OK_ID", "name": "x", "color": "red"},
    ],
)
def test_create_group_422(simulator: Simulator, sim_http: httpx.Client, body: dict[str, Any]) -> None:
    response = sim_http.post(f"/v1/programs/{CA_EV_PROGRAM}/groups", json=body)
    _assert_error_shape(response, 422, "validation_error")
    assert len(simulator.groups(CA_EV_PROGRAM)) == 5


def test_rename_and_re_id_a_group_everywhere(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator)
    sim_http.patch(f"/v1/enrollments/{enrollment_id}", json={"group_ids": ["LZ_WEST"]})
    before = simulator.enrollment(enrollment_id)["updated_at"]
    path = f"/v1/programs/{TX_BATTERY_PROGRAM}/groups/LZ_WEST"
    answer = sim_http.patch(path, json={"id": "LZ_FAR_WEST", "name": "Far West"})
    assert answer.json() == {"id": "LZ_FAR_WEST", "name": "Far West"}
    assert "LZ_WEST" not in {g["id"] for g in simulator.groups(TX_BATTERY_PROGRAM)}
    after = simulator.enrollment(enrollment_id)
    assert after["site"]["groups"] == [{"id": "LZ_FAR_WEST", "name": "Far West"}]
    assert after["updated_at"] == before
    clash = sim_http.patch(f"/v1/programs/{TX_BATTERY_PROGRAM}/groups/LZ_NORTH", json={"id": "LZ_SOUTH"})
    _assert_error_shape(clash, 422, "group_already_exists")


# --- counters -------------------------------------------------------------------------------


def test_counters_count_every_request(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator)
    path = f"/v1/enrollments/{enrollment_id}"
    sim_http.get(path)
    sim_http.patch(path, json={"status": "PENDING"})
    sim_http.patch(path, json={"status": "NOPE"})  # rejected, still counted
    httpx.get(f"{simulator.base_url}{path}")  # no key, still counted
    simulator.script("GET", path, "500")
    sim_http.get(path)  # faulted, still counted
    sim_http.get("/v1/enrollments", params={"program_id": TX_BATTERY_PROGRAM})
    assert simulator.requests_for(enrollment_id) == {"GET": 3, "PATCH": 2}
    assert simulator.patch_count(enrollment_id) == 2
    assert simulator.request_counts() == {"GET": 4, "PATCH": 2}
    assert [r.method for r in simulator.request_log()] == ["GET", "PATCH", "PATCH", "GET", "GET", "GET"]
    simulator.reset_counters()
    assert simulator.request_counts() == {}


# --- random faults --------------------------------------------------------------------------


def test_latency_is_added(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.set_faults(latency_s=0.15)
    started = time.perf_counter()
    assert sim_http.get(f"/v1/programs/{TX_BATTERY_PROGRAM}/groups").status_code == 200
    assert time.perf_counter() - started >= 0.15


@pytest.mark.parametrize("form", ["seconds", "http-date", "none"])
def test_rate_limit_with_each_retry_after_form(
    simulator: Simulator, sim_http: httpx.Client, form: str
) -> None:
    simulator.set_faults(rate_limit=1.0, retry_after=form, retry_after_s=7)
    response = sim_http.get(f"/v1/enrollments/{_first_id(simulator)}")
    _assert_error_shape(response, 429, "rate_limited")
    header = response.headers.get("Retry-After")
    if form == "seconds":
        assert header == "7"
    elif form == "http-date":
        assert header is not None
        waited = parsedate_to_datetime(header) - parsedate_to_datetime(response.headers["Date"])
        assert waited.total_seconds() == 7
    else:
        assert header is None


def test_error_rate_answers_500_or_503(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.set_faults(error_rate=1.0)
    statuses = {sim_http.get(f"/v1/programs/{CA_EV_PROGRAM}/groups").status_code for _ in range(12)}
    assert statuses == {500, 503}


def test_timeout_hangs_longer_than_the_client_waits(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.set_faults(timeout=1.0, hang_s=2.0)
    with pytest.raises(httpx.ReadTimeout):
        sim_http.get(f"/v1/programs/{CA_EV_PROGRAM}/groups", timeout=0.2)


def test_drop_closes_without_an_answer(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.set_faults(drop=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        sim_http.get(f"/v1/programs/{CA_EV_PROGRAM}/groups")


def test_truncate_sends_part_of_the_promised_body(simulator: Simulator) -> None:
    simulator.set_faults(truncate=1.0)
    port = int(simulator.base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(
            "GET",
            f"/v1/enrollments?program_id={CA_EV_PROGRAM}",
            headers={"Authorization": "Bearer fl_sim_local_key"},
        )
        response = conn.getresponse()
        promised = int(response.headers["Content-Length"])
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            response.read()
        assert 0 < len(excinfo.value.partial) < promised
    finally:
        conn.close()


def test_random_faults_are_seeded() -> None:
    def outcomes(seed: int) -> list[int]:
        faults = FaultConfig(rate_limit=0.3, error_rate=0.3, seed=seed)
        with Simulator(sim_config(faults=faults)) as sim:
            headers = {"Authorization": "Bearer fl_sim_local_key"}
            with httpx.Client(base_url=sim.base_url, headers=headers) as http:
                return [http.get(f"/v1/programs/{CA_EV_PROGRAM}/groups").status_code for _ in range(30)]

    first = outcomes(5)
    assert first == outcomes(5)
    assert first != outcomes(6)
    assert {200, 429} <= set(first)
    assert set(first) & {500, 503}


def test_fault_config_is_validated() -> None:
    with pytest.raises(InputError):
        FaultConfig(rate_limit=1.5)
    with pytest.raises(InputError):
        FaultConfig(rate_limit=0.6, drop=0.6)
    with pytest.raises(InputError):
        FaultConfig(retry_after="sometimes")


# --- scripted faults ------------------------------------------------------------------------


def test_scripted_faults_fire_the_given_number_of_times(simulator: Simulator, sim_http: httpx.Client) -> None:
    path = f"/v1/enrollments/{_first_id(simulator)}"
    simulator.script("GET", r"^/v1/enrollments/", "503", times=2)
    simulator.script("PATCH", r"^/v1/enrollments/", "401")
    assert simulator.pending_scripts() == 3
    assert [sim_http.get(path).status_code for _ in range(3)] == [503, 503, 200]
    assert sim_http.patch(path, json={"status": "PENDING"}).status_code == 401
    assert simulator.pending_scripts() == 0


def test_scripted_malformed_is_not_json(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.script("GET", r"^/v1/enrollments$", "malformed")
    response = sim_http.get("/v1/enrollments", params={"program_id": TX_BATTERY_PROGRAM})
    assert response.status_code == 200
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


def test_scripted_429_with_http_date(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.script("*", "groups", "429", retry_after=30, retry_after_form="http-date")
    response = sim_http.get(f"/v1/programs/{TX_BATTERY_PROGRAM}/groups")
    assert response.status_code == 429
    waited = parsedate_to_datetime(response.headers["Retry-After"]) - parsedate_to_datetime(
        response.headers["Date"]
    )
    assert waited.total_seconds() == 30


def test_fault_before_apply_changes_nothing(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator)
    before = simulator.enrollment(enrollment_id)
    simulator.script("PATCH", enrollment_id, "drop")
    with pytest.raises(httpx.RemoteProtocolError):
        sim_http.patch(f"/v1/enrollments/{enrollment_id}", json={"status": "UNENROLLED"})
    assert simulator.enrollment(enrollment_id) == before


def test_timeout_after_apply_has_applied(simulator: Simulator, sim_http: httpx.Client) -> None:
    enrollment_id = _first_id(simulator)
    simulator.set_faults(hang_s=2.0)
    simulator.script("PATCH", enrollment_id, "timeout", after_apply=True)
    with pytest.raises(httpx.ReadTimeout):
        sim_http.patch(f"/v1/enrollments/{enrollment_id}", json={"status": "UNENROLLED"}, timeout=0.2)
    assert simulator.enrollment(enrollment_id)["status"] == "UNENROLLED"
    assert simulator.patch_count(enrollment_id) == 1


def test_group_post_503_after_apply_has_created_it(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.script("POST", "groups$", "503", after_apply=True)
    response = sim_http.post(f"/v1/programs/{CA_EV_PROGRAM}/groups", json={"id": "G1", "name": "G one"})
    assert response.status_code == 503
    assert {"id": "G1", "name": "G one"} in simulator.groups(CA_EV_PROGRAM)


def test_script_rejects_unknown_faults(simulator: Simulator) -> None:
    with pytest.raises(InputError, match="unknown fault"):
        simulator.script("GET", ".*", "explode")


def test_clear_faults(simulator: Simulator, sim_http: httpx.Client) -> None:
    simulator.set_faults(error_rate=1.0)
    simulator.script("GET", ".*", "drop")
    simulator.clear_faults()
    assert sim_http.get(f"/v1/programs/{CA_EV_PROGRAM}/groups").status_code == 200
    assert simulator.pending_scripts() == 0


# --- scale ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_lists_100k_enrollments_in_one_exact_answer() -> None:
    # How fast is measured in bench/ (BENCHMARKS.md), not asserted on a shared machine.
    config = sim_config(programs={TX_BATTERY_PROGRAM: 100_000})
    with Simulator(config) as sim:
        headers = {"Authorization": "Bearer fl_sim_local_key"}
        with httpx.Client(base_url=sim.base_url, headers=headers, timeout=30) as http:
            query = {"program_id": TX_BATTERY_PROGRAM}
            with http.stream("GET", "/v1/enrollments", params=query) as response:
                size = sum(len(chunk) for chunk in response.iter_raw())
    assert response.status_code == 200
    assert size == int(response.headers["Content-Length"])

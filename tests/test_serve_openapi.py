"""The OpenAPI document describes what the server does: every route with every status it answers
(no 422, which it never sends), the bearer key where one is needed, each API's own error shape, and
the bounds the server checks. The fuzzer (test_serve_fuzz.py) holds the server to it."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from openseedance.serve import ark, bounds
from openseedance.serve.api import ServeSettings
from openseedance.serve.app import create_app

TASKS, VIDEOS = "/api/v3/contents/generations/tasks", "/v1/videos"
CREATES = {200, 400, 401, 413, 429}
STATUSES = {
    ("post", TASKS): CREATES | {404},
    ("get", TASKS): {200, 400, 401},
    ("get", TASKS + "/{task_id}"): {200, 401, 404},
    ("delete", TASKS + "/{task_id}"): {200, 401, 404, 409},
    ("post", VIDEOS): CREATES,
    ("get", VIDEOS): {200, 400, 401},
    ("get", VIDEOS + "/{video_id}"): {200, 401, 404},
    ("delete", VIDEOS + "/{video_id}"): {200, 401, 404, 409},
    ("get", VIDEOS + "/{video_id}/content"): {200, 206, 400, 401, 404, 409, 416},
    ("head", VIDEOS + "/{video_id}/content"): {200, 206, 400, 401, 404, 409, 416},
    ("post", VIDEOS + "/{video_id}/remix"): CREATES | {404, 409},
    ("post", VIDEOS + "/edits"): CREATES | {404, 409},
    ("post", VIDEOS + "/extensions"): CREATES | {404, 409},
    ("get", "/api/jobs"): {200, 400, 401},
    ("get", "/api/jobs/{job_id}"): {200, 401, 404},
    ("delete", "/api/jobs/{job_id}"): {200, 401, 404, 409},
    ("post", "/api/live"): {201, 400, 401, 413, 429},
    ("get", "/api/live/{job_id}"): {200, 401, 404},
    ("post", "/api/live/{job_id}/prompt"): {200, 400, 401, 404, 409},
    ("post", "/api/live/{job_id}/stop"): {200, 401, 404},
    ("get", "/live/{job_id}/stream.mp4"): {200, 307, 404},
    ("get", "/files/{job_id}/{name}"): {200, 206, 404, 416},
    ("head", "/files/{job_id}/{name}"): {200, 206, 404, 416},
    ("get", "/health"): {200},
    ("get", "/favicon.ico"): {204},
    ("get", "/"): {200},
}
PUBLIC = {"/files/{job_id}/{name}", "/live/{job_id}/stream.mp4", "/health", "/favicon.ico", "/"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(ServeSettings(data_dir=tmp_path_factory.mktemp("openapi"), workers=0, api_keys=("k",)))


@pytest.fixture(scope="module")
def document(app) -> dict:
    return app.openapi()


def test_it_is_valid_openapi_3(document):
    assert document["openapi"].startswith("3.")
    validate(document)


def test_every_route_with_the_statuses_it_answers(document):
    operations = {(method, path): op for path, methods in document["paths"].items() for method, op in methods.items()}
    assert set(operations) == set(STATUSES)
    for where, op in operations.items():
        assert {int(status) for status in op["responses"]} == STATUSES[where], where
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids))


def test_errors_in_each_apis_shape(document):
    for path, methods in document["paths"].items():
        shape = "OpenAIError" if path.startswith("/v1/") else "ArkError"
        for op in methods.values():
            for status, response in op["responses"].items():
                if int(status) >= 400 and status != "416":  # a 416 has no body
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith(shape), (path, status)
    errors = document["components"]["schemas"]
    assert errors["ArkError"]["properties"]["error"]["required"] == ["code", "message", "param", "type"]
    assert errors["OpenAIError"]["properties"]["error"]["required"] == ["message", "type", "param", "code"]


def test_the_bearer_key_on_the_routes_that_need_it(document):
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "an API key of this server"}  # fmt: skip
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            assert op["security"] == ([] if path in PUBLIC else [{"bearer": []}]), (method, path)
            assert ("401" in op["responses"]) == (path not in PUBLIC), (method, path)


def test_bodies_and_parameters_carry_the_servers_bounds(app, document):
    schemas = document["components"]["schemas"]
    body = schemas["ArkTaskCreate"]
    assert set(body["properties"]) == ark._BODY and body["additionalProperties"] is False
    assert body["properties"]["model"]["maxLength"] == bounds.MAX_NAME_CHARS
    seed = body["properties"]["seed"]["anyOf"][0]
    assert (seed["minimum"], seed["maximum"]) == (-1, 2**32 - 1)
    card = app.state.service.card
    seconds = schemas["VideoCreate"]["properties"]["seconds"]["anyOf"][0]
    assert (seconds["minimum"], seconds["maximum"]) == (card.min_duration, card.max_duration)
    assert schemas["VideoCreate"]["properties"]["prompt"]["maxLength"] == bounds.MAX_PROMPT_CHARS
    create = document["paths"][VIDEOS]["post"]["requestBody"]["content"]
    assert set(create) == {"application/json", "multipart/form-data", "application/x-www-form-urlencoded"}
    listing = {p["name"]: p["schema"] for p in document["paths"][VIDEOS]["get"]["parameters"]}
    assert listing["limit"]["maximum"] == 100 and listing["order"]["enum"] == ["asc", "desc"]
    tasks = {p["name"] for p in document["paths"][TASKS]["get"]["parameters"]}
    assert tasks == {"page_num", "page_size", "filter.status", "filter.task_ids", "filter.model"}


def test_a_route_without_a_description_is_an_error(tmp_path):
    app = create_app(ServeSettings(data_dir=tmp_path, workers=0, api_keys=("k",)))
    app.get("/undescribed")(lambda: {})
    with pytest.raises(KeyError, match="/undescribed"):
        app.openapi()

"""Both APIs fuzzed against a real server with no workers (requests are checked and queued, never
generated): schemathesis sends what the OpenAPI document allows and what it forbids, and hypothesis
mutates valid bodies field by field. Never a 5xx, every answer is one the document lists, in its
schema, and every 4xx names the field at fault except those `openseedance.serve.openapi` lists as
having none. Settings are fixed (derandomized, bounded examples) so that every run sends the same
requests."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from serve_util import KEY, Server

AUTH = {"authorization": f"Bearer {KEY}"}
TASKS = "/api/v3/contents/generations/tasks"
FIXED = settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
# 4xx that name no field: the key, the byte limit, the pending-task limit, a body that is not a JSON object
UNNAMED = (401, 405, 413, 429)
WHOLE_BODY = ("the request body", "could not read the form body")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("fuzz"), args=("--workers", "0", "--max-pending", "100000")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearer": {"bearer": KEY}}}})
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


def names_its_field(status: int, content: bytes, path: str) -> None:
    """A 4xx says which field is at fault, unless it is one that has none."""
    if not 400 <= status < 500 or status in UNNAMED or not content:  # no content: HEAD, and a 416
        return
    error = json.loads(content)["error"]
    if status == 400 and error["message"].startswith(WHOLE_BODY):
        return
    if path.startswith("/files/"):  # an unknown file: there is no field to name
        return
    assert error["param"], (status, path, error)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis(api, mode):
    """Every operation of the document, with data its schemas allow (positive) or forbid (negative)."""
    checks = [status_code_conformance, response_schema_conformance, content_type_conformance, ignored_auth,
              negative_data_rejection]  # fmt: skip
    for result in api.get_all_operations():
        operation = result.ok()
        described = api.raw_schema["paths"][operation.path][operation.method.lower()]
        if mode == GenerationMode.NEGATIVE and not (described["parameters"] or "requestBody" in described):
            continue  # nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(FIXED, max_examples=12)
        def fuzz(case):
            response = case.call_and_validate(timeout=30, checks=checks)
            assert response.status_code < 500, (case.operation.label, response.text)
            names_its_field(response.status_code, response.content, case.path)

        fuzz()


# --- valid bodies, mutated one field at a time -------------------------------------------------------------

ARK = {"model": "m", "content": [{"type": "text", "text": "a bell rings --dur 1"}], "seed": 7, "ratio": "1:1",
       "resolution": "64p", "generate_audio": True, "watermark": False, "priority": 2, "callback_url": None}
VIDEO = {"prompt": "a bell rings", "seconds": "1", "size": "64x64", "model": "m"}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["", " ", "-1", "0", "1e999", "9" * 30, "16:9", "64x64", "true", "data:,x", "\ud800"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _places(value: Any, where: tuple = ()) -> list[tuple]:
    """Every path to a field (a key or an index) inside `value`."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found += [(*where, key), *_places(item, (*where, key))]
    return found


@st.composite
def mutated(draw, valid: dict[str, Any]) -> tuple[dict[str, Any], tuple]:
    """`valid` with one field replaced, removed, or one unknown field added; and the path changed."""
    body = copy.deepcopy(valid)
    path = draw(st.sampled_from(_places(body)))
    *parents, last = path
    container = body
    for key in parents:
        container = container[key]
    how = draw(st.sampled_from(["replace", "remove", "add"]))
    if how == "replace":
        container[last] = draw(JSON_VALUES)
    elif how == "remove":
        container.pop(last)
    elif isinstance(container, dict):
        name = draw(st.text(min_size=1, max_size=8).filter(lambda n: n not in container))
        container[name] = draw(JSON_VALUES)
        path = (*parents, name)
    else:
        container.append(draw(JSON_VALUES))
        path = (*parents, len(container) - 1)
    return body, path


def _check(response: httpx.Response, statuses: tuple[int, ...], changed: tuple = ()) -> None:
    """Never a 5xx, only statuses the document lists, and a 4xx names the changed field (or what holds it)."""
    assert response.status_code < 500, response.text
    assert response.status_code in (200, *statuses), response.text
    names_its_field(response.status_code, response.content, response.request.url.path)
    param = response.json()["error"]["param"] if response.status_code == 400 else None
    if param and changed:
        field = changed[0] or "body"
        assert param == field or param.startswith((f"{field}.", f"{field}[", "--")), (changed, response.text)


def _post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    content = json.dumps(body).encode("utf-8", "surrogatepass")
    return httpx.post(server.url + path, content=content, headers={**AUTH, "content-type": "application/json"},
                      timeout=30)  # fmt: skip


@given(change=mutated(ARK))
@settings(FIXED, max_examples=60)
def test_mutated_ark_bodies(server, change):
    body, changed = change
    _check(_post(server, TASKS, body), (400, 404, 413, 429), changed)


@given(change=mutated(VIDEO))
@settings(FIXED, max_examples=40)
def test_mutated_openai_bodies(server, change):
    body, changed = change
    _check(_post(server, "/v1/videos", body), (400, 413, 429), changed)


@given(fields=st.dictionaries(st.sampled_from([*VIDEO, "input_reference", "input_reference[image_url]", "style"]),
                              st.text(max_size=12) | st.sampled_from(["", "1", "64x64", "1e999", "data:,x"]),
                              max_size=5),
       upload=st.none() | st.binary(max_size=64))  # fmt: skip
@settings(FIXED, max_examples=30)
def test_mutated_openai_forms(server, fields, upload):
    files = None  # without a file: a urlencoded form, which the server reads as it reads multipart
    if upload is not None:
        fields.pop("input_reference", None)
        files = {"input_reference": ("a.png", upload, "image/png")}
    response = httpx.post(f"{server.url}/v1/videos", data=fields, files=files, headers=AUTH, timeout=30)
    _check(response, (400, 413, 429))


def test_a_field_named_nothing_is_named_by_what_holds_it(server):
    """Found by the fuzzer: an unknown field called "" was refused with an empty `param`."""
    for path, body, param in ((TASKS, {**ARK, "": 1}, "body"), ("/v1/videos", {**VIDEO, "": 1}, "body"),
                              (TASKS, {**ARK, "content": [{"type": "text", "text": "x", "": 1}]}, "content[0]")):
        response = _post(server, path, body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    form = httpx.post(f"{server.url}/v1/videos", data={"prompt": "x", "": "1"}, headers=AUTH, timeout=30)
    assert form.status_code == 400 and form.json()["error"]["param"] == "body", form.text

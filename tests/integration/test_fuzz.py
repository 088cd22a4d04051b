"""Fuzzing the running service.

1. Schemathesis against the app's own OpenAPI schema: every operation, no 5xx, every status
   code, media type, header and body is one the schema declares for the operation, and every
   error has the one error shape.
2. Hypothesis over the bodies that carry user numbers (POST /v1/specs/validate, POST /v1/jobs,
   POST /v1/jobs/{id}/predict): NaN, Infinity, 1e999, huge integers, ragged, deep and long
   lists, strings where numbers go, empty lists, zero, negative and absurd sizes. Each one is a
   4xx with the error shape, within the client's timeout, never a 5xx; no job gets queued.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.fuzz_bodies import (
    BASES,
    COUNT_PATHS,
    FLOAT_PATHS,
    MLP,
    PADDING_PATHS,
    SIZE_PATHS,
    Raw,
    bad_count,
    bad_element,
    bad_input_shape,
    bad_matrix_1,
    bad_padding,
    bad_real,
    bad_size,
    deep,
    dumps,
    long_rows,
    replaced,
    with_bad_element,
)
from tests.integration.jobs import HEIGHTS, run
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

TIMEOUT = 30.0  # seconds (as Stack.client): a request that takes longer counts as a hang
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


# --- helpers --------------------------------------------------------------------------------

def send(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    """POST `body` (written by `dumps`, so raw tokens pass through) and time it.

    Each request has a connection of its own (the server may close one after a 500), and a
    429 from the rate limiter is waited out rather than counted as a refusal.
    """
    text = body.text if isinstance(body, Raw) else dumps(body)
    for _ in range(20):
        started = time.monotonic()
        try:
            response = httpx.post(str(client.base_url).rstrip("/") + path, content=text.encode(),
                                  headers={"content-type": "application/json"}, timeout=TIMEOUT)
        except httpx.TimeoutException:
            pytest.fail(f"POST {path} hung (no answer in {TIMEOUT} s) for body {text[:300]}")
        assert time.monotonic() - started < TIMEOUT
        if response.status_code != 429:
            return response
        time.sleep(min(float(response.headers.get("retry-after", "1")), 5))
    return response


def assert_refused(client: httpx.Client, response: httpx.Response, body: Any) -> None:
    """A 4xx with `{"error": {"type", "message"}}`; a 202 job is cancelled before failing."""
    shown = (body.text if isinstance(body, Raw) else dumps(body))[:400]
    if response.status_code == 202:
        client.post(f"/v1/jobs/{response.json()['id']}/cancel")
    assert 400 <= response.status_code < 500, (
        f"{response.request.method} {response.request.url.path} answered "
        f"{response.status_code} {response.text[:400]}\nfor body {shown}")
    assert_error_shape(response)


def assert_error_shape(response: httpx.Response) -> None:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, response.text[:400]
    error = body["error"]
    assert isinstance(error.get("type"), str) and error["type"], response.text[:400]
    assert isinstance(error.get("message"), str) and error["message"], response.text[:400]


def check_body(base: dict[str, Any]) -> dict[str, Any]:
    """The body of /v1/specs/validate for a job spec: {model, training, data}."""
    return {k: base[k] for k in ("model", "training", "data")}


def short(value: Any) -> str:
    return repr(value)[:40]


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http


@pytest.fixture(scope="module")
def heights_job(stack: Stack) -> str:
    """A succeeded heights job (2 epochs) to predict with."""
    body = copy.deepcopy(HEIGHTS)
    body["name"] = "fuzz-heights"
    body["training"]["epochs"] = 2
    with stack.client() as http:
        return str(run(http, body)["id"])


# --- the bases are valid, so every refusal below is the mutation's doing -------------------

@pytest.mark.parametrize("name", sorted(BASES))
def test_the_fuzzed_specs_are_valid_as_they_stand(client: httpx.Client, name: str) -> None:
    response = send(client, "/v1/specs/validate", check_body(BASES[name]))
    assert response.status_code == 200, response.text


# --- hand-written fuzz: POST /v1/specs/validate and POST /v1/jobs --------------------------

def _mutations() -> st.SearchStrategy[tuple[str, tuple[str | int, ...], Any]]:
    """(base name, path, hostile value): sizes get bad sizes, reals get non-reals."""
    options = []
    for name in BASES:
        for path in SIZE_PATHS[name]:
            options.append(st.tuples(st.just(name), st.just(path), bad_size))
        for path in FLOAT_PATHS[name]:
            options.append(st.tuples(st.just(name), st.just(path), bad_real))
        for path in COUNT_PATHS[name]:
            options.append(st.tuples(st.just(name), st.just(path), bad_count))
        for path in PADDING_PATHS[name]:
            options.append(st.tuples(st.just(name), st.just(path), bad_padding))
    options.append(st.tuples(st.just("mlp"), st.just(("data", "inline", "x")), bad_matrix_1))
    options.append(st.tuples(st.just("mlp"), st.just(("data", "inline", "y")), bad_matrix_1))
    options.append(st.tuples(st.just("mlp"), st.just(("data", "inline", "x")),
                             with_bad_element(MLP["data"]["inline"]["x"])))
    options.append(st.tuples(st.just("mlp"), st.just(("data", "inline", "y")),
                             with_bad_element(MLP["data"]["inline"]["y"])))
    for name in BASES:
        options.append(st.tuples(st.just(name), st.just(("model", "input_shape")),
                                 bad_input_shape))
    return st.one_of(options)


MUTATIONS = _mutations()


@FUZZ
@given(mutation=MUTATIONS)
def test_validate_refuses_hostile_numbers(client: httpx.Client, mutation: Any) -> None:
    name, path, value = mutation
    body = replaced(check_body(BASES[name]), path, value)
    assert_refused(client, send(client, "/v1/specs/validate", body), body)


@FUZZ
@given(mutation=MUTATIONS)
def test_submit_refuses_hostile_numbers(client: httpx.Client, mutation: Any) -> None:
    name, path, value = mutation
    body = replaced(BASES[name], path, value)
    assert_refused(client, send(client, "/v1/jobs", body), body)


def _big(layers: list[dict[str, Any]], input_shape: list[int], **model: Any) -> dict[str, Any]:
    body = copy.deepcopy(MLP)
    body["model"] = {"input_shape": input_shape, "layers": layers, **model}
    return body


# Models whose parameters or activations cannot fit any machine (terabytes and more). The
# shapes check on the meta device, so the API never allocates them; they must be refused,
# never summarised as if they could run, never queued for a worker to allocate.
HUGE_MODELS = {
    "dense 1e6 x 1e6": _big([{"type": "dense", "units": 1_000_000},
                             {"type": "dense", "units": 1_000_000},
                             {"type": "dense", "units": 1}], [1]),
    "input 1e6^3 flattened": _big([{"type": "flatten"}, {"type": "dense", "units": 1}],
                                  [1_000_000, 1_000_000, 1_000_000]),
    "input 1e6^4 flattened": _big([{"type": "flatten"}, {"type": "dense", "units": 1}],
                                  [1_000_000] * 4),
    "conv2d on 1e6^3": _big([{"type": "conv2d", "filters": 65_536, "kernel_size": 1},
                             {"type": "global_avgpool"}, {"type": "dense", "units": 1}],
                            [1_000_000, 1_000_000, 1_000_000]),
    "lstm 65536 x 64 layers": _big([{"type": "lstm", "units": 65_536, "num_layers": 64},
                                    {"type": "dense", "units": 1}], [1_000_000, 1_000_000]),
    "embedding 1e7 x 65536": _big([{"type": "embedding", "num_embeddings": 10_000_000,
                                    "embedding_dim": 65_536},
                                   {"type": "sequence_pool"}, {"type": "dense", "units": 1}],
                                  [1], input_dtype="int"),
    "transformer 1e6 wide": _big([{"type": "transformer_encoder", "num_heads": 1000,
                                   "dim_feedforward": 1_000_000, "num_layers": 64},
                                  {"type": "sequence_pool"}, {"type": "dense", "units": 1}],
                                 [1_000, 1_000_000]),
    "dense units 1e9": _big([{"type": "dense", "units": 10**9}], [1]),
    "dense units 1e400": _big([{"type": "dense", "units": 10**400}], [1]),
}


@pytest.mark.parametrize("name", sorted(HUGE_MODELS))
def test_validate_refuses_models_too_big_to_run(client: httpx.Client, name: str) -> None:
    body = check_body(HUGE_MODELS[name])
    body.pop("data")
    body.pop("training")
    assert_refused(client, send(client, "/v1/specs/validate", body), body)


@pytest.mark.parametrize("name", sorted(HUGE_MODELS))
def test_submit_refuses_models_too_big_to_run(client: httpx.Client, name: str) -> None:
    body = HUGE_MODELS[name]
    assert_refused(client, send(client, "/v1/jobs", body), body)


def test_submit_refuses_a_huge_model_on_builtin_data(client: httpx.Client) -> None:
    """iris fits input_shape [4], so only the model's size can refuse this (4 TB of weights)."""
    body = _big([{"type": "dense", "units": 1_000_000}, {"type": "dense", "units": 1_000_000},
                 {"type": "dense", "units": 3}], [4])
    body["training"] = {"optimizer": "adam", "loss": "cross_entropy", "epochs": 1}
    body["data"] = {"builtin": "iris"}
    assert_refused(client, send(client, "/v1/jobs", body), body)


@pytest.mark.parametrize("levels", [50, 200, 400, 1000, 5000])
def test_deeply_nested_residual_layers_never_fail_the_server(client: httpx.Client,
                                                             levels: int) -> None:
    """Deep nesting in the spec itself: a valid summary or a 4xx, never a 5xx or a hang."""
    layer = '{"type": "dense", "units": 1}'
    for _ in range(levels):
        layer = '{"type": "residual", "layers": [' + layer + "]}"
    body = Raw('{"model": {"input_shape": [1], "layers": [' + layer + "]}}")
    response = send(client, "/v1/specs/validate", body)
    assert response.status_code < 500, f"{response.status_code} {response.text[:400]}"
    if response.status_code != 200:
        assert_refused(client, response, body)


# --- hand-written fuzz: POST /v1/jobs/{id}/predict ----------------------------------------

ROWS = [[80], [65], [70]]

bad_inputs = st.one_of(bad_matrix_1, with_bad_element(ROWS),
                       st.lists(st.just([70]), min_size=1, max_size=3).flatmap(
                           lambda rows: st.tuples(st.just(rows), bad_element).map(
                               lambda pair: [*pair[0], [pair[1]]])))


def test_predict_answers_for_good_inputs(client: httpx.Client, heights_job: str) -> None:
    response = send(client, f"/v1/jobs/{heights_job}/predict", {"inputs": ROWS})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(ROWS)


@FUZZ
@given(inputs=bad_inputs)
def test_predict_refuses_hostile_inputs(client: httpx.Client, heights_job: str,
                                        inputs: Any) -> None:
    body = {"inputs": inputs}
    assert_refused(client, send(client, f"/v1/jobs/{heights_job}/predict", body), body)


@pytest.mark.parametrize("inputs", [
    Raw("[[NaN]]"), Raw("[[Infinity]]"), Raw("[[-Infinity]]"), Raw("[[1e999]]"),
    [[10**400]], [[-(10**400)]], deep(200), deep(2000), long_rows(1_000_000),
    [["80"]], [[True]], [[None]], [], [[]],
], ids=short)
def test_predict_refuses_each_kind_of_hostile_input(client: httpx.Client, heights_job: str,
                                                    inputs: Any) -> None:
    body = {"inputs": inputs}
    assert_refused(client, send(client, f"/v1/jobs/{heights_job}/predict", body), body)


@pytest.mark.parametrize("body", [
    Raw('{"inputs": [[80]], "extra": NaN}'), Raw("NaN"), Raw("[]"), Raw('{"inputs": NaN}'),
    Raw('{"inputs": [[80]]'), Raw(""), Raw('{"inputs": "' + "9" * 100_000 + '"}'),
], ids=short)
def test_predict_refuses_hostile_bodies(client: httpx.Client, heights_job: str,
                                        body: Raw) -> None:
    assert_refused(client, send(client, f"/v1/jobs/{heights_job}/predict", body), body)


# --- schemathesis against the app's own OpenAPI schema -------------------------------------

def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx answers {"error": {"type", "message"}}."""
    if response.status_code >= 400 and "json" in response.headers.get("content-type", [""])[0]:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if not (isinstance(error, dict) and isinstance(error.get("type"), str)
                and isinstance(error.get("message"), str)):
            raise AssertionError(f"{response.status_code} without the error shape: "
                                 f"{response.text[:300]}")
    return None


# Every status is one the operation declares, with its declared media type, headers and body
# (errors: ErrorBody), and every error has the error shape.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, error_shape]


def _cancel_in_flight(stack: Stack) -> None:
    """Cancel whatever generated submissions queued (sweeps first: a running sweep would ask
    for new trials), so later tests find an idle worker, and remove generated webhooks."""
    with stack.client() as http:
        for sweep in http.get("/v1/sweeps", params={"limit": 500}).json()["sweeps"]:
            if sweep["status"] in ("queued", "running"):
                http.post(f"/v1/sweeps/{sweep['id']}/cancel")
        for status in ("queued", "running"):
            page = http.get("/v1/jobs", params={"status": status, "limit": 500}).json()
            for job in page["jobs"]:
                http.post(f"/v1/jobs/{job['id']}/cancel")
        for webhook in http.get("/v1/webhooks").json():  # generated endpoints get no events
            http.delete(f"/v1/webhooks/{webhook['id']}")


def _run_operation(stack: Stack, strategy: st.SearchStrategy[schemathesis.Case],
                   max_examples: int) -> None:
    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=stack.api_url, timeout=TIMEOUT)
        for _ in range(20):  # the rate limiter's 429s are waited out, not fuzzed
            if response.status_code != 429:
                break
            time.sleep(min(float(response.headers.get("retry-after", ["1"])[0]), 5))
            response = case.call(base_url=stack.api_url, timeout=TIMEOUT)
        if case.path in ("/v1/jobs", "/v1/sweeps") and case.method.upper() == "POST" \
                and response.status_code == 202:
            # A generated spec that happens to be valid: fine, but it need not train.
            httpx.post(f"{stack.api_url}{case.path}/{response.json()['id']}/cancel",
                       timeout=TIMEOUT)
        case.validate_response(response, checks=CHECKS)

    call()


def test_openapi_schema(stack: Stack) -> None:
    """Every operation of the app's own schema, with its examples, valid and invalid data."""
    schema = schemathesis.openapi.from_url(f"{stack.api_url}/openapi.json", timeout=TIMEOUT)
    failures: list[str] = []
    operations = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            runs = [("examples", strategy, 5)
                    for strategy in schema.get_strategies_from_examples(operation)]
            runs += [("positive", operation.as_strategy(GenerationMode.POSITIVE), 50),
                     ("negative", operation.as_strategy(GenerationMode.NEGATIVE), 50)]
            for mode, strategy, examples in runs:
                try:
                    _run_operation(stack, strategy, examples)
                except Unsatisfiable:
                    continue  # no invalid request exists (an operation without parameters)
                except Exception as error:  # collect them all, then fail once
                    failures.append(f"{operation.label} ({mode}):\n{error}")
    finally:
        _cancel_in_flight(stack)
    assert operations >= 10
    assert not failures, "\n\n".join(failures)

"""`taas.Client`: one HTTP client for every endpoint of the API (the CLI uses it too)."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from taas._sse import Event, parse
from taas.errors import ConnectionFailed, JobFailed, from_response
from taas.job import FINAL, Job, npy_bytes

DEFAULT_URL = "http://127.0.0.1:8000"
UPLOAD_TYPES = {".json": "application/json", ".csv": "text/csv", ".npz": "application/x-npz"}

Spec = Mapping[str, Any] | str | os.PathLike[str]


class Client:
    """The taas API at `url` (default: $TAAS_URL, else http://127.0.0.1:8000, where `taas up`
    serves), as the tenant of `api_key` (default: $TAAS_API_KEY; none when auth is off).

    Errors are typed (`taas.errors`): an error answer raises the `APIError` subclass of its
    `type`, an unreachable API `ConnectionFailed`.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("TAAS_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("TAAS_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                content_type: str | None = None, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """One call; the answer's JSON (None when empty), or the typed error."""
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        try:
            response = self._http.request(method, path, json=json, content=content,
                                          params=params, headers=sent)
        except httpx.TransportError as error:
            raise ConnectionFailed(self.url, _reason(error)) from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, spec: Spec, *, name: str | None = None,
               idempotency_key: str | None = None) -> Job:
        """Queue a job: `spec` is `{name?, model, training, data}` or a path to its JSON."""
        body = dict(load_spec(spec))
        if name is not None:
            body["name"] = name
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job(self, self.request("POST", "/v1/jobs", json=body, headers=headers))

    def job(self, job_id: str) -> Job:
        return Job(self, self.request("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, *, status: str | None = None, limit: int = 50) -> list[Job]:
        """The newest `limit` jobs (all pages up to it), newest first."""
        found: list[Job] = []
        cursor = None
        while len(found) < limit:
            params = {"limit": min(limit - len(found), 500), "status": status, "cursor": cursor}
            page = self.request("GET", "/v1/jobs",
                                params={k: v for k, v in params.items() if v is not None})
            found += [Job(self, item) for item in page["jobs"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return found

    def validate(self, spec: Spec) -> dict[str, Any]:
        """The dry run (POST /v1/specs/validate): the model's summary, or InvalidSpec."""
        body = {k: v for k, v in load_spec(spec).items() if k in ("model", "training", "data")}
        result: dict[str, Any] = self.request("POST", "/v1/specs/validate", json=body)
        return result

    def events(self, job_id: str, *, last_event_id: int | None = None,
               reconnects: int = 5) -> Iterator[Event]:
        """The job's live events until its final status, from the start or after
        `last_event_id`. A dropped connection is resumed with Last-Event-ID (nothing missed,
        nothing repeated); ConnectionFailed after `reconnects` failures in a row."""
        last, failures = last_event_id, 0
        while True:
            try:
                for event in self._stream(job_id, last):
                    failures, last = 0, event.id
                    yield event
                    if event.type == "status" and event.data.get("status") in FINAL:
                        return
            except (httpx.TransportError, httpx.StreamError) as error:
                failures += 1
                if failures > reconnects:
                    raise ConnectionFailed(self.url, _reason(error)) from None
                time.sleep(min(0.25 * 2**failures, 5.0))
                continue
            # The server closed the stream before a final status (its stream time limit) or
            # the job had ended before its events were kept: ask the job itself.
            if self.request("GET", f"/v1/jobs/{job_id}")["status"] in FINAL:
                return

    def _stream(self, job_id: str, last: int | None) -> Iterator[Event]:
        headers = {"Last-Event-ID": str(last)} if last is not None else {}
        timeout = httpx.Timeout(self.timeout, read=60.0)  # the server pings every 15 s
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                               timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise _error(response)
            yield from parse(response.iter_lines())

    def fit(self, *, model: Mapping[str, Any], training: Mapping[str, Any],
            x: Any = None, y: Any = None, data: Mapping[str, Any] | None = None,
            name: str | None = None, progress: bool = True) -> Job:
        """Keras' `fit` as a service: train `model` on `x`, `y` (numpy arrays, uploaded as a
        dataset) or on `data` (a spec's data section), wait with a live bar, and return the
        finished job. Raises JobFailed if it did not succeed."""
        if (x is None) != (y is None) or (x is None) == (data is None):
            raise ValueError("give x and y, or data")
        if data is None:
            data = {"dataset_id": self.upload_dataset(x, y)["id"]}
        spec: dict[str, Any] = {"model": dict(model), "training": dict(training),
                                "data": dict(data)}
        if name is not None:
            spec["name"] = name
        job = self.submit(spec).wait(progress=progress)
        if job.status != "succeeded":
            raise JobFailed(job)
        return job

    # --- datasets ------------------------------------------------------------------------

    def upload_dataset(self, x: Any, y: Any) -> dict[str, Any]:
        """Upload numpy arrays (sent as an .npz): `{id, n, x_shape, y_shape, ...}`."""
        buffer = io.BytesIO()
        np.savez(buffer, x=np.asarray(x), y=np.asarray(y))
        result: dict[str, Any] = self.request("POST", "/v1/datasets", content=buffer.getvalue(),
                                              content_type="application/x-npz")
        return result

    def upload_dataset_file(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Upload a .json ({x, y}), .csv (a `target` column) or .npz (x, y) file."""
        suffix = Path(path).suffix.lower()
        if suffix not in UPLOAD_TYPES:
            raise ValueError(f"{path}: a dataset file is .json, .csv or .npz, not {suffix!r}")
        result: dict[str, Any] = self.request("POST", "/v1/datasets",
                                              content=Path(path).read_bytes(),
                                              content_type=UPLOAD_TYPES[suffix])
        return result

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/datasets/{dataset_id}")
        return result

    # --- models by name (v1.1) -----------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """The tenant's registered models: `[{name, latest_version, aliases}]`."""
        result = self.request("GET", "/v1/models")
        return list(result["models"] if isinstance(result, dict) else result)

    def model(self, name: str) -> dict[str, Any]:
        """`{name, versions [{version, job_id, created_at, metrics}], aliases}`."""
        result: dict[str, Any] = self.request("GET", f"/v1/models/{name}")
        return result

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", f"/v1/models/{name}/aliases/{alias}",
                                              json={"version": version})
        return result

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", f"/v1/models/{name}/aliases/{alias}")

    def predict_model(self, name: str, x: Any, *, version: int | None = None,
                      alias: str | None = None) -> np.ndarray:
        """Predictions of a registered model: its latest version, or `version`, or `alias`."""
        path = f"/v1/models/{name}"
        if version is not None:
            path += f"/versions/{version}"
        elif alias is not None:
            path += f"/aliases/{alias}"
        answer = self.request("POST", f"{path}/predict", content=npy_bytes(x),
                              content_type="application/x-npy")
        return np.asarray(answer["predictions"])

    # --- sweeps (v1.1) -------------------------------------------------------------------

    def submit_sweep(self, sweep: Spec) -> dict[str, Any]:
        """`{name?, base, parameters, objective, sampler?, pruner?, max_trials, max_parallel}`."""
        result: dict[str, Any] = self.request("POST", "/v1/sweeps", json=dict(load_spec(sweep)))
        return result

    def sweeps(self, *, limit: int = 50) -> list[dict[str, Any]]:
        result = self.request("GET", "/v1/sweeps", params={"limit": limit})
        return list(result["sweeps"] if isinstance(result, dict) else result)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/sweeps/{sweep_id}")
        return result

    def sweep_trials(self, sweep_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/v1/sweeps/{sweep_id}/trials"))

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/sweeps/{sweep_id}/cancel")
        return result

    def promote_sweep(self, sweep_id: str, alias: str = "champion") -> dict[str, Any]:
        """Point the model alias `alias` at the sweep's best trial's version:
        `{model, version, alias, trial, job_id}`."""
        result: dict[str, Any] = self.request("POST", f"/v1/sweeps/{sweep_id}/promote",
                                              json={"alias": alias})
        return result

    # --- webhooks (v1.1) -----------------------------------------------------------------

    def create_webhook(self, url: str, *, events: Sequence[str] | None = None
                       ) -> dict[str, Any]:
        """Deliveries to `url` of `events` (default: all of `job.succeeded`, `job.failed`,
        `job.cancelled`, `sweep.finished`): `{id, url, events, created_at, secret}`. The
        `whsec_...` secret verifies their signatures and is shown only here, once."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        result: dict[str, Any] = self.request("POST", "/v1/webhooks", json=body)
        return result

    def webhooks(self) -> list[dict[str, Any]]:
        """The tenant's endpoints (without their secrets)."""
        return list(self.request("GET", "/v1/webhooks"))

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", f"/v1/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The endpoint's latest deliveries, newest first: `[{id, type, status, attempts,
        last_error, created_at, delivered_at}]`."""
        return list(self.request("GET", f"/v1/webhooks/{webhook_id}/deliveries",
                                 params={"limit": limit}))


def load_spec(spec: Spec) -> Mapping[str, Any]:
    """A spec given as a mapping, or the path of its JSON file."""
    if isinstance(spec, Mapping):
        return spec
    loaded = json.loads(Path(spec).read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{spec}: a spec is a JSON object, not {type(loaded).__name__}")
    return loaded


def _error(response: httpx.Response) -> Exception:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return from_response(response.status_code, body,
                         {k.lower(): v for k, v in response.headers.items()})


def _reason(error: httpx.TransportError | httpx.StreamError) -> str:
    if isinstance(error, httpx.ConnectError):
        return "connection refused" if "refused" in str(error).lower() else \
            f"cannot connect: {error}"
    if isinstance(error, httpx.TimeoutException):
        return f"timed out ({type(error).__name__})"
    return f"{type(error).__name__}: {error}"

"""`taas.Job`: a submitted job, kept up to date from the API and its live events."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from taas._sse import Event

if TYPE_CHECKING:
    from taas.client import Client

FINAL = frozenset({"succeeded", "failed", "cancelled", "pruned"})
NPY_TYPE = "application/x-npy"


def npy_bytes(x: Any) -> bytes:
    """An array as a .npy file (what predict takes without parsing text)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(x), allow_pickle=False)
    return buffer.getvalue()


class Job:
    """A job as `GET /v1/jobs/{id}` last showed it (`data`), with its actions.

    `status` is queued, running, succeeded, failed, cancelled (or pruned, a sweep's trial);
    `wait()` follows the live events until it is final.
    """

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data

    def __repr__(self) -> str:
        progress = self.progress
        return (f"Job(id={self.id!r}, name={self.name!r}, status={self.status!r}, "
                f"epoch={progress.get('epoch')}/{progress.get('epochs')})")

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def name(self) -> str:
        return str(self.data.get("name", ""))

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def done(self) -> bool:
        return self.status in FINAL

    @property
    def progress(self) -> dict[str, Any]:
        """`{epoch, epochs}`: the last recorded epoch and the planned number."""
        return dict(self.data.get("progress") or {})

    @property
    def metrics(self) -> dict[str, Any]:
        """The latest epoch's values (loss, val_loss?, the chosen metrics)."""
        return dict(self.data.get("metrics") or {})

    @property
    def error(self) -> dict[str, Any] | None:
        """`{type, message}` for a failed or cancelled job, else None."""
        error = self.data.get("error")
        return dict(error) if error else None

    @property
    def mlflow_url(self) -> str | None:
        url = self.data.get("mlflow_url")
        return str(url) if url else None

    def refresh(self) -> Job:
        self.data = self.client.request("GET", f"/v1/jobs/{self.id}")
        return self

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every recorded epoch: `[{epoch, loss, val_loss?, <metric>...}]` (a fresh read)."""
        return list(self.client.request("GET", f"/v1/jobs/{self.id}/metrics"))

    def events(self, *, last_event_id: int | None = None) -> Iterator[Event]:
        """The live events (`taas.Event`) until the final status; each status event also
        updates this job."""
        for event in self.client.events(self.id, last_event_id=last_event_id):
            if event.type == "status":
                self.data = event.data
            yield event

    def wait(self, *, progress: bool = True,
             on_event: Callable[[Event], None] | None = None) -> Job:
        """Block until the job is final, following its live events; with `progress`, a live
        bar by epoch with the loss and metrics (a spinner while queued). Ctrl-C stops
        waiting, not the job. `on_event(event)` is called for each event."""
        if progress:
            from taas.progress import JobProgress

            with JobProgress() as bar:
                bar.update(self.data)

                def show(event: Event) -> None:
                    bar.event(event, self.data)
                    if on_event is not None:
                        on_event(event)
                return self._follow(show)
        return self._follow(on_event)

    def _follow(self, on_event: Callable[[Event], None] | None) -> Job:
        if self.done:
            return self
        for event in self.events():
            if on_event is not None:
                on_event(event)
        return self

    def cancel(self) -> Job:
        """queued: cancelled at once; running: at the next batch; a final job: Conflict."""
        self.data = self.client.request("POST", f"/v1/jobs/{self.id}/cancel")
        return self

    def predict(self, x: Any) -> np.ndarray:
        """The trained model's predictions for `x` shaped [N, *input_shape] (sent as .npy)."""
        return np.asarray(self.predict_raw(x)["predictions"])

    def predict_raw(self, x: Any) -> dict[str, Any]:
        """The API's answer: `{predictions, labels?}`."""
        answer: dict[str, Any] = self.client.request(
            "POST", f"/v1/jobs/{self.id}/predict", content=npy_bytes(x), content_type=NPY_TYPE)
        return answer

    def evaluate(self, x: Any = None, y: Any = None, *,
                 dataset_id: str | None = None) -> dict[str, Any]:
        """Keras' `evaluate`: `{loss, <metric>..., samples}` on `x`, `y` or a dataset."""
        body: dict[str, Any] = {"dataset_id": dataset_id} if dataset_id is not None else {
            "x": np.asarray(x).tolist(), "y": np.asarray(y).tolist()}
        answer: dict[str, Any] = self.client.request("POST", f"/v1/jobs/{self.id}/evaluate",
                                                     json=body)
        return answer


__all__ = ["FINAL", "Event", "Job", "npy_bytes"]

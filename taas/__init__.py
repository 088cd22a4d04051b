"""taas: the Python client of the taas training service.

    import taas
    client = taas.Client()                # $TAAS_URL (default http://127.0.0.1:8000), $TAAS_API_KEY
    job = client.submit("heights.json")   # or a dict {name?, model, training, data}
    job.wait()                            # a live bar by epoch; Ctrl-C stops waiting, not the job
    job.predict(numpy_array)              # the trained model's predictions

Depends only on httpx, numpy and rich (never on torch or the server). Names are imported on
first use, so `import taas` (and `taas --help`) costs almost nothing.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taas import errors
    from taas._sse import Event
    from taas.client import Client
    from taas.errors import APIError, ConnectionFailed, JobFailed, TaasError
    from taas.job import Job

__all__ = ["APIError", "Client", "ConnectionFailed", "Event", "Job", "JobFailed", "TaasError",
           "errors"]

_WHERE = {"Client": "taas.client", "Job": "taas.job", "Event": "taas._sse",
          "APIError": "taas.errors", "ConnectionFailed": "taas.errors",
          "JobFailed": "taas.errors", "TaasError": "taas.errors"}


def __getattr__(name: str) -> Any:
    if name == "errors":
        return import_module("taas.errors")
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'taas' has no attribute {name!r}")

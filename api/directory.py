"""Which job answers for a model name, version or alias: an in-process directory.

Predicting by name must cost no more than by job id, so the name -> job lookup is a dict read.
A thread polls the registry's generation (one single-row query) every
TAAS_MODEL_POLL_SECONDS and reloads the directory only when it moved: an alias change takes
effect on every API process within that time. A request is resolved once, so it is answered
wholly by the version its alias named when it arrived.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

from api.db import read
from api.errors import NotFound
from api.services import models
from api.services.models import Directory

log = logging.getLogger("taas.directory")

Ref = int | str | None  # a version number, an alias, or None: the latest version


class ModelDirectory:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._generation = -1
        self._entries: Directory = {}
        self._lock = threading.Lock()  # one reload at a time
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        return self._generation >= 0

    def refresh(self) -> None:
        """Reload if the registry changed since the last load (a query of one row if not)."""
        with self._lock:
            current = read(models.generation)
            if current != self._generation:
                # Swapped whole: readers see the old directory or the new one, never a mix.
                self._generation, self._entries = read(models.load_directory)

    def lookup(self, tenant: str, name: str, ref: Ref) -> tuple[str, int] | None:
        """(job id, version) from memory; None when this process does not know (yet)."""
        entry = self._entries.get((tenant, name))
        if entry is None:
            return None
        version = entry.aliases.get(ref) if isinstance(ref, str) \
            else entry.latest if ref is None else ref  # version 0 is no version, not the latest
        job_id = entry.versions.get(version) if version is not None else None
        return None if job_id is None or version is None else (job_id, version)

    def resolve(self, tenant: str, name: str, ref: Ref) -> tuple[str, int]:
        """`lookup`, after a reload when memory does not know (a version registered a moment
        ago); 404 naming what is missing. Blocking: call it from a thread."""
        found = self.lookup(tenant, name, ref)
        if found is None:
            self.refresh()
            found = self.lookup(tenant, name, ref)
        if found is not None:
            return found
        if (tenant, name) not in self._entries:
            raise NotFound(f"no model named {name!r}")
        what = f"alias {ref!r}" if isinstance(ref, str) else f"version {ref}"
        raise NotFound(f"model {name!r} has no {what}")

    def versions(self, tenant: str, name: str) -> list[int]:
        entry = self._entries.get((tenant, name))
        return sorted(entry.versions) if entry is not None else []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="taas-directory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _poll(self) -> None:
        while True:
            try:
                self.refresh()
            except SQLAlchemyError as error:  # the database is away: keep the last directory
                log.warning("model directory not refreshed: %s", error)
            if self._stopped.wait(self.interval):
                return

"""Models by name: versions (one per succeeded job of that name) and aliases, per tenant.

The database is the source of truth. A version is registered in the same transaction that
marks its job succeeded (api.lifecycle). An alias change is committed here with a pending
MLflow sync, which the worker's reaper carries out (worker.reaper.sync_aliases): when MLflow is
down the alias already works for predictions, and MLflow's registry catches up when it is back,
with no half state in between (`mlflow_synced` says which). Every change bumps one generation
counter that API processes poll to refresh their in-memory name -> job directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from api.errors import InvalidInput, NotFound
from api.models import Job, ModelAlias, ModelRegistryState, ModelVersion, utcnow

# MLflow's own rules for aliases, plus: never a number (V2 URLs take a version or an alias).
ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,199}")
RESERVED = re.compile(r"latest|v\d+", re.IGNORECASE)


def register_version(session: Session, *, job_id: str) -> int:
    """The succeeded job becomes the next version of its (tenant, name); in the caller's
    transaction. Numbers are taken under a per-name lock, so concurrent successes never clash."""
    job = session.execute(select(Job.tenant, Job.name).where(Job.id == job_id)).one()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                        {"key": f"model:{job.tenant}/{job.name}"})
    # (SQLite: the job's UPDATE already holds the database's one write lock.)
    latest = session.scalar(select(func.max(ModelVersion.version)).where(
        ModelVersion.tenant == job.tenant, ModelVersion.name == job.name)) or 0
    session.add(ModelVersion(job_id=job_id, tenant=job.tenant, name=job.name,
                             version=latest + 1))
    _bump(session)
    return latest + 1


def _bump(session: Session) -> None:
    session.execute(update(ModelRegistryState).where(ModelRegistryState.id == 1)
                    .values(generation=ModelRegistryState.generation + 1))


def list_models(session: Session, *, tenant: str) -> list[dict[str, Any]]:
    latest = session.execute(
        select(ModelVersion.name, func.max(ModelVersion.version))
        .where(ModelVersion.tenant == tenant).group_by(ModelVersion.name)
        .order_by(ModelVersion.name)).all()
    aliases = _aliases(session, tenant=tenant)
    return [{"name": name, "latest_version": version, "aliases": aliases.get(name, {})}
            for name, version in latest]


def get_model(session: Session, *, tenant: str, name: str) -> dict[str, Any]:
    rows = session.execute(
        select(ModelVersion.version, ModelVersion.job_id, ModelVersion.created_at, Job.metrics)
        .join(Job, Job.id == ModelVersion.job_id)
        .where(ModelVersion.tenant == tenant, ModelVersion.name == name)
        .order_by(ModelVersion.version)).all()
    if not rows:
        raise NotFound(f"no model named {name!r}")
    pending = session.scalar(select(func.count()).select_from(ModelAlias).where(
        ModelAlias.tenant == tenant, ModelAlias.name == name, ModelAlias.mlflow_pending))
    return {"name": name,
            "versions": [{"version": v, "job_id": j, "created_at": c, "metrics": m or {}}
                         for v, j, c, m in rows],
            "aliases": _aliases(session, tenant=tenant, name=name).get(name, {}),
            "mlflow_synced": not pending}


def _aliases(session: Session, *, tenant: str,
             name: str | None = None) -> dict[str, dict[str, int]]:
    query = select(ModelAlias.name, ModelAlias.alias, ModelAlias.version).where(
        ModelAlias.tenant == tenant, ModelAlias.version.is_not(None))
    if name is not None:
        query = query.where(ModelAlias.name == name)
    found: dict[str, dict[str, int]] = {}
    for model, alias, version in session.execute(query.order_by(ModelAlias.alias)):
        if version is not None:
            found.setdefault(model, {})[alias] = version
    return found


def check_alias(alias: str) -> None:
    if not ALIAS.fullmatch(alias) or RESERVED.fullmatch(alias):
        raise InvalidInput(f"alias {alias!r}: letters, digits, _ and -, starting with a letter "
                           "or _, at most 200 characters, and not `latest` or `v<number>`",
                           loc=["path", "alias"])


def set_alias(session: Session, *, tenant: str, name: str, alias: str, version: int) -> None:
    """Point `alias` of the tenant's model `name` at `version` (404 if either is unknown) and
    commit; MLflow's registry follows (see the module docstring)."""
    check_alias(alias)
    exists = session.scalar(select(ModelVersion.job_id).where(
        ModelVersion.tenant == tenant, ModelVersion.name == name,
        ModelVersion.version == version))
    if exists is None:
        _raise_missing(session, tenant=tenant, name=name, version=version)
    session.merge(ModelAlias(tenant=tenant, name=name, alias=alias, version=version,
                             mlflow_pending=True, updated_at=utcnow()))
    _bump(session)
    session.commit()


def delete_alias(session: Session, *, tenant: str, name: str, alias: str) -> None:
    """Remove the alias (404 if not set); kept as a tombstone until MLflow has been told."""
    found = session.get(ModelAlias, (tenant, name, alias))
    if found is None or found.version is None:
        raise NotFound(f"model {name!r} has no alias {alias!r}")
    found.version, found.mlflow_pending, found.updated_at = None, True, utcnow()
    _bump(session)
    session.commit()


def _raise_missing(session: Session, *, tenant: str, name: str, version: int) -> None:
    known = session.scalar(select(func.count()).select_from(ModelVersion).where(
        ModelVersion.tenant == tenant, ModelVersion.name == name))
    if not known:
        raise NotFound(f"no model named {name!r}")
    raise NotFound(f"model {name!r} has no version {version}")


@dataclass(frozen=True)
class Entry:
    """A model's versions (number -> job id) and aliases (alias -> number)."""

    versions: dict[int, str] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        return max(self.versions)


Directory = dict[tuple[str, str], Entry]  # (tenant, name) -> entry


def generation(session: Session) -> int:
    return int(session.scalar(select(ModelRegistryState.generation)
                              .where(ModelRegistryState.id == 1)) or 0)


def load_directory(session: Session) -> tuple[int, Directory]:
    """Every model's versions and aliases, with the generation they are as of (one snapshot)."""
    current = generation(session)
    found: Directory = {}
    for tenant, name, version, job_id in session.execute(select(
            ModelVersion.tenant, ModelVersion.name, ModelVersion.version, ModelVersion.job_id)):
        found.setdefault((tenant, name), Entry()).versions[version] = job_id
    for tenant, name, alias, pointed in session.execute(select(
            ModelAlias.tenant, ModelAlias.name, ModelAlias.alias, ModelAlias.version)
            .where(ModelAlias.version.is_not(None))):
        if (tenant, name) in found and pointed is not None:
            found[(tenant, name)].aliases[alias] = pointed
    return current, found


def pending_aliases(session: Session) -> list[tuple[str, str, str, int | None, Any]]:
    """(tenant, name, alias, version or None for a delete, updated_at) still to tell MLflow."""
    return [tuple(row) for row in session.execute(select(  # type: ignore[misc]
        ModelAlias.tenant, ModelAlias.name, ModelAlias.alias, ModelAlias.version,
        ModelAlias.updated_at).where(ModelAlias.mlflow_pending))]


def alias_synced(session: Session, *, tenant: str, name: str, alias: str,
                 updated_at: Any) -> None:
    """MLflow now matches this alias as of `updated_at` (a newer change stays pending)."""
    match = (ModelAlias.tenant == tenant, ModelAlias.name == name, ModelAlias.alias == alias,
             ModelAlias.updated_at == updated_at)
    session.execute(delete(ModelAlias).where(*match, ModelAlias.version.is_(None)))
    session.execute(update(ModelAlias).where(*match).values(mlflow_pending=False))


def job_of_version(session: Session, *, tenant: str, name: str, version: int) -> str | None:
    return session.scalar(select(ModelVersion.job_id).where(
        ModelVersion.tenant == tenant, ModelVersion.name == name,
        ModelVersion.version == version))


def version_of_job(session: Session, *, job_id: str) -> tuple[str, int] | None:
    """(model name, version) a succeeded job registered, e.g. to promote a sweep's best trial
    with `set_alias`; None for a job that did not succeed."""
    found = session.execute(select(ModelVersion.name, ModelVersion.version)
                            .where(ModelVersion.job_id == job_id)).one_or_none()
    return None if found is None else (found[0], found[1])

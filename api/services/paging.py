"""Newest-first keyset paging, shared by every list (jobs, sweeps): the cursor is the
(created_at, id) of the last row of the previous page, so a page never skips or repeats a row
while new ones are created."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from api.errors import InvalidInput

T = TypeVar("T")


def newest_first(session: Session, query: Select[T], entity: Any, *, limit: int,
                 cursor: str | None) -> tuple[list[T], str | None]:
    """One page of `query` over `entity` (a model with created_at and id); the next cursor, or
    None on the last page."""
    if cursor is not None:
        created, last_id = _decode(cursor)
        query = query.where(or_(entity.created_at < created,
                                and_(entity.created_at == created, entity.id < last_id)))
    rows = list(session.scalars(query.order_by(entity.created_at.desc(), entity.id.desc())
                                .limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, _encode(rows[-1]) if more else None


def _encode(row: Any) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("malformed cursor", ["cursor"]) from None

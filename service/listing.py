"""The staff's lists (reports, audits, challenges): one set of filters and one cursor pagination.

A page is ordered by (timestamp, id) — the id breaks ties between rows of the same microsecond — and
the next page starts strictly after the last row of this one. Unlike an offset, a cursor neither
repeats nor skips a row when new rows arrive between two pages. The cursor is opaque to clients:
base64url of the JSON `[timestamp, id]` of that last row. `total` counts every row that matches the
filters (all pages), so a client can show "41–60 of 1,234".
"""

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.models import Report

MAX_PAGE = 500
DEFAULT_PAGE = 100

Item = TypeVar("Item")


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the (timestamp, id) of its last row."""

    at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps([self.at.isoformat(), str(self.id)], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        """The cursor that `encode` wrote; ValueError for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            at, row_id = json.loads(raw)
            return cls(as_utc(datetime.fromisoformat(at)), uuid.UUID(row_id))
        except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError):
            raise ValueError("not a cursor of this list (use next_cursor as returned)") from None


def as_utc(value: datetime) -> datetime:
    """A datetime without a zone is read as UTC (the store holds UTC; a date is midnight UTC);
    ValueError for one whose UTC instant falls outside the calendar (9999-12-31T23:00-05:00)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant in UTC falls outside the years 1 to 9999") from None


@dataclass(frozen=True)
class Filters:
    """What every list filters on; None is "any". `since` is inclusive, `until` exclusive, both instants in
    UTC (the boundary reads them with `as_utc`, where a bad one is the caller's error)."""

    provider_id: uuid.UUID | None = None
    model: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self, timestamp: InstrumentedAttribute[datetime]) -> list[ColumnElement[bool]]:
        """The filters as WHERE conditions on `reports` (which every list joins) and on the list's own
        `timestamp` column."""
        conditions: list[ColumnElement[bool]] = []
        if self.provider_id is not None:
            conditions.append(Report.provider_id == self.provider_id)
        if self.model is not None:
            conditions.append(Report.model == self.model)
        if self.request_id is not None:
            conditions.append(Report.request_id == self.request_id)
        if self.since is not None:
            conditions.append(timestamp >= self.since)
        if self.until is not None:
            conditions.append(timestamp < self.until)
        return conditions


@dataclass(frozen=True)
class PageRequest:
    cursor: Cursor | None = None
    limit: int = DEFAULT_PAGE


@dataclass(frozen=True)
class Page(Generic[Item]):
    items: list[Item]
    total: int
    next_cursor: Cursor | None  # None on the last page


@dataclass(frozen=True)
class Ordering(Generic[Item]):
    """A list's order: by `timestamp` then `id`, newest first unless `ascending`; `key` reads the
    cursor of a row."""

    timestamp: InstrumentedAttribute[datetime]
    id: InstrumentedAttribute[uuid.UUID]
    key: Callable[[Item], Cursor]
    ascending: bool = False


def paginate(session: Session, query: Select[Any], ordering: Ordering[Item], page: PageRequest) -> Page[Item]:
    """One page of the entities `query` selects (filters applied, no order), and the total."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    columns = (ordering.timestamp, ordering.id)
    if page.cursor is not None:
        position = tuple_(*columns)
        after = (page.cursor.at, page.cursor.id)
        query = query.where(position > after if ordering.ascending else position < after)
    order = [c.asc() if ordering.ascending else c.desc() for c in columns]
    # One row more than asked: whether there is a next page, without a second query.
    rows: list[Item] = list(session.scalars(query.order_by(*order).limit(page.limit + 1)))
    items = rows[: page.limit]
    has_more = len(rows) > page.limit
    return Page(items, int(total), ordering.key(items[-1]) if has_more else None)

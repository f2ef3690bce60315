"""What every resource's schemas share."""

from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.validation import check_storable
from service import listing


class StrictModel(BaseModel):
    """Strict JSON types (no "5" for 5) and no unknown fields: a valid request validates to itself."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StorableBody(BaseModel):
    """A request body that the store keeps: only text it can hold, anywhere in the body (`check_storable`:
    one walk over the raw JSON, before any field is read)."""

    @model_validator(mode="before")
    @classmethod
    def storable(cls, data: Any) -> Any:
        return check_storable(data)


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """One page of a list (cursor pagination: ordered by (timestamp, id), opaque `next_cursor`)."""

    items: list[Item]
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same filters) for the next page; null on the last page"
    )
    total: int = Field(description="rows that match the filters, all pages together")

    @classmethod
    def of(cls, page: listing.Page[Any], item: Callable[[Any], Item]) -> Self:
        cursor = page.next_cursor
        return cls(
            items=[item(row) for row in page.items],
            next_cursor=cursor.encode() if cursor is not None else None,
            total=page.total,
        )

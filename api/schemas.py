"""What every resource's schemas share."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Strict JSON types (no "5" for 5) and no unknown fields: a valid request validates to itself."""

    model_config = ConfigDict(extra="forbid", strict=True)

"""Response classes of the API."""

from typing import Any

from fastapi.responses import JSONResponse

from service.jsonio import dumps


class FastJSONResponse(JSONResponse):
    """orjson for large responses (a batch of a thousand receipts); see `service.jsonio`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)

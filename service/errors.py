"""Errors the service raises on purpose, each mapped to one HTTP status by `api/app.py`."""

from auditor.protocol.errors import ProtocolError


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Gone(ServiceError):
    status_code = 410


class QuotaExceeded(ServiceError):
    status_code = 429


__all__ = ["Conflict", "Gone", "NotFound", "ProtocolError", "QuotaExceeded", "ServiceError"]

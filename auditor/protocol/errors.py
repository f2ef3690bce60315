"""Typed errors of the protocol library.

Every rejection of bad input is a `ProtocolError` subclass with a message that names the field, so the
CLI can print it and the API can map it to a 400 without guessing. Nothing here ever "passes silently".
"""


class ProtocolError(ValueError):
    """Input that violates DESIGN §3 (malformed encoding, wrong length, out-of-range index, ...)."""


class EncodingError(ProtocolError):
    """A hex or base64 field that does not decode, or decodes to the wrong length."""


class ProofError(ProtocolError):
    """An inclusion or consistency proof whose shape does not fit its (index, size) or (m, n)."""


class ChallengeError(ProtocolError):
    """A challenge request that cannot be answered (index outside the committed tree, empty trace, ...)."""


class ModelError(RuntimeError):
    """The embedding model or a trained head is missing, or is not the one a commitment names."""

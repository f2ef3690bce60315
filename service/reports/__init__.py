"""Report intake: validation against the protocol, idempotent storage, signed receipts."""

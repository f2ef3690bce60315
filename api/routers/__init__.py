"""One router per resource; each module holds its request and response schemas beside its endpoints."""

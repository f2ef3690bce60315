"""ASGI entry point: `uvicorn api.main:app` (settings from the COIN_ environment)."""

from api.app import create_app

app = create_app()

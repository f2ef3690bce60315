"""schemathesis over the live OpenAPI of the running API, as the admin and as a provider: no server error
and no status code the document does not list, with every check but `positive_data_acceptance`.

That one is left out because the API rightly refuses some schema-valid requests for reasons JSON Schema
cannot express: a commitment must name the auditor's own embedding model (400), text must not hold NUL
characters and integers must survive canonical JSON (422), a list cursor must be one the list issued.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.integration.resilience.support import ApiServer, Figures, new_provider
from tests.integration.support import ADMIN

EXAMPLES = os.environ.get("COIN_SCHEMATHESIS_EXAMPLES", "10")
# ST101 server error, ST102 server error on an undeclared Content-Type, ST103 undocumented status code.
REQUIRED_CLEAN = {"ST101", "ST102", "ST103"}


def _run(base_url: str, token: str, report: Path) -> dict[str, Any]:
    command = [
        str(Path(sys.executable).with_name("st")), "run", f"{base_url}/openapi.json",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "-H", f"Authorization: Bearer {token}", "--max-examples", EXAMPLES, "--workers", "1",
        "--seed", "15", "--generation-database", "none", "--no-color", "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    # In the report's folder: schemathesis keeps a cache of what it found in its working directory.
    subprocess.run(command, check=False, capture_output=True, timeout=900, cwd=report.parent)
    return dict(json.loads(report.read_text()))


def test_schemathesis_finds_no_server_error_and_no_undocumented_status(
    api: ApiServer, http: httpx.Client, figures: Figures, tmp_path: Path
) -> None:
    provider = new_provider(http)
    results = {}
    for role, token in (
        ("admin", ADMIN["Authorization"].removeprefix("Bearer ")),
        ("provider", provider.key),
    ):
        results[role] = _run(api.base_url, token, tmp_path / f"{role}.json")
    failures = {
        role: {f["code"]: f["operations"] for f in result["failures"]} for role, result in results.items()
    }
    figures.schemathesis = {
        "test_cases": sum(r["test_cases"]["generated"] for r in results.values()),
        "server_errors": sum(
            f["count"] for r in results.values() for f in r["failures"] if f["code"] in {"ST101", "ST102"}
        ),
        "undocumented_status": sum(
            f["count"] for r in results.values() for f in r["failures"] if f["code"] == "ST103"
        ),
        "other_failures": {
            role: {c: ops for c, ops in f.items() if c not in REQUIRED_CLEAN} for role, f in failures.items()
        },
        "errors": {role: r["errors"] for role, r in results.items() if r["errors"]},
    }
    for role, found in failures.items():
        assert not REQUIRED_CLEAN & found.keys(), (role, found)
        assert not results[role]["errors"], (role, results[role]["errors"])

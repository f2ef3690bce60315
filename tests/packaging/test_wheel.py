"""The built wheel installs into a fresh virtualenv and works outside the checkout.

The wheel is built from a copy of the checkout's files (what `git ls-files` lists, committed or not,
less what .gitignore ignores), never in the checkout itself: setuptools keeps `build/lib` between
builds, so an in-tree build would ship modules since deleted and would write into a tree that others
are editing. The fresh virtualenv borrows the dependencies of this one through a `.pth` line naming
its site-packages (a path line only appends to sys.path: the `.pth` files of that folder, among them
the editable install's finder for the checkout, are not processed), so nothing is downloaded or copied
and the project itself can only come from the wheel. Every command then runs from a temporary folder
with PYTHONPATH unset, so the checkout is not on the path.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, read_traces

SECRET = "ab" * 32
TRACE_FILE = "thinkingllms_math_r1distill_qwq.jsonl"
PACKAGES = ("api", "service", "auditor", "migrations", "workers")
WHEEL_MUST_HOLD = (
    "migrations/env.py",
    "migrations/versions/0001_initial_schema.py",
    "migrations/script.py.mako",
    "auditor/semantic/weights/heads.pt",
    "auditor/py.typed",
    "service/monitoring/shipped_calibration.json",
    "service/migrate.py",
    "api/main.py",
    "workers/app.py",
)
PROTOCOL_COMMANDS = ("commit", "respond", "verify-openings")
SERVICE_COMMANDS = ("migrate", "api", "worker", "beat", "demo", "verify-chain", "policy", "calibrate")


def _run(args: Sequence[str | Path], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.args!r} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _source_files() -> list[str]:
    """The checkout's files a clone would have: tracked and untracked, less the ignored."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("git is needed to list the checkout's files")
    listed = _run(
        ["git", "-C", REPO_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout=60
    )
    assert listed.returncode == 0, _explain(listed)
    # --cached still lists a tracked file deleted in the working tree
    return [name for name in listed.stdout.split("\0") if name and (REPO_ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-w", out],
        cwd=source, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, _explain(built)
    wheels = sorted(out.glob("coin_audit-*.whl"))
    assert len(wheels) == 1, f"expected one coin_audit wheel in {out}, found {sorted(out.iterdir())}"
    return wheels[0]


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel installed and this venv's site-packages appended to its path."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    made = _run([sys.executable, "-m", "venv", venv], timeout=120)
    assert made.returncode == 0, _explain(made)
    python = venv / "bin" / "python"
    # Install before the .pth exists: pip then sees no coin-audit installed (the editable one of this
    # venv would otherwise look installed to it) and can never touch this venv.
    installed = _run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", wheel],
        timeout=300,
        env=_child_env(),
        cwd=venv.parent,
    )
    assert installed.returncode == 0, _explain(installed)
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=60)
    assert site.returncode == 0, _explain(site)
    dev_site = sysconfig.get_paths()["purelib"]
    (Path(site.stdout.strip()) / "_coin_dev_dependencies.pth").write_text(dev_site + "\n", encoding="utf-8")
    return venv


def _child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COIN_")) and k != "VIRTUAL_ENV"
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of every command: a temporary folder, not the checkout."""
    path = tmp_path_factory.mktemp("outside")
    assert REPO_ROOT not in path.resolve().parents
    return path


@pytest.fixture(scope="module")
def env(outside: Path) -> dict[str, str]:
    return _child_env(COIN_DATABASE_URL=f"sqlite:///{outside / 'fresh.sqlite3'}")


def _coin(
    fresh: Path, outside: Path, env: dict[str, str], *args: str | Path
) -> subprocess.CompletedProcess[str]:
    return _run([fresh / "bin" / "coin", *args], timeout=180, cwd=outside, env=env)


def test_the_wheel_holds_the_package_data_and_no_tests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in WHEEL_MUST_HOLD if name not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    assert not [n for n in names if n.startswith("tests/")], f"{wheel.name} ships tests"
    top = {n.split("/", 1)[0] for n in names if not n.startswith("coin_audit-")}
    assert top == set(PACKAGES), (
        f"{wheel.name} ships unexpected top-level names {sorted(top - set(PACKAGES))}"
    )


def test_the_packages_come_from_the_fresh_venv(fresh: Path, outside: Path, env: dict[str, str]) -> None:
    probe = (
        "import importlib, json, sys\n"
        f"mods = {{n: importlib.import_module(n).__file__ for n in {PACKAGES!r}}}\n"
        "print(json.dumps({'files': mods, 'path': sys.path, 'modules': sorted(sys.modules)}))\n"
    )
    result = _run([fresh / "bin" / "python", "-c", probe], timeout=120, cwd=outside, env=env)
    assert result.returncode == 0, _explain(result)
    found = json.loads(result.stdout)
    prefix = fresh.resolve()
    for name, file in found["files"].items():
        assert file and prefix in Path(file).resolve().parents, f"{name} imported from {file}, not {prefix}"
        assert REPO_ROOT not in Path(file).resolve().parents, f"{name} imported from the checkout: {file}"
    on_path = [p for p in found["path"] if p and Path(p).resolve() == REPO_ROOT]
    assert not on_path, f"the checkout is on sys.path: {found['path']}"
    editable = [m for m in found["modules"] if m.startswith("__editable__")]
    assert not editable, f"the dev venv's editable finder is active in the fresh venv: {editable}"


def test_coin_help_lists_the_protocol_and_the_service_commands(
    fresh: Path, outside: Path, env: dict[str, str]
) -> None:
    result = _coin(fresh, outside, env, "--help")
    assert result.returncode == 0, _explain(result)
    for command in PROTOCOL_COMMANDS + SERVICE_COMMANDS:
        assert re.search(rf"^[│ ]*\s{re.escape(command)}\s", result.stdout, re.M), (
            f"`coin --help` does not list {command}\n{result.stdout}"
        )
    assert "Not available" not in result.stdout, result.stdout


def _head_revision() -> str:
    newest = sorted((REPO_ROOT / "migrations" / "versions").glob("[0-9]*.py"))[-1]
    match = re.search(r'^revision(?::\s*str)?\s*=\s*["\']([^"\']+)["\']', newest.read_text(), re.M)
    assert match, f"no revision id in {newest}"
    return match.group(1)


def test_coin_migrate_creates_the_schema(fresh: Path, outside: Path, env: dict[str, str]) -> None:
    result = _coin(fresh, outside, env, "migrate")
    assert result.returncode == 0, _explain(result)
    database = outside / "fresh.sqlite3"
    assert database.is_file(), f"`coin migrate` wrote no {database}\n{_explain(result)}"
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
    assert {"reports", "audits", "audit_events", "alembic_version"} <= tables, sorted(tables)
    assert versions == [_head_revision()]


def test_commit_respond_verify_openings_on_a_real_trace(
    fresh: Path, outside: Path, env: dict[str, str]
) -> None:
    trace = read_traces(TRACE_FILE, 3)[2]
    (outside / "trace.txt").write_text(trace["reasoning"], encoding="utf-8")
    (outside / "answer.txt").write_text(trace["answer"], encoding="utf-8")

    committed = _coin(
        fresh, outside, env, "commit", "--text-file", "trace.txt", "--tokenizer", "qwen2",
        "--answer-file", "answer.txt", "--secret", SECRET, "--block-size", "32", "--openings-out", "o.npz",
    )  # fmt: skip
    assert committed.returncode == 0, _explain(committed)
    assert (outside / "o.npz").is_file()
    public = json.loads(committed.stdout)
    assert public["commitment"]["block_size"] == 32 and public["commitment"]["tokenizer_id"] == "qwen2"
    (outside / "public.json").write_text(committed.stdout, encoding="utf-8")

    responded = _coin(fresh, outside, env, "respond", "--openings", "o.npz", "--indices", "3,17,42")
    assert responded.returncode == 0, _explain(responded)
    response = json.loads(responded.stdout)
    assert [o["index"] for o in response["openings"]] == [3, 17, 42]
    (outside / "response.json").write_text(responded.stdout, encoding="utf-8")

    verified = _coin(
        fresh, outside, env, "verify-openings", "--commitment", "public.json", "--response", "response.json"
    )
    assert verified.returncode == 0, _explain(verified)
    assert json.loads(verified.stdout)["verdict"] == "pass", _explain(verified)

    node = response["openings"][1]["proof"][0]
    response["openings"][1]["proof"][0] = ("1" if node[0] == "0" else "0") + node[1:]
    (outside / "tampered.json").write_text(json.dumps(response), encoding="utf-8")
    tampered = _coin(
        fresh, outside, env, "verify-openings", "--commitment", "public.json", "--response", "tampered.json"
    )
    assert tampered.returncode == 1, _explain(tampered)
    assert "verification failed: proof" in tampered.stderr, _explain(tampered)

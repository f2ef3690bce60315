"""How the service is put together: one job registry for the dispatcher, Celery and beat; settings that
refuse a bad configuration in one line without echoing a secret."""

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from auditor.cli import build_app
from service.jobs import Queue, registered_jobs
from service.settings import Settings, SettingsError, get_settings, load_settings

EXPECTED_JOBS = {
    "coin.audit.start": Queue.CPU,
    "coin.audit.verify": Queue.GPU,
    "coin.challenges.expire": Queue.CPU,
    "coin.audits.sweep": Queue.CPU,
    "coin.events.link": Queue.CPU,
    "coin.integrity.check": Queue.CPU,
    "coin.schedule.draw": Queue.CPU,
    "coin.webhooks.deliver": Queue.CPU,
}


def test_every_job_is_declared_once_with_its_queue() -> None:
    jobs = registered_jobs()
    assert {name: job.queue for name, job in jobs.items()} == EXPECTED_JOBS
    periodic = {name for name, job in jobs.items() if job.every is not None}
    assert periodic == {
        "coin.challenges.expire",
        "coin.audits.sweep",
        "coin.events.link",
        "coin.integrity.check",
        "coin.schedule.draw",
        "coin.webhooks.deliver",
    }


def test_the_celery_app_and_beat_come_from_the_registry() -> None:
    from workers.app import make_celery

    settings = Settings(
        expire_interval_seconds=7,
        sweep_interval_seconds=11,
        integrity_check_interval_seconds=13,
        schedule_interval_seconds=17,
    )
    app = make_celery(settings)
    jobs = registered_jobs()
    for name, job in jobs.items():
        task = app.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost, name
        assert (task.soft_time_limit, task.time_limit) == (540.0, 600.0), name
        assert app.conf.task_routes[name] == {"queue": job.queue.value}
    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert schedule == {
        "coin.challenges.expire": 7,
        "coin.audits.sweep": 11,
        "coin.events.link": 11,
        "coin.integrity.check": 13,
        "coin.schedule.draw": 17,
        "coin.webhooks.deliver": 11,
    }


def _migrate_under_the_environment() -> Result:
    """`coin migrate` with the settings read afresh from the environment as the test set it."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(build_app(), ["migrate"])
    finally:
        get_settings.cache_clear()


def test_a_bad_configuration_is_one_line_that_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    typo = "0123456789abcdef" * 3 + "0123456789abcde"  # 63 hex characters: one short
    monkeypatch.setenv("COIN_ENV", "production")
    monkeypatch.setenv("COIN_SIGNING_KEY", typo)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "COIN_SIGNING_KEY" in message and "64 hex" in message
    assert typo[:8] not in message and "\n" not in message

    monkeypatch.setenv("COIN_SIGNING_KEY", "ab" * 32)
    result = _migrate_under_the_environment()
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and "refuses the published default secrets" in line
    assert "COIN_SECRET_KEY" in line and "ab" * 32 not in line


def test_an_unknown_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COIN_ENV", "staging")
    with pytest.raises(SettingsError, match="COIN_ENV"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "not a database URL"),
        ("foo://bar", "the store runs on sqlite:/// or postgresql+psycopg://, not foo://"),
        ("postgresql+psycopg2://coin:hunter2-secret@db/coin", "not postgresql+psycopg2://"),
    ],
)
def test_a_database_url_the_store_cannot_use_is_one_line(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("COIN_DATABASE_URL", url)
    result = _migrate_under_the_environment()
    assert result.exit_code == 2
    assert result.stderr.startswith("error: COIN_DATABASE_URL: ") and result.stderr.count("\n") == 1
    assert message in result.stderr and "hunter2" not in result.stderr


def test_only_the_services_own_folder_is_created_for_a_sqlite_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "such"
    monkeypatch.setenv("COIN_DATABASE_URL", f"sqlite:///{missing / 'coin.sqlite3'}")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        refused = CliRunner().invoke(build_app(), ["migrate"])
        monkeypatch.delenv("COIN_DATABASE_URL")  # the default, var/coin.sqlite3
        get_settings.cache_clear()
        default = CliRunner().invoke(build_app(), ["migrate"])
    finally:
        get_settings.cache_clear()
    assert (refused.exit_code, refused.stderr) == (
        2,
        f"error: COIN_DATABASE_URL: the folder of the SQLite file does not exist: {missing}\n",
    )
    assert not (tmp_path / "no").exists()
    assert default.exit_code == 0, default.output
    assert (tmp_path / "var" / "coin.sqlite3").is_file()

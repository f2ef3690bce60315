"""`coin commit | respond | verify-openings` as a provider and an auditor would use them."""

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auditor.cli import build_app
from auditor.protocol.fingerprint import Embedder

app = build_app()

runner = CliRunner()
SECRET = "ab" * 32


@pytest.fixture(scope="module")
def workdir(
    tmp_path_factory: pytest.TempPathFactory, short_traces: list[dict[str, Any]], embedder: Embedder
) -> Path:
    path = tmp_path_factory.mktemp("cli")
    (path / "trace.txt").write_text(short_traces[2]["reasoning"], encoding="utf-8")
    (path / "answer.txt").write_text(short_traces[2]["answer"], encoding="utf-8")
    result = runner.invoke(
        app,
        ["commit", "--text-file", str(path / "trace.txt"), "--tokenizer", "qwen2", "--answer-file",
         str(path / "answer.txt"), "--secret", SECRET, "--block-size", "32", "--openings-out", str(path / "o.npz")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (path / "public.json").write_text(result.stdout)
    return path


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_commit_prints_the_report_commitment(workdir: Path) -> None:
    public = json.loads((workdir / "public.json").read_text())
    assert set(public["commitment"]) == {
        "version", "root", "size", "block_size", "embd_id", "tokenizer_id", "repetition"
    }  # fmt: skip
    assert public["commitment"]["version"] == "coin/2"
    assert set(public["commitment"]["repetition"]) == {"digest", "key_root"}
    assert public["commitment"]["block_size"] == 32 and public["commitment"]["tokenizer_id"] == "qwen2"
    assert set(public["answer"]) == {"digest", "embedding"}


def test_tokens_json_gives_the_same_root_as_text(workdir: Path) -> None:
    from auditor.protocol.tokenize import get_tokenizer

    tokens = get_tokenizer("qwen2").tokenize((workdir / "trace.txt").read_text(encoding="utf-8"))
    (workdir / "tokens.json").write_text(json.dumps([base64.b64encode(t).decode() for t in tokens]))
    code, out, err = _run(
        "commit", "--tokens-json", str(workdir / "tokens.json"), "--answer-file", str(workdir / "answer.txt"),
        "--secret", SECRET, "--block-size", "32", "--openings-out", str(workdir / "o2.npz"),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == json.loads((workdir / "public.json").read_text())


def test_respond_then_verify_passes(workdir: Path) -> None:
    code, out, _ = _run("respond", "--openings", str(workdir / "o.npz"), "--indices", "3,17,42")
    assert code == 0
    assert [o["index"] for o in json.loads(out)["openings"]] == [3, 17, 42]
    (workdir / "response.json").write_text(out)
    code, out, err = _run(
        "verify-openings",
        "--commitment",
        str(workdir / "public.json"),
        "--response",
        str(workdir / "response.json"),
    )
    assert code == 0, err
    assert json.loads(out)["verdict"] == "pass"


def test_coin1_still_commits_responds_and_verifies(workdir: Path) -> None:
    code, out, err = _run(
        "commit", "--text-file", str(workdir / "trace.txt"), "--answer-file", str(workdir / "answer.txt"),
        "--secret", SECRET, "--block-size", "32", "--openings-out", str(workdir / "o1.npz"), "--protocol", "coin/1",
    )  # fmt: skip
    assert code == 0, err
    public = json.loads(out)
    assert public["commitment"]["version"] == "coin/1" and "repetition" not in public["commitment"]
    (workdir / "public1.json").write_text(out)
    _, out, _ = _run("respond", "--openings", str(workdir / "o1.npz"), "--indices", "3,4,5,6")
    assert "repetition" not in json.loads(out)
    (workdir / "response1.json").write_text(out)
    code, out, err = _run(
        "verify-openings", "--commitment", str(workdir / "public1.json"), "--response", str(workdir / "response1.json")
    )  # fmt: skip
    assert code == 0, err
    assert [c["name"] for c in json.loads(out)["checks"]] == ["proof", "block_consistency", "token_embedding"]


def test_verify_recomputes_the_profile_and_names_a_lie(workdir: Path) -> None:
    _, out, _ = _run("respond", "--openings", str(workdir / "o.npz"), "--indices", "3,4,5,6")
    response = json.loads(out)
    assert [k["bucket"] for k in response["repetition"]["keys"]]  # the n-gram ending at 6 is revealed
    (workdir / "r4.json").write_text(json.dumps(response))
    code, out, err = _run(
        "verify-openings",
        "--commitment",
        str(workdir / "public.json"),
        "--response",
        str(workdir / "r4.json"),
    )
    assert code == 0, err
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["repetition_profile"]["figure"] == 1 and checks["copied_spans"]["outcome"] == "pass"
    profile = bytearray(base64.b64decode(response["repetition"]["profile"]))
    profile[6 * 6] ^= 1  # the fingerprint at position 6, and so the profile's digest
    response["repetition"]["profile"] = base64.b64encode(bytes(profile)).decode()
    (workdir / "lied.json").write_text(json.dumps(response))
    code, _, err = _run(
        "verify-openings",
        "--commitment",
        str(workdir / "public.json"),
        "--response",
        str(workdir / "lied.json"),
    )
    assert code == 1 and "verification failed: repetition_profile" in err


def test_verify_names_the_failed_check(workdir: Path) -> None:
    _, out, _ = _run("respond", "--openings", str(workdir / "o.npz"), "--indices", "3,17,42")
    response = json.loads(out)
    node = response["openings"][1]["proof"][0]
    response["openings"][1]["proof"][0] = ("1" if node[0] == "0" else "0") + node[1:]
    (workdir / "bad.json").write_text(json.dumps(response))
    code, _, err = _run(
        "verify-openings",
        "--commitment",
        str(workdir / "public.json"),
        "--response",
        str(workdir / "bad.json"),
    )
    assert code == 1
    assert "verification failed: proof" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["respond", "--indices", "3,99999"], "outside the"),
        (["respond", "--indices", "-1"], "outside the"),
        (["respond", "--indices", "a,b"], "comma-separated integers"),
        (["commit", "--secret", "xyz"], "--secret"),
        (["commit", "--secret", "ab" * 31], "expected 32 bytes"),
    ],
)
def test_bad_arguments_are_clear_errors(workdir: Path, args: list[str], message: str) -> None:
    if args[0] == "respond":
        args = [*args[:1], "--openings", str(workdir / "o.npz"), *args[1:]]
    else:
        args = [
            *args,
            "--text-file",
            str(workdir / "trace.txt"),
            "--answer-file",
            str(workdir / "answer.txt"),
        ]
    code, _, err = _run(*args)
    assert code == 2
    assert message in err


def test_malformed_files_are_clear_errors(workdir: Path) -> None:
    (workdir / "notjson.json").write_text("{oops")
    code, _, err = _run(
        "verify-openings",
        "--commitment",
        str(workdir / "notjson.json"),
        "--response",
        str(workdir / "notjson.json"),
    )
    assert code == 2 and "not readable JSON" in err
    (workdir / "badtokens.json").write_text(json.dumps(["%%%"]))
    code, _, err = _run(
        "commit", "--tokens-json", str(workdir / "badtokens.json"), "--answer-file", str(workdir / "answer.txt"),
        "--secret", SECRET,
    )  # fmt: skip
    assert code == 2 and "base64" in err


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_what_is_not_an_openings_file_is_a_clear_error(workdir: Path, tmp_path: Path, kind: str) -> None:
    real = (workdir / "o.npz").read_bytes()
    content = {"empty": b"", "truncated": real[: len(real) // 2], "text": b"hello\n"}[kind]
    (tmp_path / "o.npz").write_bytes(content)
    code, _, err = _run("respond", "--openings", str(tmp_path / "o.npz"), "--indices", "1")
    assert code == 2
    assert (
        err
        == f"error: openings file {tmp_path / 'o.npz'}: not an openings file (.npz written by coin commit)\n"
    )


def test_an_openings_out_that_cannot_be_a_file_is_refused_before_embedding(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_commit(*args: object, **kwargs: object) -> None:
        raise AssertionError("embedded before checking --openings-out")

    monkeypatch.setattr("auditor.cli.protocol.commit", no_commit)
    missing = tmp_path / "nowhere"
    for out, message in ((tmp_path, "is a folder"), (missing / "o.npz", f"folder {missing} does not exist")):
        code, _, err = _run(
            "commit", "--text-file", str(workdir / "trace.txt"), "--answer-file", str(workdir / "answer.txt"),
            "--secret", SECRET, "--openings-out", str(out),
        )  # fmt: skip
        assert code == 2 and err == f"error: --openings-out {out}: {message}\n"


def test_an_existing_openings_file_is_kept_unless_forced(workdir: Path, tmp_path: Path) -> None:
    """The openings are the only copy of what answers a report already sent: a second commit to the same
    path is refused, and replaces it only with --force."""
    target = tmp_path / "kept.npz"
    target.write_bytes(b"the openings of an earlier report")
    args = ("commit", "--text-file", str(workdir / "trace.txt"), "--answer-file", str(workdir / "answer.txt"),
            "--secret", SECRET, "--block-size", "32", "--openings-out", str(target))  # fmt: skip
    code, out, err = _run(*args)
    assert code == 2 and not out and "exists; it may be the only openings of a report" in err
    assert target.read_bytes() == b"the openings of an earlier report"
    code, out, err = _run(*args, "--force")
    assert code == 0, err
    assert (
        json.loads(out)["commitment"]["root"]
        == json.loads((workdir / "public.json").read_text())["commitment"]["root"]
    )
    code, _, err = _run(*args[:-1], "/dev/null", "--force")
    assert code == 2 and err == "error: --openings-out /dev/null: is not a regular file\n"


_WRITE_PAST_A_SIZE_LIMIT = """
import resource, signal, sys
from auditor.protocol.commitment import Openings
from auditor.protocol.errors import ProtocolError
openings = Openings.load(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    openings.save(sys.argv[2])
except ProtocolError as exc:
    print(exc)
"""


def test_a_failed_write_keeps_the_file_that_was_there(workdir: Path, tmp_path: Path) -> None:
    """A real failed write (a process file-size limit): a clear error, the earlier file untouched, no
    partial file left beside it."""
    import subprocess
    import sys

    target = tmp_path / "o.npz"
    target.write_bytes(b"the openings of an earlier report")
    result = subprocess.run(
        [sys.executable, "-c", _WRITE_PAST_A_SIZE_LIMIT, str(workdir / "o.npz"), str(target)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"openings file {target}: cannot write (File too large)\n"
    assert target.read_bytes() == b"the openings of an earlier report"
    assert [p.name for p in tmp_path.iterdir()] == ["o.npz"]


def test_respond_refuses_a_challenge_drawn_for_another_commitment(workdir: Path) -> None:
    size = json.loads((workdir / "public.json").read_text())["commitment"]["size"]
    drawn = {
        "size": size,
        "block_size": 32,
        "count_indices": [0, 1],
        "block_indices": [0],
        "block_token_indices": [0],
    }
    for changed, expected in (({}, 0), ({"block_size": 16}, 2), ({"size": size + 1}, 2)):
        (workdir / "challenge.json").write_text(json.dumps({**drawn, **changed}))
        code, out, err = _run(
            "respond", "--openings", str(workdir / "o.npz"), "--challenge", str(workdir / "challenge.json")
        )
        assert code == expected, err
        if expected:
            assert err == "error: challenge: size or block_size differ from the commitment's\n" and not out
        else:
            assert [o["index"] for o in json.loads(out)["openings"]] == [0, 1]


def test_eval_names_the_traces_line_that_is_not_utf8(
    tmp_path: Path, short_traces: list[dict[str, Any]]
) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_bytes(json.dumps(short_traces[0]).encode() + b'\n{"id": "\xff"}\n')
    code, _, err = _run("eval", "--traces", str(traces), "--out", str(tmp_path / "out"))
    assert code == 2
    assert err == f"error: {traces}:2: not UTF-8 (byte 9 of the line)\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [("{oops", "not JSON (Expecting property name"), ('{"a": 1}', "not an audit outcome (missing attack, ")],
)
def test_monitor_eval_names_the_outcomes_line_that_is_not_one(
    tmp_path: Path, line: str, message: str
) -> None:
    for domain in ("a", "b"):
        (tmp_path / f"fold-{domain}").mkdir()
        (tmp_path / f"fold-{domain}" / "outcomes.jsonl").write_text(line + "\n")
    code, _, err = _run("monitor-eval", "--lodo-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith(f"error: {tmp_path / 'fold-a' / 'outcomes.jsonl'}:1: {message}")
    assert err.count("\n") == 1  # one line, no traceback


def test_a_text_file_is_committed_byte_for_byte(workdir: Path, tmp_path: Path) -> None:
    """CRLF line ends are part of the text: the same text given as tokens gives the same root, and the
    answer digest is of the file's own bytes."""
    from auditor.protocol.commitment import answer_digest
    from auditor.protocol.tokenize import get_tokenizer

    text, answer = "First line.\r\nSecond line,\r\nthird.\r\n", "Yes.\r\n"
    (tmp_path / "crlf.txt").write_bytes(text.encode())
    (tmp_path / "answer.txt").write_bytes(answer.encode())
    tokens = get_tokenizer("qwen2").tokenize(text)
    (tmp_path / "tokens.json").write_text(json.dumps([base64.b64encode(t).decode() for t in tokens]))
    roots = []
    for source in (("--text-file", "crlf.txt"), ("--tokens-json", "tokens.json")):
        code, out, err = _run(
            "commit", source[0], str(tmp_path / source[1]), "--answer-file", str(tmp_path / "answer.txt"),
            "--secret", SECRET, "--openings-out", str(tmp_path / f"{source[1]}.npz"),
        )  # fmt: skip
        assert code == 0, err
        public = json.loads(out)
        assert public["commitment"]["size"] == len(tokens)
        assert public["answer"]["digest"] == answer_digest(answer).hex()
        roots.append(public["commitment"]["root"])
    assert roots[0] == roots[1]


def test_a_response_that_opens_nothing_proves_nothing(workdir: Path) -> None:
    (workdir / "empty.json").write_text(json.dumps({"openings": []}))
    code, out, err = _run(
        "verify-openings",
        "--commitment",
        str(workdir / "public.json"),
        "--response",
        str(workdir / "empty.json"),
    )
    assert code == 2 and not out
    assert err == "error: response: opens no leaf; give --challenge, or a response that opens some\n"


def test_json_no_parser_would_read_is_a_one_line_error(workdir: Path, tmp_path: Path) -> None:
    for name, text, reason in (("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
                               ("long.json", "1" * 5000, "Exceeds the limit")):  # fmt: skip
        (tmp_path / name).write_text(text)
        code, out, err = _run(
            "verify-openings",
            "--commitment",
            str(workdir / "public.json"),
            "--response",
            str(tmp_path / name),
        )
        assert (
            code == 2
            and not out
            and err.startswith(f"error: --response {tmp_path / name}: not readable JSON (")
        )
        assert reason in err and err.count("\n") == 1


def test_tokens_outside_the_named_tokenizer_are_refused(workdir: Path, tmp_path: Path) -> None:
    """An audit that opened such a token would fail its vocabulary check: an accusation the provider's
    own tool can spare it, before anything is written."""
    tokens = [b" The", b" answer", b" is", b" 4", b"\xff\xfe-not-a-token"]
    (tmp_path / "tokens.json").write_text(json.dumps([base64.b64encode(t).decode() for t in tokens]))
    code, out, err = _run(
        "commit", "--tokens-json", str(tmp_path / "tokens.json"), "--answer-file", str(workdir / "answer.txt"),
        "--secret", SECRET, "--openings-out", str(tmp_path / "o.npz"),
    )  # fmt: skip
    assert code == 2 and not out and not (tmp_path / "o.npz").exists()
    assert err.startswith("error: --tokens-json: 2 tokens are not tokens of qwen2 (first at 3: b' 4')")

"""`coin` commands of the protocol library: commit, respond, verify-openings (the provider SDK and the
auditor's checks 1–3 from a shell). Each prints JSON on stdout and names the failed check on error."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.protocol import PROTOCOL_VERSION
from auditor.protocol.challenge import Challenge
from auditor.protocol.commitment import (
    DEFAULT_BLOCK_SIZE,
    SECRET_BYTES,
    Commitment,
    Openings,
    PublicCommitment,
    Response,
    commit,
    tokens_outside,
)
from auditor.protocol.encoding import from_b64, from_hex
from auditor.protocol.errors import ModelError, ProtocolError
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise _fail(f"{what} {path}: not readable JSON (nested too deeply)") from None
    # ValueError: JSONDecodeError, and an integer of more digits than Python converts
    except (OSError, ValueError) as exc:
        raise _fail(f"{what} {path}: not readable JSON ({exc})") from None


def _read_text(path: Path, what: str) -> str:
    """The file's text exactly: `read_text` would turn CRLF into LF, and the commitment would then be to
    other text than the file's (a different answer digest, a different token count)."""
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{what} {path}: not readable UTF-8 text ({exc})") from None


def _check_writable(path: Path, what: str, *, replace: bool) -> None:
    """Refuse an output path that cannot become a file before the work whose result it would keep, and
    an existing file unless `replace`: an openings file is the only copy of what answers a report."""
    if path.is_dir():
        raise _fail(f"{what} {path}: is a folder")
    if not path.parent.is_dir():
        raise _fail(f"{what} {path}: folder {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise _fail(f"{what} {path}: is not a regular file")
    if path.exists() and not replace:
        raise _fail(
            f"{what} {path}: exists; it may be the only openings of a report already sent (--force to replace it)"
        )


def _parse_indices(text: str) -> list[int]:
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"--indices: expected comma-separated integers, got {text!r}") from None
    if not wanted:
        raise _fail("--indices: give at least one index, or --challenge")
    return wanted


@app.command("commit")
def commit_command(
    answer_file: Annotated[Path, typer.Option(help="the visible answer, UTF-8 text")],
    secret: Annotated[str, typer.Option(help=f"the request secret, {SECRET_BYTES} bytes as hex")],
    text_file: Annotated[Path | None, typer.Option(help="the hidden trace as text")] = None,
    tokenizer: Annotated[
        str, typer.Option(help="tokenizer id for --text-file and the report")
    ] = DEFAULT_TOKENIZER_ID,
    tokens_json: Annotated[
        Path | None, typer.Option(help="the trace as a JSON list of base64 token bytes")
    ] = None,
    block_size: Annotated[int, typer.Option(help="tokens per block (16..1024)")] = DEFAULT_BLOCK_SIZE,
    openings_out: Annotated[Path, typer.Option(help="where to keep the openings")] = Path("openings.npz"),
    protocol: Annotated[
        str, typer.Option(help="coin/2 (with the repetition profile) or coin/1")
    ] = PROTOCOL_VERSION,
    force: Annotated[bool, typer.Option(help="replace an existing --openings-out file")] = False,
) -> None:
    """Commit to a hidden trace; print the public commitment, keep the openings."""
    if (text_file is None) == (tokens_json is None):
        raise _fail("give exactly one of --text-file and --tokens-json")
    _check_writable(openings_out, "--openings-out", replace=force)
    try:
        secret_bytes = from_hex(secret, field="--secret", length=SECRET_BYTES)
        trace: list[bytes] | str
        if text_file is not None:
            trace = _read_text(text_file, "--text-file")
        else:
            items = _read_json(tokens_json, "--tokens-json")  # type: ignore[arg-type]
            if not isinstance(items, list):
                raise ProtocolError("--tokens-json: expected a JSON list of base64 strings")
            trace = [from_b64(item, field=f"--tokens-json[{k}]") for k, item in enumerate(items)]
            outside = tokens_outside(trace, tokenizer)
            if outside:
                raise ProtocolError(
                    f"--tokens-json: {len(outside)} tokens are not tokens of {tokenizer} (first at "
                    f"{outside[0]}: {trace[outside[0]]!r}); an audit that opens one fails the vocabulary "
                    "check: split the trace with the tokenizer the report names"
                )
        public, openings = commit(
            trace,
            _read_text(answer_file, "--answer-file"),
            secret_bytes,
            block_size=block_size,
            tokenizer_id=tokenizer,
            version=protocol,
        )
        openings.save(openings_out)
    except (ProtocolError, ModelError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(public.to_json(), indent=2))


@app.command("respond")
def respond_command(
    openings: Annotated[Path, typer.Option(help="the openings file written by `coin commit`")],
    indices: Annotated[str, typer.Option(help="leaves to open with content, e.g. 3,17,42")] = "",
    challenge: Annotated[Path | None, typer.Option(help="answer this challenge JSON instead")] = None,
) -> None:
    """Open leaves: print the response JSON (DESIGN §3, "Response")."""
    try:
        # what to open first: it is cheap to read, and loading the openings rebuilds the whole tree
        drawn = None if challenge is None else Challenge.from_json(_read_json(challenge, "--challenge"))
        wanted = _parse_indices(indices) if drawn is None else drawn.indices
        store = Openings.load(openings)
        committed = store.public.commitment
        if drawn is not None and (drawn.size, drawn.block_size) != (committed.size, committed.block_size):
            raise ProtocolError("challenge: size or block_size differ from the commitment's")
        response = store.respond(wanted, wanted if drawn is None else drawn.content_indices)
    except ProtocolError as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(response.to_json()))


def implied_challenge(commitment: Commitment, response: Response) -> Challenge:
    """Without a challenge file, require exactly what the response opens, with content where given; a
    response that opens nothing proves nothing, so it is refused rather than passed."""
    if not response.openings:
        raise ProtocolError("response: opens no leaf; give --challenge, or a response that opens some")
    content = tuple(sorted(o.index for o in response.openings if o.is_content))
    return Challenge(
        size=commitment.size,
        block_size=commitment.block_size,
        count_indices=tuple(sorted({o.index for o in response.openings})),
        block_indices=tuple(sorted({i // commitment.block_size for i in content})),
        block_token_indices=content,
    )


@app.command("verify-openings")
def verify_openings_command(
    commitment: Annotated[Path, typer.Option(help="the public commitment JSON printed by `coin commit`")],
    response: Annotated[Path, typer.Option(help="the response JSON printed by `coin respond`")],
    challenge: Annotated[Path | None, typer.Option(help="the challenge the response must answer")] = None,
) -> None:
    """Check a response against a commitment (checks 1–3, and under coin/2 the repetition profile and
    copied spans); exit non-zero naming the failed check."""
    from auditor.protocol.verify import verify_response

    try:
        public = PublicCommitment.from_json(_read_json(commitment, "--commitment"))
        answer = Response.from_json(_read_json(response, "--response"))
        drawn = (
            Challenge.from_json(_read_json(challenge, "--challenge"))
            if challenge is not None
            else implied_challenge(public.commitment, answer)
        )
        result = verify_response(public, drawn, answer)
    except (ProtocolError, ModelError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(result.to_json(), indent=2))
    if not result.passed:
        names = ", ".join(f"{c.name} ({c.detail})" for c in result.failed) or result.verdict
        typer.echo(f"verification failed: {names}", err=True)
        raise typer.Exit(code=1)

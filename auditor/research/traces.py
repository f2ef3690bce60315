"""Reasoning traces for the evaluation: loading and the train / validation / test split (DESIGN §6).

A traces file is JSON lines with at least `id`, `domain`, `model`, `question`, `reasoning`, `answer`
(the schema of ../shared/data/traces). The split keeps whole domains out of training (`general_reasoning`
and the GPT-4o-written `medical` by default) so that held-out figures measure generalisation, and splits
the remaining domains *by question* — many models answer the same question, so a split by trace would
leak — and, where a question was answered by several models, also holds some models out of training.
"""

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.protocol.errors import ProtocolError

REQUIRED_FIELDS = ("id", "domain", "model", "question", "reasoning", "answer")
DEFAULT_HELD_OUT_DOMAINS = ("general_reasoning", "medical")


@dataclass(frozen=True)
class Trace:
    id: str
    domain: str
    model: str
    question: str
    reasoning: str
    answer: str


@dataclass(frozen=True)
class TraceSplit:
    """Three disjoint sets: `train` (fit the heads), `validation` (stacking, calibration), `test`."""

    train: tuple[Trace, ...]
    validation: tuple[Trace, ...]
    test: tuple[Trace, ...]


def trace_files(paths: Iterable[str | Path]) -> list[Path]:
    """Each path as given, or the `*.jsonl` files inside a folder (sorted, so runs are reproducible)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise ProtocolError(f"traces: {path} is neither a file nor a folder")
    if not files:
        raise ProtocolError("traces: no .jsonl files found")
    return files


def parse_trace(obj: object, where: str) -> Trace:
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: expected a JSON object")
    values: dict[str, str] = {}
    for name in REQUIRED_FIELDS:
        value = obj.get(name)
        if not isinstance(value, str):
            raise ProtocolError(f"{where}.{name}: expected a string")
        values[name] = value
    if not values["reasoning"].strip():
        raise ProtocolError(f"{where}.reasoning: empty")
    return Trace(**values)


def json_lines(path: Path) -> Iterator[tuple[str, object]]:
    """Each non-blank line of a JSON-lines file as (`file:line`, its value). A line that is not UTF-8
    or not JSON is a ProtocolError naming the file and line, as is a file that cannot be read."""
    try:
        fh = path.open("rb")  # bytes, decoded line by line: text mode fails mid-file, not naming the line
    except OSError as exc:
        raise ProtocolError(f"{path}: unreadable ({exc.strerror or exc})") from None
    with fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"{where}: not UTF-8 (byte {exc.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProtocolError(f"{where}: not JSON ({exc.msg})") from None
            yield where, value


def load_traces(paths: Iterable[str | Path], *, domains: Sequence[str] | None = None) -> list[Trace]:
    """Every trace in the files (or folders) given, optionally only those of some domains."""
    traces: list[Trace] = []
    seen: set[str] = set()
    for file in trace_files(paths):
        for where, obj in json_lines(file):
            trace = parse_trace(obj, where)
            if trace.id in seen:
                raise ProtocolError(f"{where}.id: duplicate id {trace.id!r}")
            seen.add(trace.id)
            if domains is None or trace.domain in domains:
                traces.append(trace)
    return traces


def stable_fraction(text: str, seed: int) -> float:
    """A number in [0, 1) fixed by (text, seed): assignment does not depend on file order."""
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_traces(
    traces: Sequence[Trace],
    *,
    held_out_domains: Sequence[str] = DEFAULT_HELD_OUT_DOMAINS,
    validation_fraction: float = 0.2,
    held_out_model_fraction: float = 0.15,
    seed: int = 0,
) -> TraceSplit:
    """Split by domain, then by question, then by model (DESIGN §6).

    Test: every trace of `held_out_domains`. Of the rest, a `validation_fraction` of the *questions* go
    to validation with all their traces; training keeps the other questions but drops the traces of a
    `held_out_model_fraction` of the models, so validation also sees models training never saw."""
    test = tuple(t for t in traces if t.domain in held_out_domains)
    rest = [t for t in traces if t.domain not in held_out_domains]
    validation = tuple(t for t in rest if stable_fraction("q:" + t.question, seed) < validation_fraction)
    train = tuple(
        t
        for t in rest
        if stable_fraction("q:" + t.question, seed) >= validation_fraction
        and stable_fraction("m:" + t.model, seed) >= held_out_model_fraction
    )
    return TraceSplit(train, validation, test)


# Model families, by a substring of the upstream model name (lowercase), first match wins: distilled
# models before their teachers' names, QwQ before Qwen3.
MODEL_FAMILIES = (
    ("sky-t1", "sky-t1"),
    ("r1-distill", "r1-distill"),
    ("deepseek", "deepseek"),
    ("r1-1776", "deepseek"),
    ("qwq", "qwq"),
    ("qwen3", "qwen3"),
    ("qwen-plus", "qwen3"),
    ("qwen-turbo", "qwen3"),
    ("gpt-oss", "gpt-oss"),
    ("gpt-4o", "gpt-4o"),
    ("glm", "glm"),
    ("grok", "grok"),
    ("kimi", "kimi"),
    ("phi4", "phi"),
    ("minimax", "minimax"),
)


def model_family(model: str) -> str:
    """A coarse family of the model that wrote a trace (`other` when none matches)."""
    name = model.lower()
    return next((family for key, family in MODEL_FAMILIES if key in name), "other")

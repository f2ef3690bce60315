"""The provider SDK: commit to a hidden trace, keep the openings, answer challenges (DESIGN §3).

Leaf layout (protocols `coin/1` and `coin/2`, see docs/protocol.md for why it hashes the fingerprint):

    s_i          = BLAKE3-keyed(key = secret, "<version>/salt" || u64le(i))[:16]
    fp_i         = q(e_{i // B}) || q(t_i)                      768 bytes
    leaf_data_i  = u64le(i) || s_i || H(fp_i)                   56 bytes
    leaf hash    = H(0x00 || leaf_data_i)                        RFC 9162 §2.1.1

The index inside the leaf stops a leaf committed at one position from being opened at another; the salt
stops anyone from recovering a neighbouring token by trying the vocabulary against a sibling leaf hash;
hashing fp_i lets a *count* opening prove a leaf exists without revealing any embedding, so only the few
*content* openings expose semantics.

`coin/2` keeps the leaf and adds the repetition profile (`auditor.protocol.repetition`): the commitment
carries the profile's digest and the root of its bucket keys, and every response carries the profile. Its
salts are derived under `coin/2/salt`, so no leaf of one version is a leaf of the other.
"""

import json
import os
import secrets as _secrets
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
from numpy.lib.npyio import NpzFile

from auditor.protocol import PROTOCOL_VERSION, PROTOCOL_VERSIONS
from auditor.protocol.encoding import field_of, from_b64, from_hex, object_of, to_b64, to_hex
from auditor.protocol.errors import ChallengeError, ProtocolError
from auditor.protocol.fingerprint import (
    EMBED_DIM,
    FINGERPRINT_BYTES,
    EmbeddingModel,
    Int8Array,
    block_texts,
    fingerprints,
    get_embedder,
    quantize,
)
from auditor.protocol.merkle import BLAKE3, MerkleTree
from auditor.protocol.repetition import PROFILE_BYTES, Repetition, RepetitionCommitment, RepetitionOpening
from auditor.protocol.tokenize import DEFAULT_TOKENIZER_ID, get_tokenizer

# DESIGN §3 suggests 256; the auditor's heads are trained and calibrated at 16, and a short trace must
# have several blocks for 25% block exposure to mean anything (docs/protocol.md, docs/evaluation.md).
DEFAULT_BLOCK_SIZE = 16
MIN_BLOCK_SIZE = 16
MAX_BLOCK_SIZE = 1024
SECRET_BYTES = 32
SALT_BYTES = 16
DIGEST_BYTES = 32
MAX_TRACE_TOKENS = 1 << 24  # far above any real trace; bounds what a report may claim
# A revealed token is one token of a BPE vocabulary (twice the longest Qwen2 token: test_commitment checks
# that every one fits). Its bytes are not in the leaf, so without a bound one content opening could make
# the verifier decode, tokenize and embed megabytes.
MAX_TOKEN_BYTES = 256


def digest(data: bytes) -> bytes:
    """H = BLAKE3 with a 32-byte output (DESIGN §3)."""
    return blake3.blake3(data).digest()


def salt_for(secret: bytes, index: int, version: str = PROTOCOL_VERSION) -> bytes:
    """s_i = first 16 bytes of BLAKE3-keyed(secret, `<version>/salt` || u64le(i))."""
    if len(secret) != SECRET_BYTES:
        raise ProtocolError(f"secret: expected {SECRET_BYTES} bytes, got {len(secret)}")
    context = version.encode() + b"/salt" + struct.pack("<Q", index)
    return blake3.blake3(context, key=secret).digest()[:SALT_BYTES]


def leaf_data(index: int, salt: bytes, fingerprint_digest: bytes) -> bytes:
    return struct.pack("<Q", index) + salt + fingerprint_digest


def leaf_hash(index: int, salt: bytes, fingerprint_digest: bytes) -> bytes:
    return BLAKE3.hash_leaf(leaf_data(index, salt, fingerprint_digest))


def answer_digest(text: str) -> bytes:
    return digest(text.encode("utf-8"))


def check_version(version: str, field: str = "commitment.version") -> str:
    if version not in PROTOCOL_VERSIONS:
        raise ProtocolError(f"{field}: unsupported {version!r} (known: {', '.join(PROTOCOL_VERSIONS)})")
    return version


def check_block_size(block_size: object) -> int:
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        raise ProtocolError("block_size: expected an integer")
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ProtocolError(f"block_size: {block_size} is outside {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}")
    return block_size


@dataclass(frozen=True)
class Commitment:
    """The `commitment` object of a report: the root of m leaves and how they were made; under coin/2
    also the `repetition` commitment (the profile's digest and the root of its bucket keys)."""

    root: bytes
    size: int
    block_size: int
    embd_id: str
    tokenizer_id: str
    version: str = PROTOCOL_VERSION
    repetition: RepetitionCommitment | None = None

    def __post_init__(self) -> None:
        check_version(self.version)
        if (self.version == "coin/2") != (self.repetition is not None):
            raise ProtocolError("commitment.repetition: required by coin/2, absent from coin/1")

    @property
    def num_blocks(self) -> int:
        return -(-self.size // self.block_size)

    def to_json(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "root": to_hex(self.root),
            "size": self.size,
            "block_size": self.block_size,
            "embd_id": self.embd_id,
            "tokenizer_id": self.tokenizer_id,
        }
        if self.repetition is not None:
            out["repetition"] = self.repetition.to_json()
        return out

    @classmethod
    def from_json(cls, obj: object) -> "Commitment":
        data = object_of(obj, "commitment")
        version = check_version(field_of(data, "version", str, "commitment"))
        size = field_of(data, "size", int, "commitment")
        if not 1 <= size <= MAX_TRACE_TOKENS:
            raise ProtocolError(f"commitment.size: {size} is outside 1..{MAX_TRACE_TOKENS}")
        embd_id = field_of(data, "embd_id", str, "commitment")
        tokenizer_id = field_of(data, "tokenizer_id", str, "commitment")
        if not embd_id or not tokenizer_id:
            raise ProtocolError("commitment: embd_id and tokenizer_id must not be empty")
        return cls(
            root=from_hex(data.get("root"), field="commitment.root", length=DIGEST_BYTES),
            size=size,
            block_size=check_block_size(data.get("block_size")),
            embd_id=embd_id,
            tokenizer_id=tokenizer_id,
            version=version,
            repetition=_repetition_commitment(data, version),
        )


def _repetition_commitment(data: Mapping[str, Any], version: str) -> RepetitionCommitment | None:
    """The `repetition` member: required under coin/2, absent (or null) under coin/1."""
    value = data.get("repetition")
    if version == "coin/1":
        if value is not None:
            raise ProtocolError("commitment.repetition: coin/1 has no repetition profile")
        return None
    if value is None:
        raise ProtocolError("commitment.repetition: missing (coin/2 commits a repetition profile)")
    return RepetitionCommitment.from_json(value)


@dataclass(frozen=True)
class AnswerCommitment:
    """The `answer` object of a report: H(answer UTF-8) and q(Embd(answer)), optionally the text."""

    digest: bytes
    embedding: bytes
    text: str | None = None

    @property
    def codes(self) -> Int8Array:
        return np.frombuffer(self.embedding, dtype=np.int8)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"digest": to_hex(self.digest), "embedding": to_b64(self.embedding)}
        if self.text is not None:
            out["text"] = self.text
        return out

    @classmethod
    def from_json(cls, obj: object) -> "AnswerCommitment":
        data = object_of(obj, "answer")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise ProtocolError("answer.text: expected a string")
        if text is not None and not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") has no UTF-8, so no digest
                raise ProtocolError("answer.text: not valid Unicode (a lone surrogate)") from None
        answer = cls(
            digest=from_hex(data.get("digest"), field="answer.digest", length=DIGEST_BYTES),
            embedding=from_b64(data.get("embedding"), field="answer.embedding", length=EMBED_DIM),
            text=text,
        )
        if text is not None and answer_digest(text) != answer.digest:
            raise ProtocolError("answer.digest: does not match H(answer.text)")
        return answer


@dataclass(frozen=True)
class PublicCommitment:
    """What the provider publishes: the commitment and the answer commitment."""

    commitment: Commitment
    answer: AnswerCommitment

    def to_json(self) -> dict[str, Any]:
        return {"commitment": self.commitment.to_json(), "answer": self.answer.to_json()}

    @classmethod
    def from_json(cls, obj: object) -> "PublicCommitment":
        data = object_of(obj, "public commitment")
        return cls(
            Commitment.from_json(data.get("commitment")), AnswerCommitment.from_json(data.get("answer"))
        )


@dataclass(frozen=True)
class Opening:
    """One opened leaf. A *content* opening carries the fingerprint and the token; a *count* opening
    carries only the fingerprint digest, which proves the leaf exists and reveals nothing semantic."""

    index: int
    salt: bytes
    proof: tuple[bytes, ...]
    fingerprint: bytes | None = None
    token: bytes | None = None
    fingerprint_digest_only: bytes | None = None

    @property
    def is_content(self) -> bool:
        return self.fingerprint is not None

    @property
    def fingerprint_digest(self) -> bytes:
        if self.fingerprint is not None:
            return digest(self.fingerprint)
        assert self.fingerprint_digest_only is not None
        return self.fingerprint_digest_only

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.index, self.salt, self.fingerprint_digest)

    @property
    def block_codes(self) -> Int8Array:
        if self.fingerprint is None:
            raise ProtocolError(f"opening {self.index}: a count opening has no fingerprint")
        return np.frombuffer(self.fingerprint[:EMBED_DIM], dtype=np.int8)

    @property
    def token_codes(self) -> Int8Array:
        if self.fingerprint is None:
            raise ProtocolError(f"opening {self.index}: a count opening has no fingerprint")
        return np.frombuffer(self.fingerprint[EMBED_DIM:], dtype=np.int8)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "salt": to_hex(self.salt),
            "proof": [to_hex(node) for node in self.proof],
        }
        if self.fingerprint is not None:
            out["fingerprint"] = to_b64(self.fingerprint)
            out["token"] = to_b64(self.token or b"")
        else:
            out["fingerprint_digest"] = to_hex(self.fingerprint_digest)
        return out

    @classmethod
    def from_json(cls, obj: object, *, max_proof_length: int = 64) -> "Opening":
        data = object_of(obj, "opening")
        index = field_of(data, "index", int, "opening")
        where = f"openings[{index}]"
        if not 0 <= index < MAX_TRACE_TOKENS:
            raise ProtocolError(f"{where}.index: outside 0..{MAX_TRACE_TOKENS - 1}")
        proof_json = field_of(data, "proof", list, where)
        if len(proof_json) > max_proof_length:
            raise ProtocolError(f"{where}.proof: longer than {max_proof_length} nodes")
        proof = tuple(
            from_hex(node, field=f"{where}.proof[{k}]", length=DIGEST_BYTES)
            for k, node in enumerate(proof_json)
        )
        salt = from_hex(data.get("salt"), field=f"{where}.salt", length=SALT_BYTES)
        if "fingerprint" in data:
            if "fingerprint_digest" in data:
                raise ProtocolError(f"{where}: give either fingerprint or fingerprint_digest, not both")
            return cls(
                index=index,
                salt=salt,
                proof=proof,
                fingerprint=from_b64(
                    data["fingerprint"], field=f"{where}.fingerprint", length=FINGERPRINT_BYTES
                ),
                token=from_b64(data.get("token"), field=f"{where}.token", max_length=MAX_TOKEN_BYTES),
            )
        return cls(
            index=index,
            salt=salt,
            proof=proof,
            fingerprint_digest_only=from_hex(
                data.get("fingerprint_digest"), field=f"{where}.fingerprint_digest", length=DIGEST_BYTES
            ),
        )


@dataclass(frozen=True)
class Response:
    """A provider's answer to a challenge (DESIGN §3, "Response"); under coin/2 with the repetition
    profile and the bucket keys the challenge's content openings need."""

    openings: tuple[Opening, ...]
    repetition: RepetitionOpening | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"openings": [opening.to_json() for opening in self.openings]}
        if self.repetition is not None:
            out["repetition"] = self.repetition.to_json()
        return out

    @classmethod
    def from_json(cls, obj: object, *, max_openings: int = 100_000) -> "Response":
        data = object_of(obj, "response")
        openings = field_of(data, "openings", list, "response")
        if len(openings) > max_openings:
            raise ProtocolError(f"response.openings: more than {max_openings} openings")
        repetition = data.get("repetition")
        return cls(
            tuple(Opening.from_json(item) for item in openings),
            None if repetition is None else RepetitionOpening.from_json(repetition),
        )


# The most characters one element of a response's JSON takes besides its proof (written by `json.dumps`
# with its default separators, as the SDK writes it; compact JSON is shorter): a content opening's index
# (below 2^24: 8 digits), salt, fingerprint (FINGERPRINT_BYTES in base64), token (MAX_TOKEN_BYTES in
# base64) and their names; a count opening's digest; a key opening's bucket and key.
_CONTENT_OPENING_CHARS = 1_500
_COUNT_OPENING_CHARS = 200
_KEY_OPENING_CHARS = 150
_PROOF_NODE_CHARS = 2 * DIGEST_BYTES + 4  # hex, its quotes and ", "


def response_size_bound(size: int, version: str, *, content_openings: int, count_openings: int) -> int:
    """The most bytes an honest `Response.to_json()` takes for a trace of `size` tokens under `version`
    when a challenge asks for that many openings: inclusion proofs are at most ceil(log2 size) nodes, and
    under coin/2 the whole profile (PROFILE_BYTES a token, in base64) and at most one bucket key per
    content opening go with them (`tests/unit/test_commitment.py` checks it against real responses)."""
    proof = _PROOF_NODE_CHARS * max(1, (size - 1).bit_length())
    chars = 64 + content_openings * (_CONTENT_OPENING_CHARS + proof)
    chars += count_openings * (_COUNT_OPENING_CHARS + proof)
    if version == "coin/2":
        chars += 4 * -(-size * PROFILE_BYTES // 3) + content_openings * (_KEY_OPENING_CHARS + proof)
    return chars


@dataclass(frozen=True)
class _Leaves:
    """What the provider derives from its fingerprints and tokens: the fingerprint digests, the tree over
    the leaves, and under coin/2 the repetition profile with its keys."""

    digests: list[bytes]
    tree: MerkleTree
    repetition: Repetition | None


class Openings:
    """The provider's private store for one report: enough to answer any challenge later.

    Salts, and under coin/2 the repetition profile and its keys, are re-derived from the secret and the
    tokens. Given nothing built, the leaves are rebuilt from the fingerprints and must reproduce the
    committed root, size and repetition commitment: a store whose fingerprints (or, under coin/2, tokens)
    differ from the committed ones is refused. Under coin/1 no commitment holds the tokens' bytes
    (docs/protocol.md, "What a content opening binds"), so a corrupted token is found only by the
    auditor's re-embedding of it."""

    def __init__(
        self,
        public: PublicCommitment,
        secret: bytes,
        tokens: list[bytes],
        fingerprints: Int8Array,
        *,
        built: _Leaves | None = None,
    ) -> None:
        if fingerprints.shape != (len(tokens), FINGERPRINT_BYTES):
            raise ProtocolError("openings: fingerprints do not match the tokens")
        self.public, self.secret, self.tokens, self.fingerprints = public, secret, tokens, fingerprints
        commitment = public.commitment
        self._leaves = built or _build_leaves(secret, tokens, fingerprints, commitment.version)
        tree, repetition = self._leaves.tree, self._leaves.repetition
        if (
            tree.root != commitment.root
            or tree.size != commitment.size
            or (repetition.commitment if repetition else None) != commitment.repetition
        ):
            raise ProtocolError("openings: the stored leaves do not rebuild the committed root and size")

    @property
    def tree(self) -> MerkleTree:
        return self._leaves.tree

    @property
    def repetition(self) -> Repetition | None:
        return self._leaves.repetition

    def open(self, index: int, *, content: bool) -> Opening:
        if not 0 <= index < len(self.tokens):
            raise ChallengeError(f"index {index} is outside the {len(self.tokens)} committed leaves")
        salt = salt_for(self.secret, index, self.public.commitment.version)
        proof = tuple(self.tree.inclusion_proof(index))
        if content:
            return Opening(index, salt, proof, self.fingerprints[index].tobytes(), self.tokens[index])
        return Opening(index, salt, proof, fingerprint_digest_only=self._leaves.digests[index])

    def respond(self, indices: Iterable[int], content_indices: Iterable[int] = ()) -> Response:
        """Open every index: `content_indices` as content openings, the others as count openings; under
        coin/2 with the profile and the keys of the buckets those content openings let the auditor check."""
        content = set(content_indices)
        wanted = sorted(set(indices) | content)
        openings = tuple(self.open(i, content=i in content) for i in wanted)
        repetition = self.repetition
        return Response(openings, repetition.open(content) if repetition else None)

    def save(self, path: str | Path) -> None:
        meta = {"public": self.public.to_json(), "secret": to_hex(self.secret)}
        lengths = np.array([len(t) for t in self.tokens], dtype=np.int64)
        # The file holds the only copy of the secret and the trace, which an audit may ask for until the
        # retention ends: written beside its place and moved there whole, so that a failed write (a full
        # disk) leaves the file that was there before, never a truncated one.
        target = Path(path)
        partial = target.with_name(f".{target.name}.{_secrets.token_hex(4)}.partial")
        try:
            with partial.open("xb") as fh:
                np.savez_compressed(
                    fh,
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                    token_bytes=np.frombuffer(b"".join(self.tokens), dtype=np.uint8),
                    token_lengths=lengths,
                    fingerprints=self.fingerprints,
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ProtocolError(f"openings file {path}: cannot write ({exc.strerror or exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> "Openings":
        try:
            data = np.load(Path(path), allow_pickle=False)
            if not isinstance(data, NpzFile):  # a bare .npy array
                raise ValueError("not an .npz archive")
            with data:
                meta = json.loads(data["meta"].tobytes())
                blob = data["token_bytes"].tobytes()
                token_lengths = data["token_lengths"]
                fps = data["fingerprints"].astype(np.int8)
        except OSError as exc:
            raise ProtocolError(f"openings file {path}: unreadable ({exc.strerror or exc})") from None
        # empty or truncated, not numpy's at all, or an archive without the arrays `save` writes
        except (EOFError, KeyError, ValueError, RecursionError, zipfile.BadZipFile, zlib.error):
            raise ProtocolError(
                f"openings file {path}: not an openings file (.npz written by coin commit)"
            ) from None
        if not (
            token_lengths.ndim == 1
            and token_lengths.dtype.kind in "iu"
            and bool(np.all(token_lengths >= 1))
            and int(token_lengths.sum()) == len(blob)
            and fps.ndim == 2
            and fps.shape[0] == token_lengths.shape[0]
        ):
            raise ProtocolError(
                f"openings file {path}: its token lengths do not cut its token bytes into one non-empty "
                "token per fingerprint"
            )
        lengths = token_lengths.tolist()
        meta = object_of(meta, f"openings file {path}: meta")
        offsets = np.cumsum([0, *lengths]).tolist()
        tokens = [blob[offsets[k] : offsets[k + 1]] for k in range(len(lengths))]
        return cls(
            public=PublicCommitment.from_json(field_of(meta, "public", dict, "meta")),
            secret=from_hex(field_of(meta, "secret", str, "meta"), field="secret", length=SECRET_BYTES),
            tokens=tokens,
            fingerprints=fps,
        )


def _build_leaves(secret: bytes, tokens: Sequence[bytes], fps: Int8Array, version: str) -> _Leaves:
    """The fingerprint digests, the RFC 9162 tree over the leaves built from them and, under coin/2,
    the repetition profile of the tokens."""
    digests = [digest(row.tobytes()) for row in fps]
    leaves = [leaf_hash(i, salt_for(secret, i, version), d) for i, d in enumerate(digests)]
    repetition = Repetition(tokens, secret) if version == "coin/2" else None
    return _Leaves(digests, MerkleTree(leaves, BLAKE3), repetition)


def new_secret() -> bytes:
    """32 random bytes the provider keeps per request (DESIGN §3, "Salt")."""
    return _secrets.token_bytes(SECRET_BYTES)


def tokens_of(trace: Sequence[bytes] | str, tokenizer_id: str) -> list[bytes]:
    """The trace's tokens. A pre-split token longer than `MAX_TOKEN_BYTES` is refused: it could never be
    opened (every response carrying it is refused), so an honest provider could not answer an audit that
    asks for it. Whether pre-split tokens are the tokenizer's is `tokens_outside`'s question: the SDK
    commits what it is given, as the research attacks need it to."""
    if isinstance(trace, str):
        return get_tokenizer(tokenizer_id).tokenize(trace)
    tokens = list(trace)
    if not all(isinstance(t, bytes) and t for t in tokens):
        raise ProtocolError("trace: every token must be non-empty bytes")
    for k, token in enumerate(tokens):
        if len(token) > MAX_TOKEN_BYTES:
            raise ProtocolError(
                f"trace[{k}]: {len(token)} bytes, longer than {MAX_TOKEN_BYTES}: it could never be opened"
            )
    return tokens


def tokens_outside(tokens: Sequence[bytes], tokenizer_id: str) -> list[int]:
    """Positions of the tokens that are not tokens of `tokenizer_id`: an audit that opens one fails its
    `vocabulary` proof check, so a provider committing pre-split tokens should ask this first."""
    tokenizer = get_tokenizer(tokenizer_id)
    outside = {t for t in set(tokens) if not tokenizer.is_token(t)}
    return [k for k, t in enumerate(tokens) if t in outside]


def commit(
    trace: Sequence[bytes] | str,
    answer: str,
    secret: bytes,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    tokenizer_id: str = DEFAULT_TOKENIZER_ID,
    embedder: EmbeddingModel | None = None,
    include_answer_text: bool = False,
    version: str = PROTOCOL_VERSION,
) -> tuple[PublicCommitment, Openings]:
    """Commit to a hidden trace (token bytes, or text split by `tokenizer_id`) and its visible answer,
    under protocol `version` (coin/2 by default; coin/1 has no repetition profile).

    Returns the public commitment to report and the openings the provider keeps."""
    check_version(version, "version")
    check_block_size(block_size)
    get_tokenizer(tokenizer_id)  # an unknown tokenizer is an error even for pre-split tokens
    tokens = tokens_of(trace, tokenizer_id)
    if not tokens:
        raise ProtocolError("trace: empty; there is nothing to commit")
    if len(tokens) > MAX_TRACE_TOKENS:
        raise ProtocolError(f"trace: {len(tokens)} tokens exceed {MAX_TRACE_TOKENS}")
    if len(secret) != SECRET_BYTES:
        raise ProtocolError(f"secret: expected {SECRET_BYTES} bytes, got {len(secret)}")
    embd = embedder or get_embedder()
    # blocks and answer in one batch: the model's cost is the commitment's cost
    texts = embd.embed_texts([*block_texts(tokens, block_size), answer])
    block_codes, answer_codes = quantize(texts[:-1]), quantize(texts[-1])
    fps = fingerprints(block_codes, quantize(embd.embed_tokens(tokens)), block_size)
    leaves = _build_leaves(secret, tokens, fps, version)
    repetition = leaves.repetition.commitment if leaves.repetition else None
    public = PublicCommitment(
        Commitment(
            leaves.tree.root, len(tokens), block_size, embd.embd_id, tokenizer_id, version, repetition
        ),
        AnswerCommitment(
            answer_digest(answer), answer_codes.tobytes(), answer if include_answer_text else None
        ),
    )
    return public, Openings(public, secret, tokens, fps, built=leaves)

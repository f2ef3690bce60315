"""The provider SDK: commit to a hidden trace, keep the openings, answer challenges (DESIGN §3).

Leaf layout (protocol `coin/1`, see docs/protocol.md for why it hashes the fingerprint):

    s_i          = BLAKE3-keyed(key = secret, "coin/1/salt" || u64le(i))[:16]
    fp_i         = q(e_{i // B}) || q(t_i)                      768 bytes
    leaf_data_i  = u64le(i) || s_i || H(fp_i)                   56 bytes
    leaf hash    = H(0x00 || leaf_data_i)                        RFC 9162 §2.1.1

The index inside the leaf stops a leaf committed at one position from being opened at another; the salt
stops anyone from recovering a neighbouring token by trying the vocabulary against a sibling leaf hash;
hashing fp_i lets a *count* opening prove a leaf exists without revealing any embedding, so only the few
*content* openings expose semantics.
"""

import json
import secrets as _secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from auditor.protocol import PROTOCOL_VERSION
from auditor.protocol.encoding import from_b64, from_hex, to_b64, to_hex
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
_SALT_CONTEXT = PROTOCOL_VERSION.encode() + b"/salt"


def digest(data: bytes) -> bytes:
    """H = BLAKE3 with a 32-byte output (DESIGN §3)."""
    return blake3.blake3(data).digest()


def salt_for(secret: bytes, index: int) -> bytes:
    """s_i = first 16 bytes of BLAKE3-keyed(secret, `coin/1/salt` || u64le(i))."""
    if len(secret) != SECRET_BYTES:
        raise ProtocolError(f"secret: expected {SECRET_BYTES} bytes, got {len(secret)}")
    return blake3.blake3(_SALT_CONTEXT + struct.pack("<Q", index), key=secret).digest()[:SALT_BYTES]


def leaf_data(index: int, salt: bytes, fingerprint_digest: bytes) -> bytes:
    return struct.pack("<Q", index) + salt + fingerprint_digest


def leaf_hash(index: int, salt: bytes, fingerprint_digest: bytes) -> bytes:
    return BLAKE3.hash_leaf(leaf_data(index, salt, fingerprint_digest))


def answer_digest(text: str) -> bytes:
    return digest(text.encode("utf-8"))


def check_block_size(block_size: object) -> int:
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        raise ProtocolError("block_size: expected an integer")
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ProtocolError(f"block_size: {block_size} is outside {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}")
    return block_size


def _field(obj: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in obj:
        raise ProtocolError(f"{where}.{name}: missing")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{where}.{name}: expected {kind.__name__}")
    return value


def _mapping(obj: object, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"{where}: expected a JSON object")
    return obj


@dataclass(frozen=True)
class Commitment:
    """The `commitment` object of a report: the root of m leaves and how they were made."""

    root: bytes
    size: int
    block_size: int
    embd_id: str
    tokenizer_id: str
    version: str = PROTOCOL_VERSION

    @property
    def num_blocks(self) -> int:
        return -(-self.size // self.block_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "root": to_hex(self.root),
            "size": self.size,
            "block_size": self.block_size,
            "embd_id": self.embd_id,
            "tokenizer_id": self.tokenizer_id,
        }

    @classmethod
    def from_json(cls, obj: object) -> "Commitment":
        data = _mapping(obj, "commitment")
        version = _field(data, "version", str, "commitment")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"commitment.version: unsupported {version!r} (expected {PROTOCOL_VERSION!r})"
            )
        size = _field(data, "size", int, "commitment")
        if not 1 <= size <= MAX_TRACE_TOKENS:
            raise ProtocolError(f"commitment.size: {size} is outside 1..{MAX_TRACE_TOKENS}")
        embd_id = _field(data, "embd_id", str, "commitment")
        tokenizer_id = _field(data, "tokenizer_id", str, "commitment")
        if not embd_id or not tokenizer_id:
            raise ProtocolError("commitment: embd_id and tokenizer_id must not be empty")
        return cls(
            root=from_hex(data.get("root"), field="commitment.root", length=DIGEST_BYTES),
            size=size,
            block_size=check_block_size(data.get("block_size")),
            embd_id=embd_id,
            tokenizer_id=tokenizer_id,
            version=version,
        )


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
        data = _mapping(obj, "answer")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise ProtocolError("answer.text: expected a string")
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
        data = _mapping(obj, "public commitment")
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
        data = _mapping(obj, "opening")
        index = _field(data, "index", int, "opening")
        where = f"openings[{index}]"
        if not 0 <= index < MAX_TRACE_TOKENS:
            raise ProtocolError(f"{where}.index: outside 0..{MAX_TRACE_TOKENS - 1}")
        proof_json = _field(data, "proof", list, where)
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
                token=from_b64(data.get("token"), field=f"{where}.token"),
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
    """A provider's answer to a challenge (DESIGN §3, "Response")."""

    openings: tuple[Opening, ...]

    def to_json(self) -> dict[str, Any]:
        return {"openings": [opening.to_json() for opening in self.openings]}

    @classmethod
    def from_json(cls, obj: object, *, max_openings: int = 100_000) -> "Response":
        data = _mapping(obj, "response")
        openings = _field(data, "openings", list, "response")
        if len(openings) > max_openings:
            raise ProtocolError(f"response.openings: more than {max_openings} openings")
        return cls(tuple(Opening.from_json(item) for item in openings))


class Openings:
    """The provider's private store for one report: enough to answer any challenge later.

    Salts are re-derived from the secret. Given no tree, the tree is rebuilt from the fingerprints and
    must reproduce the committed root and size (a corrupted or mismatched store is refused)."""

    def __init__(
        self,
        public: PublicCommitment,
        secret: bytes,
        tokens: list[bytes],
        fingerprints: Int8Array,
        *,
        built: tuple[list[bytes], MerkleTree] | None = None,
    ) -> None:
        if fingerprints.shape != (len(tokens), FINGERPRINT_BYTES):
            raise ProtocolError("openings: fingerprints do not match the tokens")
        self.public, self.secret, self.tokens, self.fingerprints = public, secret, tokens, fingerprints
        self._digests, self._tree = built or _leaf_tree(secret, fingerprints)
        if self._tree.root != public.commitment.root or self._tree.size != public.commitment.size:
            raise ProtocolError("openings: the stored leaves do not rebuild the committed root and size")

    @property
    def tree(self) -> MerkleTree:
        return self._tree

    def open(self, index: int, *, content: bool) -> Opening:
        if not 0 <= index < len(self.tokens):
            raise ChallengeError(f"index {index} is outside the {len(self.tokens)} committed leaves")
        salt = salt_for(self.secret, index)
        proof = tuple(self._tree.inclusion_proof(index))
        if content:
            return Opening(index, salt, proof, self.fingerprints[index].tobytes(), self.tokens[index])
        return Opening(index, salt, proof, fingerprint_digest_only=self._digests[index])

    def respond(self, indices: Iterable[int], content_indices: Iterable[int] = ()) -> Response:
        """Open every index: `content_indices` as content openings, the others as count openings."""
        content = set(content_indices)
        wanted = sorted(set(indices) | content)
        return Response(tuple(self.open(i, content=i in content) for i in wanted))

    def save(self, path: str | Path) -> None:
        meta = {"public": self.public.to_json(), "secret": to_hex(self.secret)}
        lengths = np.array([len(t) for t in self.tokens], dtype=np.int64)
        with Path(path).open("wb") as fh:
            np.savez_compressed(
                fh,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                token_bytes=np.frombuffer(b"".join(self.tokens), dtype=np.uint8),
                token_lengths=lengths,
                fingerprints=self.fingerprints,
            )

    @classmethod
    def load(cls, path: str | Path) -> "Openings":
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes())
                blob = data["token_bytes"].tobytes()
                lengths = data["token_lengths"].tolist()
                fps = data["fingerprints"].astype(np.int8)
        except (OSError, KeyError, ValueError) as exc:
            raise ProtocolError(f"openings file {path}: unreadable ({exc})") from None
        offsets = np.cumsum([0, *lengths]).tolist()
        tokens = [blob[offsets[k] : offsets[k + 1]] for k in range(len(lengths))]
        return cls(
            public=PublicCommitment.from_json(meta["public"]),
            secret=from_hex(meta["secret"], field="secret", length=SECRET_BYTES),
            tokens=tokens,
            fingerprints=fps,
        )


def _leaf_tree(secret: bytes, fps: Int8Array) -> tuple[list[bytes], MerkleTree]:
    """The fingerprint digests and the RFC 9162 tree over the leaves built from them."""
    digests = [digest(row.tobytes()) for row in fps]
    leaves = [leaf_hash(i, salt_for(secret, i), d) for i, d in enumerate(digests)]
    return digests, MerkleTree(leaves, BLAKE3)


def new_secret() -> bytes:
    """32 random bytes the provider keeps per request (DESIGN §3, "Salt")."""
    return _secrets.token_bytes(SECRET_BYTES)


def tokens_of(trace: Sequence[bytes] | str, tokenizer_id: str) -> list[bytes]:
    if isinstance(trace, str):
        return get_tokenizer(tokenizer_id).tokenize(trace)
    tokens = list(trace)
    if not all(isinstance(t, bytes) and t for t in tokens):
        raise ProtocolError("trace: every token must be non-empty bytes")
    return tokens


def commit(
    trace: Sequence[bytes] | str,
    answer: str,
    secret: bytes,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    tokenizer_id: str = DEFAULT_TOKENIZER_ID,
    embedder: EmbeddingModel | None = None,
    include_answer_text: bool = False,
) -> tuple[PublicCommitment, Openings]:
    """Commit to a hidden trace (token bytes, or text split by `tokenizer_id`) and its visible answer.

    Returns the public commitment to report and the openings the provider keeps."""
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
    digests, tree = _leaf_tree(secret, fps)
    public = PublicCommitment(
        Commitment(tree.root, len(tokens), block_size, embd.embd_id, tokenizer_id),
        AnswerCommitment(
            answer_digest(answer), answer_codes.tobytes(), answer if include_answer_text else None
        ),
    )
    return public, Openings(public, secret, tokens, fps, built=(digests, tree))

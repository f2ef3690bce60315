"""Protocol `coin/2`: the repetition profile (docs/protocol.md, "Protocol coin/2: the repetition profile").

For every position i the provider commits r_i, a keyed fingerprint of the n-gram of tokens ending at i,
and answers every challenge with the whole profile r_0..r_{m-1}: the auditor sees which positions repeat
earlier text (a copied span is a run of equal fingerprints at a constant offset) without seeing a token.

    g_i      = tokens[max(0, i - NGRAM + 1) .. i]                           NGRAM = 4
    enc(g)   = u32le(len(t)) || t, for each token t of g                    (uniquely decodable)
    h(g)     = BLAKE3("coin/2/ngram" || enc(g))                             public: whoever holds g has it
    b(g)     = u64le(h(g)[0:8]) mod m                                       the n-gram's key bucket
    k_b      = BLAKE3-XOF(key = secret, "coin/2/repetition-keys")[32b : 32b + 32],   b = 0 .. m - 1
    r_i      = BLAKE3-keyed(key = k_{b(g_i)}, h(g_i))[0:4]                  PROFILE_BYTES = 4
    profile  = r_0 || ... || r_{m-1}
    digest   = BLAKE3("coin/2/profile" || profile)                          in the report
    key_root = RFC 9162 root over the leaf data u64le(b) || k_b, b = 0 .. m - 1     in the report

Why each piece (the argument in full is in docs/protocol.md):
- the *digest* is in the report, stored before any challenge is drawn: a profile sent only with the
  response could lie exactly where the provider knows the auditor will not look;
- the *buckets*: the auditor must recompute r_i from revealed tokens (a fresh fingerprint over a copied
  span is the lie that hides it), yet must never hold a key that evaluates every n-gram — with one it
  could confirm dictionary guesses anywhere in the profile and extend a revealed n-gram token by token
  through the vocabulary, reading the whole trace. A key opened for one bucket evaluates the n-grams of
  that bucket only: on average fewer than one other position of the trace, and the next n-gram of a
  chain only when it falls in an opened bucket too (probability c/m with c keys opened);
- the *key tree*: the provider cannot open, for a bucket, another key than the one it committed.

Equal n-grams have equal h, so the same bucket and key, so equal fingerprints wherever they occur; two
different n-grams collide with probability 2^-32 per pair: a trace of 10^5 tokens holds about one such
pair, a single spurious match and never a copy (at least seven consecutive matches at one offset). Four
bytes keep the profile at 5.3 base64 characters a token.
"""

import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import blake3

from auditor.protocol.encoding import field_of, from_b64, from_hex, object_of, to_b64, to_hex
from auditor.protocol.errors import ProtocolError
from auditor.protocol.merkle import BLAKE3, MerkleTree

NGRAM = 4
PROFILE_BYTES = 4
KEY_BYTES = 32
DIGEST_BYTES = 32
MAX_PROOF_NODES = 64
_NGRAM_CONTEXT = b"coin/2/ngram"
_KEYS_CONTEXT = b"coin/2/repetition-keys"
_PROFILE_CONTEXT = b"coin/2/profile"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _framed(token: bytes) -> bytes:
    return _U32.pack(len(token)) + token


def _ngram_hash(framed: Sequence[bytes]) -> bytes:
    return blake3.blake3(_NGRAM_CONTEXT + b"".join(framed)).digest()


def ngram_hashes(tokens: Sequence[bytes]) -> list[bytes]:
    """h(g_i) for every position: the public hash of the n-gram of tokens ending there.

    The same bytes as `_ngram_hash` of each n-gram, cut from one buffer of all framed tokens and hashed
    with one reused state: this runs once per token on the provider's side, where the hashing is what a
    GPU commitment waits for (docs/benchmarks.md, "Protocol coin/2")."""
    framed = [_framed(t) for t in tokens]
    joined = b"".join(framed)
    ends = list(accumulate(map(len, framed)))
    starts = [0] * min(NGRAM, len(ends)) + ends[: max(0, len(ends) - NGRAM)]
    digest = BLAKE3.digester()
    return [digest(_NGRAM_CONTEXT + joined[start:end]) for start, end in zip(starts, ends, strict=True)]


def bucket_of(ngram_hash: bytes, size: int) -> int:
    """b(g) = u64le(h(g)[0:8]) mod m: which committed key fingerprints this n-gram."""
    return int(_U64.unpack_from(ngram_hash)[0] % size)


def bucket_keys(secret: bytes, size: int) -> list[bytes]:
    """k_0 .. k_{m-1}: one XOF stream keyed by the request secret, cut into 32-byte keys."""
    stream = blake3.blake3(_KEYS_CONTEXT, key=secret).digest(length=KEY_BYTES * size)
    return [stream[b * KEY_BYTES : (b + 1) * KEY_BYTES] for b in range(size)]


def key_leaf_hash(bucket: int, key: bytes) -> bytes:
    """The key tree's leaf b: H(0x00 || u64le(b) || k_b). The bucket is inside the leaf, as the index is
    inside a trace leaf: a key committed for one bucket cannot be opened for another."""
    return BLAKE3.hash_leaf(_U64.pack(bucket) + key)


def key_tree(keys: Sequence[bytes]) -> MerkleTree:
    return MerkleTree(BLAKE3.hash_leaves(_U64.pack(b) + k for b, k in enumerate(keys)), BLAKE3)


def fingerprint(key: bytes, ngram_hash: bytes) -> bytes:
    """r = BLAKE3-keyed(k_b, h(g))[0:4]."""
    return blake3.blake3(ngram_hash, key=key).digest()[:PROFILE_BYTES]


def profile_of(hashes: Sequence[bytes], keys: Sequence[bytes]) -> bytes:
    """r_0 || ... || r_{m-1}; an n-gram that recurs is fingerprinted once."""
    size = len(keys)
    seen: dict[bytes, bytes] = {}
    out = []
    for h in hashes:
        r = seen.get(h)
        if r is None:
            r = seen[h] = fingerprint(keys[bucket_of(h, size)], h)
        out.append(r)
    return b"".join(out)


def profile_digest(profile: bytes) -> bytes:
    return blake3.blake3(_PROFILE_CONTEXT + profile).digest()


def checkable_positions(content_indices: Collection[int]) -> list[int]:
    """The positions whose whole n-gram a challenge reveals: the auditor recomputes their fingerprint."""
    opened = set(content_indices)
    return sorted(i for i in opened if all(j in opened for j in range(max(0, i - NGRAM + 1), i)))


def revealed_ngram_hashes(tokens: Mapping[int, bytes]) -> dict[int, bytes]:
    """h(g_i) for every position whose n-gram the revealed tokens (index -> token) hold entirely."""
    return {
        i: _ngram_hash([_framed(tokens[j]) for j in range(max(0, i - NGRAM + 1), i + 1)])
        for i in checkable_positions(tokens.keys())
    }


@dataclass(frozen=True)
class RepetitionCommitment:
    """The `repetition` object of a coin/2 commitment: it fixes the profile and the bucket keys."""

    digest: bytes
    key_root: bytes

    def to_json(self) -> dict[str, Any]:
        return {"digest": to_hex(self.digest), "key_root": to_hex(self.key_root)}

    @classmethod
    def from_json(cls, obj: object) -> "RepetitionCommitment":
        data = object_of(obj, "commitment.repetition")
        return cls(
            digest=from_hex(data.get("digest"), field="commitment.repetition.digest", length=DIGEST_BYTES),
            key_root=from_hex(
                data.get("key_root"), field="commitment.repetition.key_root", length=DIGEST_BYTES
            ),
        )


@dataclass(frozen=True)
class KeyOpening:
    """One bucket key with its RFC 9162 audit path in the key tree."""

    bucket: int
    key: bytes
    proof: tuple[bytes, ...]

    @property
    def leaf_hash(self) -> bytes:
        return key_leaf_hash(self.bucket, self.key)

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": to_hex(self.key), "proof": [to_hex(n) for n in self.proof]}

    @classmethod
    def from_json(cls, obj: object, where: str) -> "KeyOpening":
        data = object_of(obj, where)
        bucket = field_of(data, "bucket", int, where)
        if bucket < 0:
            raise ProtocolError(f"{where}.bucket: must not be negative")
        proof = field_of(data, "proof", list, where)
        if len(proof) > MAX_PROOF_NODES:
            raise ProtocolError(f"{where}.proof: longer than {MAX_PROOF_NODES} nodes")
        return cls(
            bucket=bucket,
            key=from_hex(data.get("key"), field=f"{where}.key", length=KEY_BYTES),
            proof=tuple(
                from_hex(node, field=f"{where}.proof[{k}]", length=DIGEST_BYTES)
                for k, node in enumerate(proof)
            ),
        )


@dataclass(frozen=True)
class RepetitionOpening:
    """The `repetition` object of a coin/2 response: the whole profile, and the keys of the buckets of
    the positions whose n-gram the challenge reveals."""

    profile: bytes
    keys: tuple[KeyOpening, ...]

    def fingerprint_at(self, index: int) -> bytes:
        return self.profile[index * PROFILE_BYTES : (index + 1) * PROFILE_BYTES]

    def to_json(self) -> dict[str, Any]:
        return {"profile": to_b64(self.profile), "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def from_json(cls, obj: object) -> "RepetitionOpening":
        data = object_of(obj, "response.repetition")
        profile = from_b64(data.get("profile"), field="response.repetition.profile")
        if len(profile) % PROFILE_BYTES:
            raise ProtocolError(
                f"response.repetition.profile: {len(profile)} bytes is not a whole number of "
                f"{PROFILE_BYTES}-byte fingerprints"
            )
        keys = field_of(data, "keys", list, "response.repetition")
        opened = tuple(KeyOpening.from_json(k, f"response.repetition.keys[{n}]") for n, k in enumerate(keys))
        if len({k.bucket for k in opened}) != len(opened):
            raise ProtocolError("response.repetition.keys: a bucket is opened twice")
        return cls(profile, opened)


class Repetition:
    """The provider's side for one trace: the n-gram hashes, the bucket keys and their tree, the profile."""

    def __init__(self, tokens: Sequence[bytes], secret: bytes) -> None:
        self.hashes = ngram_hashes(tokens)
        self.keys = bucket_keys(secret, len(tokens))
        self.tree = key_tree(self.keys)
        self.profile = profile_of(self.hashes, self.keys)
        self.commitment = RepetitionCommitment(profile_digest(self.profile), self.tree.root)

    def open(self, content_indices: Iterable[int]) -> RepetitionOpening:
        """The profile and the keys the auditor needs to recompute every fingerprint it can."""
        size = len(self.keys)
        buckets = sorted({bucket_of(self.hashes[i], size) for i in checkable_positions(set(content_indices))})
        keys = tuple(KeyOpening(b, self.keys[b], tuple(self.tree.inclusion_proof(b))) for b in buckets)
        return RepetitionOpening(self.profile, keys)

"""RFC 9162 (Certificate Transparency v2) §2.1 Merkle trees, parametric in the hash (DESIGN §3 "Tree").

Definitions, for a list D[n] of n leaves (RFC 9162 §2.1.1)::

    MTH({})       = HASH()                                   the empty tree
    MTH({d0})     = HASH(0x00 || d0)                         a leaf
    MTH(D[n])     = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])) k = largest power of two < n

No padding, no duplication of the last leaf, and leaf and node hashes are domain-separated by their
first byte: a provider cannot present a node as a leaf, nor claim more leaves than it committed to by
repeating the last one (Bitcoin's CVE-2012-2459, which CoIn's padded tree has).

Everything here works on *leaf hashes* (``Hasher.hash_leaf`` of the leaf data); what goes into a leaf is
the commitment module's business. In the spirit of transparency-dev's reference Merkle code:

* ``MerkleTree`` keeps every level (bottom-up pairing, a lone last node promoted unchanged, which is the
  same tree as the RFC's split at the largest power of two), so proofs cost O(log n) slices.
* ``verify_inclusion`` and ``verify_consistency`` are the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2
  (inclusion in its closed form, see there), preceded by strict shape checks, the proof length for
  (index, size) or (m, n) included: they return ``None`` or raise ``ProofError`` with the reason, never
  another exception type and never a silent pass.

Sizes are RFC 9162 ``tree_size`` values, hence at most 2^64 - 1.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hmac import compare_digest
from typing import Protocol, SupportsIndex, cast

from blake3 import blake3

from auditor.protocol.errors import ProofError

__all__ = [
    "BLAKE3",
    "MAX_SIZE",
    "SHA256",
    "Hasher",
    "MerkleTree",
    "consistency_proof_length",
    "inclusion_proof_length",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
MAX_SIZE = (1 << 64) - 1  # RFC 9162 §4 encodes tree_size and leaf_index as uint64
_DIGEST = operator.methodcaller("digest")


class _State(Protocol):
    def update(self, data: bytes, /) -> object: ...
    def digest(self) -> bytes: ...


class _ReusableState(_State, Protocol):
    def reset(self) -> None: ...


@dataclass(frozen=True)
class Hasher:
    """A hash function with its digest size, and the RFC 9162 §2.1.1 leaf/node hashing built on it.

    ``new(data)`` returns a hashlib-style state; ``reusable`` says the state has ``reset()``, so that hot
    loops can reuse one state per call instead of allocating one per hash (faster for BLAKE3).
    """

    name: str
    digest_size: int
    new: Callable[[bytes], _State]
    reusable: bool = False

    def hash(self, data: bytes) -> bytes:
        return self.new(data).digest()

    def empty_root(self) -> bytes:
        """MTH({}) = HASH() — RFC 9162 §2.1.1."""
        return self.new(b"").digest()

    def hash_leaf(self, leaf_data: bytes) -> bytes:
        """HASH(0x00 || leaf_data) — RFC 9162 §2.1.1."""
        return self.new(LEAF_PREFIX + leaf_data).digest()

    def hash_children(self, left: bytes, right: bytes) -> bytes:
        """HASH(0x01 || left || right) — RFC 9162 §2.1.1."""
        return self.new(NODE_PREFIX + left + right).digest()

    def hash_leaves(self, leaves: Iterable[bytes]) -> list[bytes]:
        """``[hash_leaf(d) for d in leaves]``, fast."""
        prefixed = map(LEAF_PREFIX.__add__, leaves)
        if not self.reusable:  # all in C: one state per leaf
            return list(map(_DIGEST, map(self.new, prefixed)))
        return list(map(self.digester(), prefixed))

    def digester(self) -> Callable[[bytes], bytes]:
        """A one-shot ``data -> digest`` for hot loops; owns a private state (use within one call)."""
        if not self.reusable:
            new = self.new
            return lambda data: new(data).digest()
        state = cast(_ReusableState, self.new(b""))
        reset, update, digest = state.reset, state.update, state.digest

        def one_shot(data: bytes) -> bytes:
            reset()
            update(data)
            return digest()

        return one_shot


BLAKE3 = Hasher("blake3", 32, blake3, reusable=True)
SHA256 = Hasher("sha256", 32, hashlib.sha256)


# --------------------------------------------------------------------------------------------- building


def _checked_leaf_hashes(leaf_hashes: Iterable[bytes], hasher: Hasher) -> list[bytes]:
    try:
        level = list(leaf_hashes)
    except TypeError:
        what = type(leaf_hashes).__name__
        raise ProofError(f"leaf hashes: expected a sequence of bytes, got {what}") from None
    if len(level) > MAX_SIZE:  # pragma: no cover - cannot be allocated
        raise ProofError("leaf hashes: more than 2^64 - 1 leaves")
    if set(map(type, level)) - {bytes}:
        i = next(i for i, h in enumerate(level) if type(h) is not bytes)
        raise ProofError(f"leaf hashes[{i}]: expected bytes, got {type(level[i]).__name__}")
    if set(map(len, level)) - {hasher.digest_size}:
        i = next(i for i, h in enumerate(level) if len(h) != hasher.digest_size)
        raise ProofError(f"leaf hashes[{i}]: expected {hasher.digest_size} bytes, got {len(level[i])}")
    return level


def _parents(level: list[bytes], hasher: Hasher) -> list[bytes]:
    """The level above: nodes 2j and 2j+1 hashed together, a lone last node promoted unchanged.

    Promotion gives exactly RFC 9162 §2.1.1's tree: node j at height h is MTH(D[j·2^h : min((j+1)·2^h, n)]).
    """
    lefts, rights = level[0::2], level[1::2]
    prefix = NODE_PREFIX
    if hasher.reusable:
        state = cast(_ReusableState, hasher.new(b""))
        reset, update, digest = state.reset, state.update, state.digest
        parents: list[bytes] = []
        append = parents.append
        for left, right in zip(lefts, rights, strict=False):
            reset()
            update(prefix + left + right)
            append(digest())
    else:
        new = hasher.new
        parents = [new(prefix + left + right).digest() for left, right in zip(lefts, rights, strict=False)]
    if len(level) & 1:
        parents.append(level[-1])
    return parents


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes], hasher: Hasher = BLAKE3) -> bytes:
    """MTH of the given leaf hashes (RFC 9162 §2.1.1), without keeping the levels."""
    level = _checked_leaf_hashes(leaf_hashes, hasher)
    if not level:
        return hasher.empty_root()
    while len(level) > 1:
        level = _parents(level, hasher)
    return level[0]


class MerkleTree:
    """An RFC 9162 tree built once from its leaf hashes, keeping every level for O(log n) proofs.

    Level h is stored as one ``bytes`` of concatenated digests (half the memory of a list of ``bytes``).
    """

    __slots__ = ("_ds", "_hasher", "_levels", "_root", "_size")

    def __init__(self, leaf_hashes: Sequence[bytes], hasher: Hasher = BLAKE3) -> None:
        level = _checked_leaf_hashes(leaf_hashes, hasher)
        self._hasher = hasher
        self._ds = hasher.digest_size
        self._size = len(level)
        self._levels: list[bytes] = [b"".join(level)]
        while len(level) > 1:
            level = _parents(level, hasher)
            self._levels.append(b"".join(level))
        self._root = level[0] if level else hasher.empty_root()

    @property
    def size(self) -> int:
        return self._size

    @property
    def root(self) -> bytes:
        return self._root

    @property
    def hasher(self) -> Hasher:
        return self._hasher

    def leaf_hash(self, index: int) -> bytes:
        index = _check_index(index, self._size)
        return self._node(0, index)

    def _node(self, height: int, j: int) -> bytes:
        ds = self._ds
        return self._levels[height][j * ds : (j + 1) * ds]

    def _range_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]), for ranges the RFC's recursion reaches (start aligned to the split)."""
        width = end - start
        if width == 0:
            return self._hasher.empty_root()
        height = (width - 1).bit_length()  # smallest h with 2^h >= width
        if start & ((1 << height) - 1) == 0 and min(start + (1 << height), self._size) == end:
            return self._node(height, start >> height)  # a stored node covers exactly this range
        k = 1 << (height - 1)  # largest power of two < width
        left, right = self._range_root(start, start + k), self._range_root(start + k, end)
        return self._hasher.hash_children(left, right)

    def root_at(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves: the root this tree had at that size (for append-only logs)."""
        size = _check_size(size, "size", upper=self._size)
        return self._root if size == self._size else self._range_root(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf to root.

        ``size`` defaults to the whole tree; a smaller one proves against ``root_at(size)``.
        """
        size = self._size if size is None else _check_size(size, "size", upper=self._size)
        index = _check_index(index, size)
        ds = self._ds
        if size == self._size:  # walk up the stored levels; a promoted node has no sibling
            proof: list[bytes] = []
            j = index
            for buf in self._levels[:-1]:
                s = (j ^ 1) * ds
                if s < len(buf):
                    proof.append(buf[s : s + ds])
                j >>= 1
            return proof
        siblings: list[bytes] = []  # RFC 9162 §2.1.3.1 recursion, collected root to leaf
        start, end = 0, size
        while end - start > 1:
            k = 1 << ((end - start - 1).bit_length() - 1)
            if index < start + k:
                siblings.append(self._range_root(start + k, end))
                end = start + k
            else:
                siblings.append(self._range_root(start, start + k))
                start += k
        siblings.reverse()
        return siblings

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (``new_size`` defaults to the tree size).

        Empty when ``old_size`` is 0 (every tree extends the empty one: our choice, the RFC leaves it
        undefined) or equals ``new_size``.
        """
        new = self._size if new_size is None else _check_size(new_size, "new size", upper=self._size)
        m = _check_size(old_size, "old size", upper=new)
        if m in (0, new):
            return []
        # SUBPROOF(m, D[start:start+width], complete), unrolled; siblings collected root to leaf.
        start, width, complete = 0, new, True
        siblings: list[bytes] = []
        while m != width:
            k = 1 << ((width - 1).bit_length() - 1)
            if m <= k:
                siblings.append(self._range_root(start + k, start + width))
                width = k
            else:
                siblings.append(self._range_root(start, start + k))
                start, m, width, complete = start + k, m - k, width - k, False
        siblings.reverse()
        return siblings if complete else [self._range_root(start, start + width), *siblings]


# ----------------------------------------------------------------------------------------- verification


def _as_int(value: object, what: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise ProofError(f"{what}: expected an integer, got {type(value).__name__}")
    try:
        return operator.index(value)
    except Exception as exc:  # a broken __index__
        raise ProofError(f"{what}: expected an integer ({exc})") from None


def _check_size(value: object, what: str, upper: int = MAX_SIZE) -> int:
    size = _as_int(value, what)
    if size < 0:
        raise ProofError(f"{what} {size} is negative")
    if size > upper:
        limit = "2^64 - 1 (RFC 9162 tree_size)" if upper == MAX_SIZE else str(upper)
        raise ProofError(f"{what} {size} exceeds {limit}")
    return size


def _check_index(value: object, size: int) -> int:
    index = _as_int(value, "index")
    if size == 0:
        raise ProofError("the empty tree has no leaves, hence no inclusion proofs")
    if not 0 <= index < size:
        raise ProofError(f"index {index} outside [0, {size})")
    return index


def _check_hash(value: object, what: str, hasher: Hasher) -> bytes:
    if type(value) is not bytes:
        raise ProofError(f"{what}: expected bytes, got {type(value).__name__}")
    if len(value) != hasher.digest_size:
        raise ProofError(f"{what}: expected {hasher.digest_size} bytes ({hasher.name}), got {len(value)}")
    return value


def _check_proof(
    proof: object, expected_length: int, hasher: Hasher, shape: str, *args: int
) -> Sequence[bytes]:
    """``proof``, checked to be a sequence of ``expected_length`` hashes of the right size."""
    if type(proof) is not list and (
        isinstance(proof, str | bytes | bytearray | memoryview) or not isinstance(proof, Sequence)
    ):
        raise ProofError(f"proof: expected a sequence of hashes, got {type(proof).__name__}")
    if len(proof) != expected_length:
        raise ProofError(
            f"proof has {len(proof)} hashes, expected {expected_length} for {shape.format(*args)}"
        )
    ds = hasher.digest_size
    for p in proof:
        if type(p) is not bytes or len(p) != ds:
            for i, q in enumerate(proof):
                _check_hash(q, f"proof[{i}]", hasher)
    return cast(Sequence[bytes], proof)


def inclusion_proof_length(index: int, size: int) -> int:
    """Length of the RFC 9162 §2.1.3.1 audit path of leaf ``index`` in a tree of ``size`` leaves.

    ``inner`` levels where the leaf's subtree is complete, plus one per left sibling on the right
    border above them (transparency-dev's ``decompInclProof``).
    """
    size = _check_size(size, "size")
    index = _check_index(index, size)
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """Length of the RFC 9162 §2.1.4.1 consistency proof from ``old_size`` to ``new_size`` leaves."""
    new = _check_size(new_size, "new size")
    old = _check_size(old_size, "old size", upper=new)
    if old in (0, new):
        return 0
    inner = ((old - 1) ^ (new - 1)).bit_length()
    border = ((old - 1) >> inner).bit_count()
    shift = (old & -old).bit_length() - 1  # trailing zeros: the old tree's rightmost complete subtree
    return (0 if old == 1 << shift else 1) + inner - shift + border


def verify_inclusion(
    leaf_hash: bytes,
    index: int,
    size: int,
    proof: Sequence[bytes],
    root: bytes,
    hasher: Hasher = BLAKE3,
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the ``size``-leaf tree with ``root`` (RFC 9162 §2.1.3.2).

    Raises ``ProofError`` on any out-of-range or malformed input, a proof of the wrong length for
    (index, size), or a recomputed root that differs.

    The RFC's loop over (fn, sn) = (index, size - 1) is run in its closed form (transparency-dev's
    ``decompInclProof``/``chainInner``/``chainBorderRight``): for the first ``inner`` steps, where the leaf's
    subtree is complete, the running hash is the left child iff bit i of ``index`` is 0; every later step
    is on the right border, where the sibling is on the left. The RFC's failures "sn reaches 0 before the
    end" and "sn is not 0 at the end" are exactly a proof length other than ``inner + border``, rejected
    first. tests/unit/test_merkle.py checks this against a literal transcription of the RFC's loop.
    """
    size = _check_size(size, "size")
    index = _check_index(index, size)
    inner = (index ^ (size - 1)).bit_length()
    path = _check_proof(proof, inner + (index >> inner).bit_count(), hasher, "index {} of {}", index, size)
    _check_hash(leaf_hash, "leaf hash", hasher)
    _check_hash(root, "root", hasher)
    # The hot loop, in two versions: one reused state (BLAKE3), or one state per hash (hashlib).
    prefix, r, bits, inner_path, border_path = NODE_PREFIX, leaf_hash, index, path[:inner], path[inner:]
    if hasher.reusable:
        state = cast(_ReusableState, hasher.new(b""))
        reset, update, digest = state.reset, state.update, state.digest
        for p in inner_path:
            reset()
            update(prefix + p + r if bits & 1 else prefix + r + p)
            r = digest()
            bits >>= 1
        for p in border_path:
            reset()
            update(prefix + p + r)
            r = digest()
    else:
        new = hasher.new
        for p in inner_path:
            r = new(prefix + p + r if bits & 1 else prefix + r + p).digest()
            bits >>= 1
        for p in border_path:
            r = new(prefix + p + r).digest()
    if not compare_digest(r, root):
        raise ProofError(f"inclusion proof for index {index} of {size} does not lead to the root")


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
    hasher: Hasher = BLAKE3,
) -> None:
    """Check that the ``new_size`` tree with ``new_root`` extends the ``old_size`` one (RFC 9162 §2.1.4.2).

    Edge cases, where the RFC defines no proof: ``old_size == 0`` takes an empty proof and requires
    ``old_root`` to be the empty tree's root HASH(); ``old_size == new_size`` takes an empty proof and
    requires equal roots. ``old_size > new_size`` is rejected.
    """
    new = _check_size(new_size, "new size")
    old = _check_size(old_size, "old size", upper=new)
    path = list(_check_proof(proof, consistency_proof_length(old, new), hasher, "sizes {} -> {}", old, new))
    _check_hash(old_root, "old root", hasher)
    _check_hash(new_root, "new root", hasher)
    if old == 0:
        if not compare_digest(old_root, hasher.empty_root()):
            raise ProofError("old root of the empty tree must be the hash of the empty string")
        if new == 0 and not compare_digest(new_root, old_root):
            raise ProofError("new root of the empty tree must be the hash of the empty string")
        return
    if old == new:
        if not compare_digest(old_root, new_root):
            raise ProofError(f"trees of the same size {old} with different roots")
        return
    if old & (old - 1) == 0:  # step 2: an exact power of two is its own first subtree
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    node, prefix = hasher.digester(), NODE_PREFIX
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # pragma: no cover - ruled out by the length check; kept as in the RFC
            raise ProofError("consistency proof is longer than the path")
        if fn & 1 or fn == sn:
            fr = node(prefix + c + fr)
            sr = node(prefix + c + sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(prefix + sr + c)
        fn >>= 1
        sn >>= 1
    if sn != 0:  # pragma: no cover - ruled out by the length check; kept as in the RFC
        raise ProofError("consistency proof is shorter than the path")
    if not compare_digest(fr, old_root):
        raise ProofError(f"consistency proof {old} -> {new} does not lead to the old root")
    if not compare_digest(sr, new_root):
        raise ProofError(f"consistency proof {old} -> {new} does not lead to the new root")

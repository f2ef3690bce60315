"""What the RFC 9162 tree does and does not bind, against CoIn's padded tree (DESIGN §3 "Tree", "Leaf").

Model of a cheating provider: it holds a real tree of m leaf hashes, publishes its root, claims a size
m' > m, and must open indices of [0, m'). With a collision-resistant H and leaf/node domain separation,
every intermediate hash the verifier recomputes must be a node of the real tree, so there is exactly one
candidate proof per (index, claimed size): walk the real tree from its root following the verifier's
left/right pattern for (index, m') (`forge`). The opening succeeds iff that walk ends on a real *leaf*
exactly when the pattern ends; it then opens real leaf j, which may differ from the claimed index.
"""

from __future__ import annotations

import pytest
from blake3 import blake3

from auditor.protocol.errors import ProofError
from auditor.protocol.merkle import BLAKE3, MerkleTree, inclusion_proof_length, verify_inclusion


def H(data: bytes) -> bytes:
    return blake3(data).digest()


def _k(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def mth(lh: list[bytes]) -> bytes:
    return MerkleTree(lh).root


def leaves(n: int) -> list[bytes]:
    return [BLAKE3.hash_leaf(b"leaf %d" % i) for i in range(n)]


# ------------------------------------------------------------------------------------ CoIn-style tree


def coin_level0(data: list[bytes], separate: bool) -> list[bytes]:
    return [H((b"\x00" if separate else b"") + d) for d in data]


def coin_root(data: list[bytes], *, separate: bool = False) -> bytes:
    """CoIn's commitment: leaf = H(d), node = H(l || r) (no domain separation), and the leaves padded to
    the next power of two by duplicating the last one. `separate=True` keeps the padding but adds RFC 9162's
    0x00/0x01 prefixes, to show that the padding alone already changes the root."""
    level = coin_level0(data, separate)
    while len(level) & (len(level) - 1):
        level.append(level[-1])
    while len(level) > 1:
        p = b"\x01" if separate else b""
        level = [H(p + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def coin_proof(data: list[bytes], index: int) -> list[bytes]:
    level = coin_level0(data, False)
    while len(level) & (len(level) - 1):
        level.append(level[-1])
    proof = []
    while len(level) > 1:
        proof.append(level[index ^ 1])
        level = [H(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        index >>= 1
    return proof


def coin_verify(leaf_data: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """A CoIn-style verifier: a perfect tree of the next power of two >= size."""
    if not 0 <= index < size or len(proof) != (size - 1).bit_length():
        return False
    r = H(leaf_data)
    for p in proof:
        r = H(p + r) if index & 1 else H(r + p)
        index >>= 1
    return r == root


def test_coin_padding_changes_the_root_except_at_powers_of_two() -> None:
    for n in range(1, 70):
        data = [b"d%d" % i for i in range(n)]
        ours = MerkleTree(BLAKE3.hash_leaves(data)).root
        assert coin_root(data, separate=False) != ours  # CoIn as published: differs everywhere
        # same prefixes, padding only: equal exactly for powers of two
        assert (coin_root(data, separate=True) == ours) == (n & (n - 1) == 0), n


def test_cve_2012_2459_in_coin_tree_and_not_in_ours() -> None:
    a, b, c = b"a", b"b", b"c"
    # CoIn: the padded 3-leaf tree IS the 4-leaf tree [a, b, c, c] ...
    assert coin_root([a, b, c]) == coin_root([a, b, c, c])
    # ... so a provider with 3 leaves claims 4 and opens the 4th (index 3) with a valid proof.
    root3 = coin_root([a, b, c])
    assert coin_verify(c, 3, 4, coin_proof([a, b, c], 3), root3)
    # RFC 9162: no duplication, so the two trees differ ...
    assert mth(BLAKE3.hash_leaves([a, b, c])) != mth(BLAKE3.hash_leaves([a, b, c, c]))
    # ... and index 3 of a claimed 4 cannot be opened against the 3-leaf root (not even bare: see forge)
    lh = BLAKE3.hash_leaves([a, b, c])
    assert forge(lh, 3, 4) is None
    for j in range(3):  # no real leaf with any proof of the right length taken from the real tree
        for proof in (MerkleTree(lh).inclusion_proof(j), MerkleTree([*lh, lh[2]]).inclusion_proof(3)):
            with pytest.raises(ProofError):
                verify_inclusion(lh[j], 3, 4, proof, mth(lh))


def test_coin_padding_lets_a_provider_nearly_double_its_count() -> None:
    """5 real leaves pad to 8: CoIn accepts every index of a claimed 8 (60% inflation); ours none >= 5."""
    data = [b"t%d" % i for i in range(5)]
    root = coin_root(data)
    padded = [*data, data[-1], data[-1], data[-1]]
    assert all(coin_verify(padded[i], i, 8, coin_proof(data, i), root) for i in range(8))
    lh = BLAKE3.hash_leaves(data)
    opened = {i: f[0] for i in range(8) if (f := forge(lh, i, 8)) is not None}
    assert opened == {0: 0, 1: 1, 2: 2, 3: 3}


def test_domain_separation_inner_node_is_not_a_leaf() -> None:
    lh = leaves(4)
    tree = MerkleTree(lh)
    n01, n23 = BLAKE3.hash_children(lh[0], lh[1]), BLAKE3.hash_children(lh[2], lh[3])
    # Present the inner node n01 as a leaf one level up: "a 2-leaf tree [n01, n23]" with the same root.
    # Its leaf data would be the children's concatenation; the verifier hashes leaf data as H(0x00 || .).
    forged_leaf = BLAKE3.hash_leaf(lh[0] + lh[1])
    assert forged_leaf != n01
    with pytest.raises(ProofError, match="does not lead to the root"):
        verify_inclusion(forged_leaf, 0, 2, [n23], tree.root)
    # A verifier that took raw hashes instead of leaf data could not tell: bare RFC 9162 accepts the node.
    verify_inclusion(n01, 0, 2, [n23], tree.root)
    # CoIn (no prefixes): leaf data l || r hashes to exactly the node, so the 2-leaf claim verifies.
    c = coin_level0([b"w", b"x", b"y", b"z"], False)
    coin_n01, coin_n23 = H(c[0] + c[1]), H(c[2] + c[3])
    assert coin_verify(c[0] + c[1], 0, 2, [coin_n23], H(coin_n01 + coin_n23))
    assert H(coin_n01 + coin_n23) == coin_root([b"w", b"x", b"y", b"z"])


# ------------------------------------------------------------------------ over-claiming the bare tree


def directions(index: int, size: int) -> list[bool]:
    """RFC 9162 §2.1.3.2's pattern, leaf to root: True where the running hash is the left child."""
    fn, sn, out = index, size - 1, []
    for _ in range(inclusion_proof_length(index, size)):
        left = not (fn & 1 or fn == sn)
        out.append(left)
        if not left:
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
    return out


_MEMO: dict[tuple[bytes, int, int], bytes] = {}


def range_mth(lh: list[bytes], start: int, end: int) -> bytes:
    """MTH(lh[start:end]) by the RFC 9162 §2.1.1 recursion, memoized on (first leaf, start, end)."""
    key = (lh[0], start, end)
    if key not in _MEMO:
        if end - start == 1:
            _MEMO[key] = lh[start]
        else:
            k = _k(end - start)
            _MEMO[key] = BLAKE3.hash_children(range_mth(lh, start, start + k), range_mth(lh, start + k, end))
    return _MEMO[key]


def forge(lh: list[bytes], index: int, claimed: int) -> tuple[int, list[bytes]] | None:
    """The only candidate opening of (index, claimed) against MTH(lh): (real leaf position, proof)."""
    start, end, siblings = 0, len(lh), []
    for left in reversed(directions(index, claimed)):  # root to leaf
        if end - start == 1:
            return None  # the real tree reached a leaf, the claimed one goes deeper: a leaf is no node
        k = _k(end - start)
        if left:
            siblings.append(range_mth(lh, start + k, end))
            end = start + k
        else:
            siblings.append(range_mth(lh, start, start + k))
            start += k
    if end - start != 1:
        return None  # the pattern ends on a real inner node: no leaf data hashes to it (0x00 vs 0x01)
    return start, siblings[::-1]


def test_three_leaves_claimed_as_five() -> None:
    """Bare RFC 9162 fact: the leaf hash of position 2 in a 3-leaf tree verifies as index 4 of a 5-leaf tree
    with the same root, with the very proof of (2, 3).

    Root(3) = H(0x01 || N01 || L2) and Root(5) = H(0x01 || N0123 || L4) have the same shape on their right
    border: one left sibling, then the leaf. The verifier of (4, 5) computes H(0x01 || p || leaf), and
    p = N01, leaf = L2 gives Root(3). A root does not encode its size, and a bare leaf hash does not encode
    its position. That is why DESIGN §3 puts the index inside the leaf (leaf_data = u64(i) || salt || fp):
    the leaf at position 2 then hashes u64(2), the verifier of index 4 recomputes the leaf hash from
    u64(4) || ..., and the opening fails. The binding itself lives in the commitment module.
    """
    lh = leaves(3)
    tree = MerkleTree(lh)
    proof = tree.inclusion_proof(2)
    assert proof == [BLAKE3.hash_children(lh[0], lh[1])]
    assert inclusion_proof_length(4, 5) == 1
    verify_inclusion(lh[2], 4, 5, proof, tree.root)  # it verifies: documented, not a bug of the tree
    # and it is the only index of [0, 5) that can be opened at all; none with its own leaf
    opened = {i: f[0] for i in range(5) if (f := forge(lh, i, 5)) is not None}
    assert opened == {4: 2}
    for i in range(4):  # indices 0..3 need depth 3 under a left child that has depth 1 in the real tree
        with pytest.raises(ProofError):
            verify_inclusion(lh[min(i, 2)], i, 5, tree.inclusion_proof(min(i, 2)), tree.root)


def test_five_claimed_as_six_fails_on_the_right_border() -> None:
    lh = leaves(5)
    tree = MerkleTree(lh)
    opened = {i: f[0] for i in range(6) if (f := forge(lh, i, 6)) is not None}
    assert opened == {0: 0, 1: 1, 2: 2, 3: 3}  # index 4 (< m, on the right border) and 5 (>= m) fail
    for i in range(4):  # a proof for (i, 5) also verifies as (i, 6) against the same root
        verify_inclusion(lh[i], i, 6, tree.inclusion_proof(i), tree.root)
    with pytest.raises(ProofError):
        verify_inclusion(lh[4], 4, 6, tree.inclusion_proof(4), tree.root)


@pytest.mark.parametrize("m", range(1, 41))
def test_overclaim_openings_exactly(m: int) -> None:
    """For every claimed m' in (m, 80]: the openings a provider can make, bare and with the index bound.

    - Every forged opening found really verifies (the model is not vacuous), and those it rules out fail
      with the real tree's own proofs.
    - With the index bound in the leaf (real position j must equal the claimed index), no index >= m opens,
      and an index i < m opens iff its audit path has the same shape in trees of m and m' leaves, i.e. iff
      the proof of (i, m) itself verifies as (i, m').
    - The failing indices below m are a suffix [p, m): those whose path runs along the real tree's right
      border, below the last split that the two sizes share.
    """
    lh = leaves(m)
    tree = MerkleTree(lh)
    for claimed in range(m + 1, 81):
        bound: set[int] = set()
        for i in range(claimed):
            f = forge(lh, i, claimed)
            if f is not None:
                j, proof = f
                verify_inclusion(lh[j], i, claimed, proof, tree.root)
                if j == i:
                    bound.add(i)
            same_shape = i < m and directions(i, m) == directions(i, claimed)
            assert (i in bound) == same_shape, (m, claimed, i)
            if i < m:
                try:
                    verify_inclusion(lh[i], i, claimed, tree.inclusion_proof(i), tree.root)
                    honest_ok = True
                except ProofError:
                    honest_ok = False
                assert honest_ok == same_shape, (m, claimed, i)
        assert all(i < m for i in bound)
        p = len(bound)
        assert bound == set(range(p)), (m, claimed, bound)  # failing indices below m: the suffix [p, m)


def test_overclaim_suffix_examples() -> None:
    def first_failing(m: int, claimed: int) -> int:
        lh = leaves(m)
        return min(i for i in range(claimed) if (f := forge(lh, i, claimed)) is None or f[0] != i)

    assert first_failing(3, 5) == 0  # nothing opens: every challenge fails
    assert first_failing(5, 6) == 4
    assert first_failing(6, 7) == 4  # [4, 6) is the root's right child in 6 leaves, one level deeper in 7
    # a complete real tree is one subtree at the root, the claimed one has it one level down: all fail
    assert first_failing(8, 9) == 0
    assert first_failing(8, 20) == 0
    assert first_failing(12, 13) == 8  # [0, 8) is the left child in both; [8, 12) is deeper in 13
    assert first_failing(12, 16) == 8
    assert first_failing(12, 17) == 0  # 17 splits at 16, deeper than the real left child [0, 8)
    assert first_failing(13, 14) == 12
    assert first_failing(1000, 1001) == 992
    assert first_failing(1000, 1100) == 0

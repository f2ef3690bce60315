"""Re-tokenization evidence of check 7 (DESIGN §3): is a revealed adjacent pair of tokens one that the
declared tokenizer would have written as a single token?

Byte-level BPE (tiktoken) merges inside one pre-tokenizer chunk until no adjacent pair concatenates to a
vocabulary token, so an honest pair (a, b) with a + b in the vocabulary can only sit across a chunk
boundary of the pre-tokenizer regex — whitespace runs before a digit, a punctuation run before letters
(docs/protocol.md, measured over every pair of 5,111 traces). Two tests, of two strengths:

- `merges_when_retokenized`: a + b alone is one token. Honest text does this across chunk boundaries
  (about 1 pair in 2,000), so it is statistical evidence only.
- `proves_split`: a + b is one token and, written inside every context of `CONTEXTS`, the tokenizer
  never puts a token boundary between a and b — no chunk boundary can fall there, so no honest
  tokenization has this pair. It fired on none of the 8.76 M honest pairs nor 3.58 M perturbed ones,
  and catches 85% of the pairs a re-tokenization attack creates: proof.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from auditor.protocol.tokenize import Tokenizer


def merges_when_retokenized(first: bytes, second: bytes, tokenizer: Tokenizer) -> bool:
    """True when the tokenizer would write `first + second` as a single token: the provider may have
    split a token the tokenizer does not split. Pairs that are not whole UTF-8 text cannot be
    re-tokenized as text and count as not merging."""
    try:
        text = (first + second).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(tokenizer.tokenize(text)) == 1


# Contexts the auditor writes a revealed pair into (`proves_split`). Left: nothing, each character
# class of the pre-tokenizer (whitespace, letters, CJK, digits, punctuation, a combining mark), rare
# punctuation that BPE does not merge with what follows, multi-character punctuation runs, and the
# contraction prefixes ('s 't 're 've 'm 'll 'd, any case) that can end a chunk inside a letter run.


@dataclass(frozen=True)
class Contexts:
    left: tuple[str, ...]
    right: tuple[str, ...]


CONTEXTS = Contexts(
    left=(
        *("", " ", "\t", "\n", "a", "é", "中", "1", "\u0301"),
        *(".", "(", "$", "~", "§", "¬", "->", "}{"),
        *("'", "'r", "'v", "'l", "'R", "'V", "'L"),
    ),
    right=("", " ", "\n", "a", "中", "1", ".", "(", "'", "§", "¬"),
)
SplitRule = Literal["pair", "clean", "boundary"]


def _boundary_seen(tokens: Sequence[bytes], start: int, cut: int, end: int, rule: SplitRule) -> bool:
    """Does this tokenization of context + a + b + context (a at [start, cut), b at [cut, end)) show
    the boundary between a and b the way `rule` asks?"""
    offset = 0
    for left, right in pairwise(tokens):
        offset += len(left)
        if offset < cut:
            continue
        if offset > cut:
            return False
        left_start, right_end = offset - len(left), offset + len(right)
        if rule == "boundary":
            return True
        if rule == "clean":
            return left_start >= start and right_end <= end
        return left_start == start and right_end == end
    return False


def proves_split(
    first: bytes,
    second: bytes,
    tokenizer: Tokenizer,
    rule: SplitRule = "boundary",
    contexts: Contexts = CONTEXTS,
) -> bool:
    """True when the adjacent pair (first, second) cannot come from honest tokenization: first + second
    is one vocabulary token and, written inside every (left, right) context of `contexts`, the
    tokenizer never shows the boundary between them. What counts as showing it:

    - `boundary`: any token boundary at that offset (the conservative rule);
    - `clean`: a boundary whose two neighbouring tokens lie inside first and inside second;
    - `pair`: first and second themselves come back as two tokens.

    A pair that is not whole UTF-8 text cannot be written into a context and never proves a split."""
    if not tokenizer.is_token(first + second):
        return False
    try:
        text = (first + second).decode("utf-8")
    except UnicodeDecodeError:
        return False
    for left in contexts.left:
        start = len(left.encode("utf-8"))
        cut, end = start + len(first), start + len(first) + len(second)
        for right in contexts.right:
            if _boundary_seen(tokenizer.tokenize(left + text + right), start, cut, end, rule):
                return False
    return True

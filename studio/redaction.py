"""Personal data and secrets replaced by typed placeholders (`data.redact`): `<EMAIL>`, `<PHONE>`, ... or, numbered
within a document (`data.redact_numbered`), `<EMAIL_1>`, `<EMAIL_2>`, the same value keeping its number.

`DETECTORS` is the one table: a kind, the pattern of its candidates and the check a candidate must pass (a card's
Luhn digit, an IBAN's mod-97, a Chinese resident ID's ISO 7064 check digit and birth date, an SSN's excluded
ranges, an IPv6 address parsed). Patterns only find candidates; the checks are the facts that keep order numbers,
version strings, dates and numbers of the right shape but the wrong check digit out. Where candidates of several
kinds overlap, the kind listed first wins (a URL's credentials before the e-mail address they look like, a resident ID
before a card number of its length, a card before a phone number).

No library is used: presidio needs spaCy models (not installable offline) and scrubadub 2.0.1 finds e-mails,
phones (through the `phonenumbers` package) and a few credentials, without IBANs, Chinese IDs or most token
prefixes; the formats and checksums are published facts, written here once and tested on planted data.

A document streams through in pieces (`StreamRedactor`); every pattern but a private-key block stays within a
line, and pieces end at line breaks (studio.data.clean; only a line over 64 Ki characters is cut inside, where a
value could be split), so only an open `-----BEGIN ... PRIVATE KEY-----` block is held back until its end arrives.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from studio.errors import StudioError

PREVIEW_SIZE = 20  # redactions kept as a preview, with their context
PREVIEW_CONTEXT = 30  # characters of context either side of a preview's placeholder
PEM_HOLD_LIMIT = 1 << 20  # characters an unclosed private-key block is held back before it is given up on


# ---- the checks -----------------------------------------------------------------------------------
def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def luhn_valid(number: str) -> bool:
    """The Luhn check of a payment card number (ISO/IEC 7812): the doubled-digit sum ends in 0."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


# The issuer prefixes of the card networks (Visa 4; Mastercard 51-55 and 2221-2720; Amex 34, 37; Discover 6011,
# 644-649, 65; JCB 3528-3589; Diners 36, 300-305, 38-39; UnionPay 62; Maestro 50, 56-58, 6x), with their lengths.
CARD_PREFIX = re.compile(r"4|5[0-8]|2[2-7]|3[4-9]|30[0-5]|6")


def card_valid(text: str) -> bool:
    number = _digits(text)
    return 13 <= len(number) <= 19 and bool(CARD_PREFIX.match(number)) and luhn_valid(number)


# IBAN lengths by country (the SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(text: str) -> bool:
    """ISO 13616: the country's length, and the number (country and check digits moved to the end, letters as
    10..35) is 1 modulo 97."""
    iban = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CN_ID_CHECK = "10X98765432"  # the check character for each sum modulo 11 (ISO 7064 MOD 11-2)


def cn_id_valid(text: str) -> bool:
    """GB 11643-1999: a real birth date (the pattern bounds month and day; February 30 is refused here) and the
    check character."""
    body, check = text[:17], text[17].upper()
    year, month, day = int(text[6:10]), int(text[10:12]), int(text[12:14])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    total = sum(int(digit) * weight for digit, weight in zip(body, CN_ID_WEIGHTS))
    return day <= days and CN_ID_CHECK[total % 11] == check


def ipv4_valid(text: str) -> bool:
    """Four numbers of 0-255, none written with a leading zero."""
    return all(int(part) <= 255 and (part == "0" or not part.startswith("0")) for part in text.split("."))


def ipv6_valid(text: str) -> bool:
    """A parsed IPv6 address of three groups or more: `::`, `::2` or `1::2` are slices in code, not addresses."""
    if sum(1 for group in text.split("%")[0].split(":") if group) < 3:
        return False
    try:
        ipaddress.IPv6Address(text.split("%")[0])
    except ValueError:
        return False
    return True


def phone_valid(text: str) -> bool:
    """E.164 allows at most 15 digits; fewer than 8 is a number of another kind."""
    return 8 <= len(_digits(text)) <= 15


DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def assigned_secret(value: str) -> bool:
    """A bare value assigned to a password or key looks like one: a digit or a symbol in it, or both cases (in code,
    `password = user`, `passwd=netrcobj` or `pwd = self.pwd` assign a name, not a secret)."""
    if DOTTED_NAME.fullmatch(value):
        return False
    has_symbol = any(not char.isalnum() and char != "_" for char in value)
    return has_symbol or any(char.isdigit() for char in value) or (value.lower() != value != value.upper())


# ---- the table --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Detector:
    kind: str  # the type as `data.redact` names it; its placeholder is the kind in capitals
    pattern: re.Pattern
    check: Callable[[str], bool] | None = None  # None: the pattern is the whole rule
    # what must not come right before a match (searched in the two characters before it): the left edge, checked
    # here rather than by a lookbehind opening the pattern, so that the pattern opens with its first character's
    # class, which the regex engine skips ahead to (several times faster: most of the text is no candidate)
    not_after: re.Pattern | None = None
    # the part replaced: the pattern's named group where it has one (a password's value, not `password=`)


def _edge(characters: str) -> re.Pattern:
    """`not_after` for a character class: the character right before the match is not one of them."""
    return re.compile(f"{characters}$")


ALNUM, WORD = _edge("[A-Za-z0-9]"), _edge(r"\w")
_IBAN_COUNTRIES = "|".join(
    f"{country}\\d{{2}}(?: ?[A-Z0-9]){{{length - 4}}}" for country, length in IBAN_LENGTHS.items()
)
# password, passwd, pwd, passphrase, private_key, secret_key, api_key, apikey, access_key, access_token,
# auth_token, client_secret, in any case; the first letter outside the case-insensitive group, so that the engine
# skips ahead to it
_SECRET_NAMES = (
    r"[Pp](?i:ass(?:word|wd|phrase)|wd|rivate[_-]?key)|[Ss](?i:ecret[_-]?key)"
    r"|[Aa](?i:pi[_-]?key|pikey|ccess[_-]?(?:key|token)|uth[_-]?token)|[Cc](?i:lient[_-]?secret)"
)

DETECTORS: tuple[Detector, ...] = (
    # secrets: private-key blocks; cloud and code-host tokens by their documented prefixes (AWS access key ids,
    # GitHub classic and fine-grained, GitLab, Slack, OpenAI/Anthropic sk-, Stripe, Google API keys, Hugging Face,
    # npm, PyPI); credentials in a URL (scheme://user:password@host); assignments (password=..., "api_key": "...")
    Detector(
        "secret",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
            r"(?: BLOCK)?-----"
        ),
    ),
    Detector(
        "secret",
        re.compile(
            r"(?:(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}"
            r"|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}|glpat-[A-Za-z0-9_-]{20}"
            r"|xox[abposr]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{20,}"
            r"|AIza[A-Za-z0-9_-]{35}|hf_[A-Za-z]{34}|npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{20,})"
            r"(?![A-Za-z0-9])"
        ),
        not_after=ALNUM,
    ),
    Detector("secret", re.compile(r"://(?P<url>[^\s:/@]+:[^\s/@]+)@")),
    Detector(
        "secret",
        re.compile(
            rf"(?:{_SECRET_NAMES})\b[\"']?[ \t]*[:=][ \t]*"
            r"(?P<value>\"[^\"\n]+\"|'[^'\n]+'|[^\s,;\"'<>()\[\]{}]{6,}(?![(\[\w.]))"
        ),
        lambda value: value[0] in "\"'" or assigned_secret(value),
        WORD,
    ),
    Detector(
        "email",
        re.compile(
            r"[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
            r"[A-Za-z]{2,24}(?![\w-])"
        ),
        not_after=_edge(r"[\w.+-]"),
    ),
    Detector("iban", re.compile(rf"(?:{_IBAN_COUNTRIES})(?![A-Za-z0-9])"), iban_valid, ALNUM),
    Detector(
        "cn_id",
        re.compile(r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?!\w)"),
        cn_id_valid,
        WORD,
    ),
    Detector("card", re.compile(r"\d(?:[ -]?\d){12,18}(?!\w)"), card_valid, WORD),
    # SSNs as written (dashes or spaces): never area 000, 666 or 900-999, group 00 or serial 0000
    Detector(
        "ssn",
        re.compile(r"\d{3}(?<!000)(?<!666)(?<!9\d\d)([- ])(?!00)\d{2}\1(?!0000)\d{4}(?!\w)"),
        not_after=WORD,
    ),
    Detector("ip", re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?!\w|\.\d)"), ipv4_valid, _edge(r"[\w.]")),
    Detector(
        "ip",
        re.compile(r"[0-9A-Fa-f]{0,4}:(?:[0-9A-Fa-f]{0,4}:){1,6}(?:[0-9A-Fa-f]{1,4}|:)?(?:%[A-Za-z0-9]+)?(?![\w:])"),
        ipv6_valid,
        _edge(r"[\w:.]"),
    ),
    Detector(
        "phone",
        re.compile(
            r"(?:"
            # international: +country code, then groups
            r"\+\d{1,3}(?:[ -]?\(\d{1,4}\))?(?:[ -]?\d{1,4}){2,5}"
            # mainland-China mobiles: 1[3-9] and 9 more digits, grouped 3-4-4 or not
            r"|1[3-9]\d(?:[ -]?\d{4}){2}"
            # national: (area) or area with a separator, then 3-4 and 4 digits (US 415-555-0132, UK 020 7946 0958)
            r"|(?:\(\d{2,5}\)[ ]?|\d{3,5}[ .-])\d{3,4}[ .-]\d{4}"
            r")(?!\w|[ .-]\d)"
        ),
        phone_valid,
        _edge(r"(?:[\w+]|\d[ .-])"),  # never inside a longer run of digit groups (a card that failed its check)
    ),
)
KINDS = tuple(dict.fromkeys(detector.kind for detector in DETECTORS))


def redaction_kinds(text: str) -> tuple[str, ...]:
    """`data.redact` as kinds, in the table's order: "" none, "all" every kind, else names separated by commas;
    an unknown name is one line listing the kinds."""
    names = {name.strip().lower() for name in text.split(",") if name.strip()}
    if names == {"all"}:
        return KINDS
    unknown = sorted(names - set(KINDS))
    if unknown:
        raise StudioError(
            f"data.redact: unknown type {', '.join(map(repr, unknown))}; give 'all' or some of {', '.join(KINDS)}, "
            "separated by commas"
        )
    return tuple(kind for kind in KINDS if kind in names)


# ---- redacting -----------------------------------------------------------------------------------------
@dataclass
class Found:
    start: int
    end: int
    kind: str


def find_all(text: str, kinds: Iterable[str] = KINDS) -> list[Found]:
    """Every checked match of the kinds, earliest first, none overlapping (the table's order decides)."""
    starts: list[int] = []  # of the matches taken, sorted; `taken` in the same order
    taken: list[Found] = []
    wanted = set(kinds)
    for detector in DETECTORS:
        if detector.kind not in wanted:
            continue
        for match in detector.pattern.finditer(text):
            if detector.not_after and detector.not_after.search(text, max(match.start() - 2, 0), match.start()):
                continue
            group = next((name for name, value in match.groupdict().items() if value is not None), 0)
            start, end = match.span(group)
            if detector.check and not detector.check(match.group(group)):
                continue
            place = bisect.bisect(starts, start)
            overlaps = (place and taken[place - 1].end > start) or (place < len(taken) and taken[place].start < end)
            if not overlaps:
                starts.insert(place, start)
                taken.insert(place, Found(start, end, detector.kind))
    return taken


@dataclass
class RedactionFacts:
    """What redacting a dataset counted, for its meta.json: redactions per kind and the first ones in context."""

    counts: Counter = field(default_factory=Counter)
    preview: list[dict[str, str]] = field(default_factory=list)  # {kind, where, context}


class Redactor:
    """Replaces the kinds asked for in one document's text after another, counting them into `facts`."""

    def __init__(self, kinds: tuple[str, ...], numbered: bool, facts: RedactionFacts) -> None:
        self.kinds, self.numbered, self.facts = kinds, numbered, facts
        self.numbers: dict[tuple[str, str], int] = {}  # (kind, value) -> its number in the current document
        self.where = ""

    def new_document(self, where: str) -> None:
        """Numbers start again at 1 in each document; `where` names it in the preview."""
        self.numbers.clear()
        self.where = where

    def redact(self, text: str) -> str:
        found = find_all(text, self.kinds)
        if not found:
            return text
        parts, position, placed = [], 0, []  # placed: each placeholder's kind and where it starts in the result
        for item in found:
            placeholder = self._placeholder(item.kind, text[item.start : item.end])
            parts.append(text[position : item.start])
            placed.append((item.kind, sum(map(len, parts)), len(placeholder)))
            parts.append(placeholder)
            position = item.end
        parts.append(text[position:])
        redacted = "".join(parts)
        for kind, start, length in placed:
            self._count(kind, redacted, start, start + length)
        return redacted

    def _placeholder(self, kind: str, value: str) -> str:
        if not self.numbered:
            return f"<{kind.upper()}>"
        number = self.numbers.setdefault((kind, value), 1 + sum(1 for known in self.numbers if known[0] == kind))
        return f"<{kind.upper()}_{number}>"

    def _count(self, kind: str, redacted: str, start: int, end: int) -> None:
        """Counted, and while the preview has room, shown in its context (taken from the redacted text: a preview
        never shows a value)."""
        self.facts.counts[kind] += 1
        if len(self.facts.preview) < PREVIEW_SIZE:
            context = redacted[max(0, start - PREVIEW_CONTEXT) : end + PREVIEW_CONTEXT]
            self.facts.preview.append({"kind": kind, "where": self.where, "context": " ".join(context.split())})

    def redact_row(self, value, keep: frozenset[str]):
        """A row's value with every string in it redacted, its structure (keys, lists, numbers, booleans) as it
        was; the strings under the keys in `keep` (roles, labels) are left alone."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: item if key in keep else self.redact_row(item, keep) for key, item in value.items()}
        if isinstance(value, list):
            return [self.redact_row(item, keep) for item in value]
        return value


class StreamRedactor:
    """One document's pieces redacted as they come; the pieces joined equal the whole document redacted, as long
    as no match but a private-key block crosses a piece's end (pieces end at line breaks)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.held = ""  # an open private-key block and what follows it

    def pieces(self, pieces: Iterable[str]) -> Iterator[str]:
        for piece in pieces:
            text = self.held + piece
            cut = _open_block(text)
            self.held = text[cut:]
            if text[:cut]:
                yield self.redactor.redact(text[:cut])
        if self.held:
            yield self.redactor.redact(self.held)
            self.held = ""


PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY")
PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")


def _open_block(text: str) -> int:
    """Where a private-key block that has not ended yet starts (held back), else the text's end."""
    begins = list(PEM_BEGIN.finditer(text))
    if not begins or PEM_END.search(text, begins[-1].start()):
        return len(text)
    start = begins[-1].start()
    return start if len(text) - start <= PEM_HOLD_LIMIT else len(text)

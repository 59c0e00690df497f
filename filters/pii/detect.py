"""Personal data and secrets in text, found by pattern and confirmed by a validator.

A pattern only proposes a candidate; each kind keeps it when its own check passes, so
the look-alikes of everyday text stay untouched: an order number that fails the Luhn
check is not a card, a date or an ISBN is not a phone number, a version string is not
an IP address, a private address (10.0.0.1, 192.168.x.x) is no one's.

| kind | what is found | confirmed by |
| --- | --- | --- |
| email | addresses | a dotted domain with a letter TLD |
| phone | numbers in international (+44 ...) and national formats | libphonenumber's validity rules for the number's region (national numbers are read in `regions`) |
| card | payment card numbers, 13-19 digits, spaces or dashes allowed | the Luhn checksum and a known issuer prefix and length |
| iban | bank account numbers | the country's IBAN length and the ISO 7064 mod-97 checksum |
| ssn | US social security numbers written AAA-GG-SSSS, or nine digits after "SSN" / "social security" | the SSA's rules: no 000/666/9xx area, 00 group, 0000 serial |
| ip | IPv4 and IPv6 addresses | public (globally routable) only, and not a version number |
| secret | OpenAI, AWS, GitHub, Hugging Face, Slack, Stripe, Google keys; any long high-entropy value after key/token/secret/password | the provider's key format; the entropy of the value |

The finders read `normalize(text)`, which has the same length as `text`: fullwidth
forms, other scripts' digits and Unicode spaces become their ASCII selves, so one set of
patterns serves "４１１１", "٤١١١" and "4111\u00a01111", and a span is also the span of the original.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterable

KINDS = ("email", "phone", "card", "iban", "ssn", "ip", "secret")


@dataclass(frozen=True, slots=True)
class Span:
    kind: str  # "" for a look-alike claimed so that no other kind reads it (an ISBN is not a phone)
    start: int
    end: int


# -- normalising -----------------------------------------------------------------------


def _ascii_form(ch: str) -> str:
    if ch.isascii():
        return ch
    digit = unicodedata.decimal(ch, None)  # a decimal digit of any script: "٤", "४", "４"
    if digit is not None:
        return str(digit)
    category = unicodedata.category(ch)
    if category == "Zs":  # no-break, narrow, thin, figure spaces
        return " "
    if category == "No":  # superscripts, fractions, circled numbers are not digits as written ("10²")
        return ch
    folded = unicodedata.normalize("NFKC", ch)  # fullwidth "＠", "Ａ", "－"
    return folded if len(folded) == 1 and folded.isascii() else ch


_ASCII_FORMS: dict[str, str] = {}


def normalize(text: str) -> str:
    """`text` with each character that has a one-character ASCII form replaced by it; the
    same length, so offsets found in the result are offsets in `text`."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        folded = _ASCII_FORMS.get(ch)
        if folded is None:
            folded = _ASCII_FORMS.setdefault(ch, _ascii_form(ch))
        out.append(folded)
    return "".join(out)


# -- email --------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+'-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                    r"[A-Za-z]{2,24}(?![\w-])")


def emails(text: str) -> Iterable[Span]:
    for m in _EMAIL.finditer(text):
        local = m.group(0).split("@", 1)[0]
        if ".." not in local and not local.endswith("."):
            yield Span("email", m.start(), m.end())


# -- payment cards --------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\d-])")
# (first digits, allowed lengths) of the networks whose numbers people write down.
_ISSUERS: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...] = (
    (("4",), (13, 16, 19)),  # Visa
    (tuple(str(p) for p in range(51, 56)) + tuple(str(p) for p in range(2221, 2721)), (16,)),  # Mastercard
    (("34", "37"), (15,)),  # American Express
    (("6011", "65") + tuple(str(p) for p in range(644, 650)), (16, 19)),  # Discover
    (tuple(str(p) for p in range(3528, 3590)), (16, 17, 18, 19)),  # JCB
    (("36", "38", "39") + tuple(str(p) for p in range(300, 306)), (14, 16, 19)),  # Diners Club
    (("62",), (16, 17, 18, 19)),  # UnionPay
    (("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763"), (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _issued(digits: str) -> bool:
    return any(digits.startswith(prefixes) and len(digits) in lengths for prefixes, lengths in _ISSUERS)


def cards(text: str) -> Iterable[Span]:
    for m in _CARD.finditer(text):
        raw = m.group(0)
        separators = set(re.findall(r"[ -]", raw))
        if len(separators) > 1:  # "4111 1111-1111 1111" is two numbers side by side, not one card
            continue
        digits = re.sub(r"[ -]", "", raw)
        if len(set(digits)) > 1 and _issued(digits) and luhn_valid(digits):
            yield Span("card", m.start(), m.end())


# -- IBAN -----------------------------------------------------------------------------

# ISO 13616 lengths by country (the SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")


def iban_valid(compact: str) -> bool:
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def ibans(text: str) -> Iterable[Span]:
    for m in _IBAN.finditer(text):
        raw = m.group(0)
        compact = raw.replace(" ", "").upper()  # written in lower case too ("de89 3704 ...")
        # The match may run on into the next word ("... 3000 BIC"): try the registry length.
        want = IBAN_LENGTHS.get(compact[:2])
        if want is None or len(compact) < want:
            continue
        end, seen = m.start(), 0
        while seen < want:
            if text[end] != " ":
                seen += 1
            end += 1
        if end == len(text) or not text[end].isalnum():
            # An IBAN-shaped string with a wrong check digit is a mistyped account number:
            # not redacted, and not read again as a phone or card number either.
            if iban_valid(compact[:want]):
                yield Span("iban", m.start(), end)
            elif raw[:2].isupper():
                yield Span("", m.start(), end)


# -- ISBNs (look-alikes only) -------------------------------------------------------

_ISBN = re.compile(r"(?<![\w-])(?:ISBN(?:-1[03])?:?\s*)?((?:97[89][- ]?)?\d{1,5}[- ]?\d{1,7}[- ]?\d{1,7}[- ]?[\dX])(?![\w-])")


def isbn_valid(digits: str) -> bool:
    if len(digits) == 13 and digits.isdigit():
        return sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits)) % 10 == 0
    if len(digits) == 10 and digits[:9].isdigit():
        return sum((10 - i) * (10 if d == "X" else int(d)) for i, d in enumerate(digits)) % 11 == 0
    return False


def isbns(text: str) -> Iterable[Span]:
    """Book numbers, claimed so that no other kind reads them: after "ISBN", or a
    hyphenated 978/979 number with a valid ISBN-13 check digit (not a bare ISBN-10: one
    in eleven dashed phone numbers would pass its check)."""
    for m in _ISBN.finditer(text):
        digits = re.sub(r"[- ]", "", m.group(1))
        named = m.group(0).upper().startswith("ISBN")
        if (named and len(digits) in (10, 13)) or ("-" in m.group(1) and digits[:3] in ("978", "979")
                                                   and isbn_valid(digits)):
            yield Span("", m.start(), m.end())


# -- dates (look-alikes only) --------------------------------------------------------

_DATE = re.compile(r"(?<![\d.])(?:(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})|(\d{4})([./-])(\d{1,2})\6(\d{1,2}))(?![\d.]?\d)")


def dates(text: str) -> Iterable[Span]:
    """Numeric dates (13.10.2008, 10/13/08, 2008-10-13), claimed: libphonenumber reads
    some as numbers."""
    for m in _DATE.finditer(text):
        a, b = (m.group(1), m.group(3)) if m.group(1) else (m.group(7), m.group(8))
        a, b = int(a), int(b)
        if 1 <= min(a, b) and max(a, b) <= 31 and min(a, b) <= 12:
            yield Span("", m.start(), m.end())


# -- US SSN ---------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
_SSN_EXAMPLES = {"078-05-1120", "219-09-9999", "123-45-6789"}  # printed on sample cards and in ads


# Nine digits in a row are an SSN only where the text says so: "SSN: 536221234".
_SSN_NAMED = re.compile(r"(?i)\b(?:ssns?|ss#|social[ -]security(?:[ -](?:number|no\.?|#))?)"
                        r"(?:\W{0,3}(?:is|was|number|no\.?|#|of))?\W{0,3}(?<![\d-])(\d{3})()(\d{2})(\d{4})(?![\d-])")


def ssns(text: str) -> Iterable[Span]:
    for m in (*_SSN.finditer(text), *_SSN_NAMED.finditer(text)):
        area, group, serial = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0:
            continue
        if f"{m.group(1)}-{m.group(3)}-{m.group(4)}" in _SSN_EXAMPLES:
            continue
        yield Span("ssn", m.start(1), m.end(4))


# -- IP addresses ---------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# A dotted number right after these words is a version or a section, not an address.
# Whole words only: "DNS server 8.8.8.8" ends in "ver" but names an address.
_VERSION_BEFORE = re.compile(r"(?:\b(?:v|version|release|build|ver|rev|firmware|section|chapter)\.?|§)\s*$", re.IGNORECASE)


def ips(text: str) -> Iterable[Span]:
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            try:
                address = ipaddress.ip_address(m.group(0))
            except ValueError:
                continue
            if not address.is_global:
                continue
            if _VERSION_BEFORE.search(text[max(0, m.start() - 12): m.start()]):
                continue
            yield Span("ip", m.start(), m.end())


# -- secrets --------------------------------------------------------------------------

_PROVIDER_KEYS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"  # OpenAI
    r"|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|xox[abeprs]-[A-Za-z0-9-]{20,}|xapp-\d-[A-Za-z0-9-]{20,}"  # Slack bot, user, app tokens
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}"  # Stripe
    r"|AIza[A-Za-z0-9_-]{35}"  # Google API key
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab personal access token
    r"|(?:https?://)?hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{20,}"  # Slack incoming webhook
    r")(?![A-Za-z0-9_-])")
# `api_key = "..."`, `token: ...`, `the secret is ...`: the value after the name is the secret.
_NAMED_VALUE = re.compile(
    r"(?i)(?<![a-z])(?:api[_-]?key|access[_-]?key|secret(?:[_-]?key)?|token|password|passwd|pwd|key)"
    r"\b[\"']?\s*(?:[:=]|=>|\bis\b)\s*[\"']?([A-Za-z0-9_\-+/=.~]{16,})"
    r"|\bbearer\s+([A-Za-z0-9_\-+/=.~]{16,})")  # an HTTP Authorization header
MIN_ENTROPY_BITS = 3.0  # per character; English words and repeated digits stay below it


def entropy(value: str) -> float:
    counts: dict[str, int] = {}
    for ch in value:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def secrets(text: str) -> Iterable[Span]:
    for m in _PROVIDER_KEYS.finditer(text):
        yield Span("secret", m.start(), m.end())
    for m in _NAMED_VALUE.finditer(text):
        group = 1 if m.group(1) else 2
        value = m.group(group).rstrip(".")
        has_letter = any(ch.isalpha() for ch in value)
        has_digit = any(ch.isdigit() for ch in value)
        if has_letter and has_digit and entropy(value) >= MIN_ENTROPY_BITS:
            yield Span("secret", m.start(group), m.start(group) + len(value))


# -- phone numbers --------------------------------------------------------------------


def phone_finder(regions: list[str]) -> Callable[[str], Iterable[Span]]:
    """Phone numbers as libphonenumber's matcher finds them at its VALID leniency: a
    number in international form anywhere, a national one as written in one of `regions`."""
    import phonenumbers

    def phones(text: str) -> Iterable[Span]:
        if sum(map(text.count, "0123456789")) < 5:  # no phone number has fewer digits
            return
        for region in regions:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                yield Span("phone", m.start, m.end)

    return phones


# Earlier kinds win where two overlap: a key or a card number is never re-read as a phone.
PATTERN_FINDERS: dict[str, Callable[[str], Iterable[Span]]] = {
    "secret": secrets, "iban": ibans, "card": cards, "ssn": ssns, "email": emails, "ip": ips,
}
# Run first whatever kinds are chosen: what they claim is no kind of personal data.
LOOK_ALIKE_FINDERS: tuple[Callable[[str], Iterable[Span]], ...] = (isbns, dates)


def resolve(spans: Iterable[Span]) -> list[Span]:
    """The spans that do not overlap one found before them, in text order (claimed
    look-alikes included: the caller leaves those alone)."""
    taken: list[Span] = []
    for span in spans:
        if all(span.end <= t.start or span.start >= t.end for t in taken):
            taken.append(span)
    return sorted(taken, key=lambda s: s.start)

"""PII redaction: recall on planted values, precision on look-alikes, findings in real text,
and speed, against bare patterns (the same kinds, no validators).

How the set is built (fixed seed): 6,000 T0 rows (prompt + completion, real prose with
its own numbers, dates and prices) are drawn from ../shared/data; into each of the
first 4,800 one generated value is inserted at a sentence boundary, with a lead-in
("Contact:", "Paid with" ...):
- planted, 200 per kind, all valid: emails; US phone numbers in five national formats
  and numbers of GB, DE, FR, ES, IN, JP, AU, BR in international format (libphonenumber's
  example numbers with random last digits, kept when valid); Luhn-valid card numbers of
  seven networks, grouped by spaces, dashes or not at all; IBANs of eight countries with
  computed mod-97 check digits, compact or in groups of four; SSNs by the SSA's rules;
  public IPv4 and IPv6 addresses; OpenAI, AWS, GitHub and Hugging Face keys and random
  values after `api_key=`/`token:`/`secret`;
- look-alikes, 200 per family: 16-digit order numbers failing Luhn with card prefixes,
  dates in five formats, valid ISBN-13 and ISBN-10, prices, version strings (1.2.3.4
  after "version"), private and loopback IPs, IBANs with a wrong check digit, SSN-shaped
  numbers with a 000/666/9xx area, invalid phone-shaped numbers (123-456-7890), clock
  times, git hashes and UUIDs in prose.
The last 1,200 rows are left unmodified: what is found there is listed for a person to
judge (T0 holds real news text, and some of it is real contact data).

Recall: a planted value counts when one span of its kind covers it. Look-alike
precision: the share of look-alikes no span touches. Both for the stage (default
regions: US) and for bare patterns.

Run: python tests/benchmarks/bench_pii.py [--data ../shared/data/t0-prompts-55k.jsonl.gz]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import re
import string
import time
import uuid
from pathlib import Path

from filters.pii.pii import Pii
from filters.pii.detect import IBAN_LENGTHS, Span, resolve

DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "t0-prompts-55k.jsonl.gz"
PER_KIND = 200
ROWS = 6000
LEAD_INS = ["Contact:", "Details:", "For the record,", "Note", "See", "Reference:", "(", "Paid with", "Send to"]


def luhn_complete(body: str) -> str:
    for check in "0123456789":
        digits = body + check
        total = sum(int(d) if i % 2 == 0 else (int(d) * 2 - 9 if int(d) > 4 else int(d) * 2)
                    for i, d in enumerate(reversed(digits)))
        if total % 10 == 0:
            return digits
    raise AssertionError


def group(digits: str, rng: random.Random, sizes=(4,)) -> str:
    sep = rng.choice([" ", "-", ""])
    size = sizes[0]
    return sep.join(digits[i:i + size] for i in range(0, len(digits), size))


def card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("2720", 16), ("34", 15), ("6011", 16), ("3530", 16), ("62", 16)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return group(luhn_complete(body), rng)


def bad_card(rng: random.Random) -> str:
    digits = card(rng).replace(" ", "").replace("-", "")
    last = str((int(digits[-1]) + rng.randint(1, 9)) % 10)
    return group(digits[:-1] + last, rng)


BBAN = {"DE": "n18", "GB": "a4n14", "FR": "n10c11n2", "ES": "n20", "NL": "a4n10", "IT": "a1n10c12", "BE": "n12",
        "PL": "n24"}


def iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(sorted(BBAN))
    bban = ""
    for kind, count in re.findall(r"([anc])(\d+)", BBAN[country]):
        pool = {"a": string.ascii_uppercase, "n": string.digits, "c": string.ascii_uppercase + string.digits}[kind]
        bban += "".join(rng.choice(pool) for _ in range(int(count)))
    numeric = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    check = 98 - numeric % 97
    if not valid:
        check = (check + rng.randint(1, 50)) % 97 + 2
    compact = f"{country}{check:02d}{bban}"
    assert len(compact) == IBAN_LENGTHS[country]
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.5 else compact


def phone(rng: random.Random) -> str:
    import phonenumbers

    if rng.random() < 0.5:
        area = rng.choice([212, 305, 312, 415, 503, 617, 702, 206, 404, 713, 818, 919])
        ex, line = rng.randint(200, 999), rng.randint(0, 9999)
        if ex == 555:
            ex = 556
        return rng.choice([f"({area}) {ex}-{line:04d}", f"{area}-{ex}-{line:04d}", f"{area}.{ex}.{line:04d}",
                           f"+1 {area} {ex} {line:04d}", f"1-{area}-{ex}-{line:04d}"])
    while True:
        region = rng.choice(["GB", "DE", "FR", "ES", "IN", "JP", "AU", "BR"])
        example = phonenumbers.example_number_for_type(region, rng.choice(
            [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE]))
        national = str(example.national_number)
        number = phonenumbers.parse(f"+{example.country_code}{national[:-3]}{rng.randint(0, 999):03d}")
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def public_ip(rng: random.Random) -> str:
    import ipaddress

    while True:
        if rng.random() < 0.8:
            address = ipaddress.ip_address(".".join(str(rng.randint(1, 223)) for _ in range(4)))
        else:
            address = ipaddress.ip_address(f"2a0{rng.randint(0, 9)}:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(7)))
        if address.is_global:
            return str(address)


def token(rng: random.Random, n: int, pool: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(pool) for _ in range(n))


def secret(rng: random.Random) -> tuple[str, str]:
    """(text to insert, the secret inside it)."""
    value = rng.choice([
        lambda: "sk-proj-" + token(rng, 48), lambda: "AKIA" + token(rng, 16, string.ascii_uppercase + string.digits),
        lambda: "ghp_" + token(rng, 36), lambda: "hf_" + token(rng, 34), lambda: token(rng, 32, "0123456789abcdef"),
        lambda: token(rng, 40, string.ascii_letters + string.digits + "/+")])()
    if value.startswith(("sk-", "AKIA", "ghp_", "hf_")):
        return value, value
    name = rng.choice(["api_key=", "API_KEY = ", "token: ", "client_secret: ", "the secret is ", "password="])
    return name + value, value


def email(rng: random.Random) -> str:
    first, last = rng.choice(["anna", "li", "omar", "jo", "maria"]), rng.choice(["smith", "nguyen", "okafor", "berg"])
    local = rng.choice([f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first}+news", f"{first[0]}_{last}"])
    return f"{local}@{rng.choice(['example.com', 'mail.co.uk', 'uni-bonn.de', 'corp.example.org'])}"


PLANTED = {
    "email": lambda rng: (email(rng),) * 2, "phone": lambda rng: (phone(rng),) * 2,
    "card": lambda rng: (card(rng),) * 2, "iban": lambda rng: (iban(rng),) * 2, "ssn": lambda rng: (ssn(rng),) * 2,
    "ip": lambda rng: (public_ip(rng),) * 2, "secret": secret,
}


def isbn13(rng: random.Random) -> str:
    body = "978" + "".join(rng.choice(string.digits) for _ in range(9))
    check = (10 - sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10
    d = body + str(check)
    return f"ISBN {d[:3]}-{d[3]}-{d[4:7]}-{d[7:12]}-{d[12]}"


def isbn10(rng: random.Random) -> str:
    body = "".join(rng.choice(string.digits) for _ in range(9))
    check = (11 - sum((10 - i) * int(x) for i, x in enumerate(body)) % 11) % 11
    return f"ISBN {body[0]}-{body[1:4]}-{body[4:9]}-{'X' if check == 10 else check}"


LOOK_ALIKES = {
    "order number failing Luhn": lambda rng: "order " + bad_card(rng),
    "date": lambda rng: rng.choice([f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                                    f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1990, 2030)}",
                                    f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1990, 2030)}",
                                    f"March {rng.randint(1, 28)}, {rng.randint(1990, 2030)}",
                                    f"{rng.randint(1990, 2030)}/{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}"]),
    "ISBN": lambda rng: rng.choice([isbn13, isbn10])(rng),
    "price": lambda rng: rng.choice([f"${rng.randint(1, 99)},{rng.randint(0, 999):03d}.{rng.randint(0, 99):02d}",
                                     f"€{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
                                     f"{rng.randint(1, 9)} {rng.randint(0, 999):03d},00 kr"]),
    "version string": lambda rng: rng.choice(["version ", "v", "release ", "build "]) + ".".join(
        str(rng.randint(0, 20)) for _ in range(rng.choice([3, 4]))),
    "private IP": lambda rng: rng.choice([f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                                          f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                                          f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                                          "127.0.0.1", "fe80::1", "::1"]),
    "IBAN, wrong check digits": lambda rng: iban(rng, valid=False),
    "SSN-shaped, invalid": lambda rng: f"{rng.choice([0, 666, rng.randint(900, 999)]):03d}-{rng.randint(1, 99):02d}-"
                                       f"{rng.randint(1, 9999):04d}",
    "phone-shaped, invalid": lambda rng: rng.choice(["123-456-7890", "000-000-0000", f"(099) {rng.randint(100, 999)}-0000",
                                                     f"{rng.randint(100, 199)}-{rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"]),
    "clock time": lambda rng: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
    "git hash or UUID": lambda rng: rng.choice([f"commit {token(rng, 40, '0123456789abcdef')}", f"id {uuid.UUID(int=rng.getrandbits(128))}"]),
}


def insert(text: str, value: str, rng: random.Random) -> tuple[str, int]:
    """`text` with `value` inserted after a sentence end (or at the end); and where it starts."""
    ends = [m.end() for m in re.finditer(r"[.!?]\s", text)] or [len(text)]
    at = rng.choice(ends)
    lead = rng.choice(LEAD_INS)
    piece = f" {lead} {value}. " if lead != "(" else f" ({value}) "
    return text[:at] + piece + text[at:], at + piece.index(value)


BARE = {  # the same kinds as bare patterns: what a detector without validators finds, in the stage's order of precedence
    "secret": re.compile(r"\b(?:sk-[\w-]{20,}|AKIA[A-Z0-9]{16}|gh[pousr]_\w{36,}|hf_\w{30,})|(?i:(?:key|token|secret|password)\S*\s*[:=]\s*\S{16,})"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
    "card": re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"),
    "ssn": re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "ip": re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)|(?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])"),
    "phone": re.compile(r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{2,4}[\s.-]?\d{2,4}(?:[\s.-]?\d{2,4})?(?!\w)"),
}


def bare_spans(text: str) -> list[Span]:
    return resolve(Span(kind, m.start(), m.end()) for kind, pattern in BARE.items() for m in pattern.finditer(text))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT)
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found: pass --data PATH")
    rng = random.Random(0)
    with gzip.open(args.data, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    base = [r["prompt"] + "\n" + r["completion"] for r in rng.sample(rows, ROWS)]
    cases = []  # (text, family, is_pii, value start, value end, kind)
    i = 0
    for kind, make in PLANTED.items():
        for _ in range(PER_KIND):
            inserted, value = make(rng)
            text, at = insert(base[i], inserted, rng)
            start = at + inserted.index(value)
            cases.append((text, kind, True, start, start + len(value), kind))
            i += 1
    for family, make in LOOK_ALIKES.items():
        for _ in range(PER_KIND):
            if i >= 4800:
                break
            value = make(rng)
            text, at = insert(base[i], value, rng)
            cases.append((text, family, False, at, at + len(value), None))
            i += 1
    untouched = base[4800:]

    stage = Pii()
    detectors = {"pii stage": stage.spans, "bare patterns": bare_spans}
    results = {}
    for name, spans_of in detectors.items():
        began = time.perf_counter()
        found = [spans_of(text) for text, *_ in cases]
        background = [spans_of(text) for text in untouched]
        elapsed = time.perf_counter() - began
        results[name] = (found, background, elapsed)

    chars = sum(len(c[0]) for c in cases) + sum(map(len, untouched))
    print(f"{len(cases)} texts with one inserted value each ({len(PLANTED)} kinds x {PER_KIND} planted, "
          f"{len(LOOK_ALIKES)} look-alike families), {len(untouched)} unmodified; {chars / 1e6:.1f} M characters")
    header = f"{'':28}" + "".join(f"{name:>16}" for name in detectors)
    print("recall (planted value covered by a span of its kind)\n" + header)
    for kind in PLANTED:
        line = f"  {kind:26}"
        for name in detectors:
            found = results[name][0]
            idx = [j for j, c in enumerate(cases) if c[1] == kind]
            hit = sum(any(s.kind == kind and s.start <= cases[j][3] and s.end >= cases[j][4] for s in found[j]) for j in idx)
            line += f"{hit / len(idx):>16.3f}"
        print(line)
    print("look-alike precision (look-alikes no span touches)\n" + header)
    totals = collections.Counter()
    for family in LOOK_ALIKES:
        line = f"  {family:26}"
        for name in detectors:
            found = results[name][0]
            idx = [j for j, c in enumerate(cases) if c[1] == family]
            clean = sum(not any(s.start < cases[j][4] and s.end > cases[j][3] for s in found[j]) for j in idx)
            totals[name] += clean
            line += f"{clean / len(idx):>16.3f}"
        print(line)
    n_look = sum(not c[2] for c in cases)
    print(f"  {'all look-alikes':26}" + "".join(f"{totals[name] / n_look:>16.3f}" for name in detectors))
    for name in detectors:
        background = results[name][1]
        counts = collections.Counter(s.kind for spans in background for s in spans)
        print(f"{name}: in {len(untouched)} unmodified T0 texts it finds {dict(sorted(counts.items())) or 'nothing'}")
    examples = [(s.kind, text[max(0, s.start - 30): s.end + 10].replace("\n", " "))
                for text, spans in zip(untouched, results["pii stage"][1]) for s in spans][:12]
    for kind, context in examples:
        print(f"    {kind}: ...{context}...")
    for name in detectors:
        elapsed = results[name][2]
        print(f"speed, {name}: {(len(cases) + len(untouched)) / elapsed:,.0f} texts/s ({chars / elapsed / 1e6:.2f} M chars/s)")


if __name__ == "__main__":
    main()

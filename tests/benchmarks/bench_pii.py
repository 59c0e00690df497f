"""PII redaction: recall and precision per kind on a hand-written corpus that the
detector's rules were not written from.

Where the data comes from. Nothing here is made with the detector's own checks (no
libphonenumber, no Luhn, no mod-97, no `is_global`, no SSA area rules, no version
trigger words): every value and every sentence below is written out by hand.
- Card numbers are the test numbers that payment processors publish for developers
  (Stripe, PayPal, Adyen); IBANs the examples of the SWIFT IBAN registry and of the
  banks' own documentation; IP addresses public resolvers and well-known hosts; phone
  numbers public switchboards and numbers in each country's usual written forms;
  secrets follow each provider's documented key format (bodies random, fixed seed),
  plus the AWS documentation's example secret key and jwt.io's example token.
- Each value is written the ways people write it (spaces, dashes, none; no-break and
  narrow no-break spaces; fullwidth and Arabic-Indic digits; upper and lower case) and
  put in several sentences of its kind ("DNS server ...", "Paid with ...", log lines,
  .env lines, JSON).
- Hard negatives, written from everyday text rather than from the detector's rules:
  version numbers without a trigger word, dates and timestamps, order, tracking,
  invoice and case numbers, ISBNs, ISSNs, ORCIDs, EAN/UPC codes, prices, coordinates,
  OIDs, clause numbers, ZIP+4 codes, hashes and UUIDs, CSS and npm `@` forms, and
  placeholders where a secret would go.

Recall per kind: planted values covered by one span of that kind. Precision per kind:
the spans of that kind (over every text, planted and negative) that overlap a value
planted as that kind. Every count is printed; the misses are listed by kind.

Run: PYTHONPATH=. python tests/benchmarks/bench_pii.py [--misses N]
"""

from __future__ import annotations

import argparse
import collections
import random
import string
import time

from filters.pii.pii import Pii

FULLWIDTH = str.maketrans("0123456789@", "０１２３４５６７８９＠")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def grouped(value: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(value[at:at + size])
        at += size
    return sep.join(p for p in parts if p)


def written(value: str, spaced: str) -> list[str]:
    """The ways a grouped number is written: as given, with no-break and narrow no-break
    spaces, in fullwidth and in Arabic-Indic digits."""
    return [spaced, spaced.replace(" ", "\u00a0"), spaced.replace(" ", "\u202f"), spaced.translate(FULLWIDTH),
            spaced.translate(ARABIC_INDIC)]


# -- planted values --------------------------------------------------------------------

CARDS = ["4242424242424242", "4000056655665556", "4111111111111111", "4012888888881881", "5555555555554444",
         "2223003122003222", "5200828282828210", "5105105105105100", "378282246310005", "371449635398431",
         "6011111111111117", "6011000990139424", "3056930009020004", "36227206271667", "3566002020360505",
         "3530111333300000", "6200000000000005", "4222222222222"]
CARD_SENTENCES = ["Paid with card {v} yesterday.", "My Visa is {v}, exp 04/27, CVV 123.", "cc_number: {v}",
                  "Kartennummer {v} bitte belasten.", "Refund the charge on {v} please."]


def card_forms(number: str) -> list[str]:
    sizes = (4, 6, 5) if len(number) == 15 else (4, 6, 4) if len(number) == 14 else (4, 4, 4, 4, 3)
    return [number, grouped(number, sizes, "-"), *written(number, grouped(number, sizes, " "))]


IBANS = ["DE89370400440532013000", "GB29NWBK60161331926819", "GB82WEST12345698765432", "FR1420041010050500013M02606",
         "ES9121000418450200051332", "NL91ABNA0417164300", "IT60X0542811101000000123456", "BE68539007547034",
         "CH9300762011623852957", "AT611904300234573201", "PL61109010140000071219812874", "SE4550000000058398257466",
         "NO9386011117947", "DK5000400440116243", "FI2112345600000785", "PT50000201231234567890154",
         "IE29AIBK93115212345678", "LU280019400644750000"]
IBAN_SENTENCES = ["Transfer to {v} today.", "IBAN: {v}", "Bankverbindung: {v}, BIC folgt.",
                  "please wire it to {v} by friday"]


def iban_forms(iban: str) -> list[str]:
    paper = " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
    return [iban, iban.lower(), paper.lower(), *written(iban, paper)]


PHONES = ["(202) 456-1414", "202-456-1414", "202.456.1414", "+1 202 456 1414", "1-800-273-8255", "(617) 253-1000",
          "+1-650-253-0000", "212 736 5000", "+44 20 7219 3000", "+44 (0)20 7946 0958", "+44 1392 885680",
          "0044 20 7219 3000", "+49 30 22730", "+49 (0)30 901820", "+49 1512 3456789", "+49-89-1234567",
          "+33 1 42 92 81 00", "+33 (0)1 42 68 53 00", "+33 6 12 34 56 78", "+91 98765 43210", "+91-11-2301-2380",
          "+81 3-3581-3111", "+81 90-1234-5678", "+61 2 9250 7111", "+61 412 345 678", "+55 11 98765-4321",
          "+55 (21) 2555-0101", "+34 912 34 56 78", "+39 06 6982", "+31 20 794 0000"]
PHONE_SENTENCES = ["Call me on {v} after six.", "Tel.: {v}", "Her mobile is {v}.", "(reachable at {v} on weekdays)"]

SSNS = ["536-22-1234", "219-45-8876", "401-86-2231", "078-33-4410", "625-09-7712", "302-71-0045"]
SSN_SENTENCES = ["SSN {v} on the W-2.", "Her social security number is {v}.", "ssn: {v}",
                 "Applicant SSN: {v}, DOB 1984-02-11."]


def ssn_forms(ssn: str) -> list[str]:
    return [ssn, ssn.replace("-", " "), ssn.replace("-", ""), ssn.translate(ARABIC_INDIC), ssn.translate(FULLWIDTH)]


EMAILS = ["jane.doe@example.com", "J.Smith@Uni-Bonn.DE", "orders+2024@shop.example.co.uk", "li.wei@corp.example",
          "o'brien@example.ie", "first_last@sub.domain.example.museum", "ANA.PEREZ@MAIL.EXAMPLE.ES", "x@ab.io"]
EMAIL_SENTENCES = ["Write to {v} for a refund.", "From: Jane <{v}>", "mailto:{v}", "Contact: {v}."]


def email_forms(address: str) -> list[str]:
    return [address, address.replace("@", "＠"), address.lower()]


IPS = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "208.67.222.222", "93.184.216.34", "151.101.1.69", "140.82.112.3",
       "2001:4860:4860::8888", "2606:4700:4700::1111", "2620:fe::fe", "2a03:2880:f003:c07:face:b00c::2"]
IP_SENTENCES = ["Set the DNS server {v} as primary.", "nameserver {v}", "Failed password for admin from {v} port 52144 ssh2",
                "X-Forwarded-For: {v}", "ping {v} shows 12 ms.", "The server {v} went down at noon."]


def secret_values(rng: random.Random) -> list[tuple[str, str]]:
    """(sentence, the secret in it)."""
    def body(n: int, pool: str = string.ascii_letters + string.digits) -> str:
        return "".join(rng.choice(pool) for _ in range(n))

    keys = ["sk-proj-" + body(48), "sk-" + body(48), "sk-ant-api03-" + body(80), "AKIA" + body(16, string.ascii_uppercase + string.digits),
            "ghp_" + body(36), "github_pat_11" + body(20) + "_" + body(59), "hf_" + body(34),
            "xoxb-" + body(12, string.digits) + "-" + body(13, string.digits) + "-" + body(24),
            "xoxp-" + body(11, string.digits) + "-" + body(12, string.digits) + "-" + body(13, string.digits) + "-" + body(32, "0123456789abcdef"),
            "sk_live_" + body(24), "AIza" + body(35), "glpat-" + body(20)]
    cases = []
    for key in keys:
        cases += [(f"export API_TOKEN={key}", key), (f"I pasted {key} into the chat by mistake.", key),
                  (f'{{"credentials": "{key}"}}', key)]
    hook = "https://hooks.slack.com/services/T" + body(8, string.ascii_uppercase + string.digits) + "/B" + body(
        10, string.ascii_uppercase + string.digits) + "/" + body(24)
    jwt = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5"
           "MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
    aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    pw = "Tr0ub4dor&3x9Lq"
    client_secret = body(32, "0123456789abcdef")
    cases += [(f"aws_secret_access_key = {aws_secret}", aws_secret), (f"Authorization: Bearer {jwt}", jwt),
              (f"curl -X POST -d 'payload' {hook}", hook), (f"DB_PASSWORD={pw}", pw),
              (f"postgres://app:{pw}@db.example.com:5432/app", pw),
              (f"client_secret: {client_secret}", client_secret)]
    return cases


def planted(rng: random.Random) -> list[tuple[str, str, int, int]]:
    """(text, kind, start, end) of each planted value."""
    out = []

    def plant(kind: str, sentences: list[str], forms: list[str]) -> None:
        for form in forms:
            sentence = rng.choice(sentences)
            text = sentence.replace("{v}", form)
            at = sentence.index("{v}")
            out.append((text, kind, at, at + len(form)))

    for number in CARDS:
        plant("card", CARD_SENTENCES, card_forms(number))
    for iban in IBANS:
        plant("iban", IBAN_SENTENCES, iban_forms(iban))
    for phone in PHONES:
        plant("phone", PHONE_SENTENCES, [phone, phone.translate(FULLWIDTH), phone.translate(ARABIC_INDIC),
                                         phone.replace(" ", "\u00a0")])
    for ssn in SSNS:
        for sentence in SSN_SENTENCES:
            plant("ssn", [sentence], ssn_forms(ssn))
    for address in EMAILS:
        plant("email", EMAIL_SENTENCES, email_forms(address))
    for address in IPS:
        for sentence in IP_SENTENCES:
            plant("ip", [sentence], [address])
    for text, value in secret_values(rng):
        at = text.index(value)
        out.append((text, "secret", at, at + len(value)))
    return out


# -- hard negatives --------------------------------------------------------------------

NEGATIVES = {
    "version number": ["Chrome 120.0.6099.109 fixed it.", "Running kernel 5.15.0.91 on the host.",
                       "Windows 10.0.19045.3803 is installed.", "Upgrade to 2.4.1.8 tonight.", "nginx/1.25.3 answered.",
                       "pin numpy==1.26.4", "Android 4.4.2 and iOS 17.2.1 both crash.", "Firmware 8.8.8.8 bricks it.",
                       "See clause 4.2.1.3 of the contract.", "Table 3.1.2.4 lists the limits.",
                       "The DNS server was updated to 9.18.24.1 last week."],
    "date or time": ["Released on 2024-03-15.", "Due 15/03/2024.", "Born 03/15/1984.", "Signed 15.03.2024.",
                     "On March 15, 2024 at 10:30:00 UTC.", "ts=2024-03-15T10:30:00Z", "Batch 20240315 ran.",
                     "From 1999–2003 he lived abroad.", "Fri, 15 Mar 2024 10:30:00 +0000"],
    "order, tracking, case number": ["Order #112-4567890-1234567 has shipped.", "Invoice INV-2024-000123 is due.",
                                     "PO 4500012345 approved.", "Ticket 536221234 was closed.",
                                     "UPS tracking 1Z999AA10123456784.", "USPS 9400 1000 0000 0000 0000 00 is out for delivery.",
                                     "Case No. 2:21-cv-01234 was dismissed.", "Lot 20240315-0042 was recalled.",
                                     "Serial SN 2049-8817-3320 registered.", "Your order number is 4000 1234 5678 9010."],
    "ISBN, ISSN, ORCID, barcode": ["ISBN 978-0-262-03384-8 is the third edition.", "ISBN 0-13-110362-8 (K&R).",
                                   "Cite 9780262033848 in the list.", "ISSN 0028-0836 is Nature.",
                                   "ORCID 0000-0002-1825-0097", "EAN 4006381333931 on the box.", "UPC 036000291452",
                                   "DOI 10.1038/nature14539", "arXiv:2303.08774", "Patent US 9,876,543 B2"],
    "price or quantity": ["It costs $1,299.99.", "Preis: €2.499,00", "USD 12,345.67 total.", "¥120,000 per month.",
                          "£3,450,000 house.", "1 234 567,89 € brutto", "CHF 1'250.00", "Population 8,336,817.",
                          "Growth of +5.3% in Q3 2024.", "A 1e-9 tolerance and pi 3.14159265358979."],
    "coordinates": ["40.7128, -74.0060", "48.8566° N, 2.3522° E", "lat 51.5074 lon -0.1278",
                    "N 47°22'37\" E 8°32'28\"", "geo:37.7749,-122.4194"],
    "product or part code": ["Part number 805-1192-03.", "CAS 7732-18-5 is water.", "NDC 0002-7510-01",
                             "HS code 8471.30.0100", "Model KD-55X85J in stock.", "SKU 400-123-4567-XL",
                             "ZIP 94103-1234", "Item 212-456-78 discontinued.", "Ref. 2024/0815/77"],
    "non-personal address": ["Ping 10.0.0.1 or 192.168.1.20.", "localhost is 127.0.0.1 and ::1.",
                             "Docs use 192.0.2.1 and 2001:db8::1.", "SNMP OID 1.3.6.1.4.1.311", "fe80::1%eth0",
                             "MAC 00:1A:2B:3C:4D:5E", "std::vector<int> v;", "John 3:16 and 10:30:00"],
    "hash or id": ["commit 9fceb02d0ae598e95dc970b74767f19372d61af8", "id 123e4567-e89b-12d3-a456-426614174000",
                   "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "md5 d41d8cd98f00b204e9800998ecf8427e"],
    "at-sign, not an address": ["@media (max-width: 600px) { }", "npm i @types/node react@18.2.0", "user@localhost",
                                "Follow @jane_doe for updates.", "git@github.com:org/repo.git"],
    "IBAN or SSN shaped": ["DE00 1234 5678 9012 3456 78 is made up.", "SWIFT DEUTDEFF500", "ISIN DE0005140008",
                           "ISIN US0378331005", "The example SSN 123-45-6789 is invalid.", "SSN format: AAA-GG-SSSS",
                           "ssn field left blank; id 536221234xy"],
    "secret placeholder": ["api_key=YOUR_API_KEY_HERE", "password: ********", "token_count=123456789012345678",
                           "Set OPENAI_API_KEY in your shell.", "the password is correcthorsebatterystaple",
                           "sk-... is the prefix of OpenAI keys.", "xoxb- tokens are bot tokens."],
}


def covered(spans, kind: str, start: int, end: int) -> bool:
    return any(s.kind == kind and s.start <= start and s.end >= end for s in spans)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misses", type=int, default=6, help="misses and false finds to show per kind")
    args = parser.parse_args()
    rng = random.Random(0)
    positives = planted(rng)
    negatives = [(text, family) for family, texts in NEGATIVES.items() for text in texts]
    stage = Pii()
    began = time.perf_counter()
    pos_spans = [stage.spans(text) for text, *_ in positives]
    neg_spans = [stage.spans(text) for text, _ in negatives]
    elapsed = time.perf_counter() - began

    planted_n, hits, reported, true = (collections.Counter() for _ in range(4))
    missed, false = collections.defaultdict(list), collections.defaultdict(list)
    for (text, kind, start, end), spans in zip(positives, pos_spans):
        planted_n[kind] += 1
        if covered(spans, kind, start, end):
            hits[kind] += 1
        else:
            missed[kind].append(text)
        for s in spans:
            if not s.kind:
                continue
            reported[s.kind] += 1
            if s.kind == kind and s.start < end and s.end > start:
                true[s.kind] += 1
            else:
                false[s.kind].append(text[s.start:s.end] + "  <-  " + text)
    untouched = collections.Counter()
    for (text, family), spans in zip(negatives, neg_spans):
        found = [s for s in spans if s.kind]
        untouched[family] += not found
        for s in found:
            reported[s.kind] += 1
            false[s.kind].append(text[s.start:s.end] + "  <-  " + text)

    print(f"{len(positives)} texts with a planted value, {len(negatives)} hard negatives (hand-written, see the docstring)")
    print(f"{'kind':8}{'planted':>9}{'found':>7}{'recall':>8}{'spans':>7}{'true':>6}{'precision':>11}")
    for kind in planted_n:
        precision = f"{true[kind] / reported[kind]:.3f}" if reported[kind] else "-"
        print(f"{kind:8}{planted_n[kind]:>9}{hits[kind]:>7}{hits[kind] / planted_n[kind]:>8.3f}{reported[kind]:>7}"
              f"{true[kind]:>6}{precision:>11}")
    total_hits, total_planted = sum(hits.values()), sum(planted_n.values())
    total_true, total_reported = sum(true.values()), sum(reported.values())
    print(f"{'all':8}{total_planted:>9}{total_hits:>7}{total_hits / total_planted:>8.3f}{total_reported:>7}"
          f"{total_true:>6}{total_true / max(1, total_reported):>11.3f}")
    print("hard negatives left untouched, per family")
    for family, texts in NEGATIVES.items():
        print(f"  {family:32}{untouched[family]:>3} of {len(texts)}")
    for kind in planted_n:
        for label, texts in (("missed", missed[kind]), ("false", false[kind])):
            for text in texts[:args.misses]:
                print(f"  {kind} {label}: {text!r}")
            if len(texts) > args.misses:
                print(f"  {kind} {label}: ... {len(texts) - args.misses} more")
    n = len(positives) + len(negatives)
    print(f"speed: {n / elapsed:,.0f} texts/s")


if __name__ == "__main__":
    main()

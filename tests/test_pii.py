"""The pii stage: planted personal data and secrets found, look-alikes left alone, the
record's shape kept, counts in the funnel and the card, through the real commands."""

from __future__ import annotations

import json

import datasets
import pytest
import yaml

from factory.cli import main
from factory.core.record import Record
from filters.pii.pii import Pii
from tests.helpers.datafiles import read_jsonl, write_input
from tests.helpers.pipelines import grounded_pipeline, write_pipeline
from tests.helpers.processes import assert_user_error, factory_cli

PLANTED = [
    ("email", "Write to maria.lopez+orders@mail.example.org for a refund.", "maria.lopez+orders@mail.example.org"),
    ("email", "cc: J_Smith@uni-bonn.de.", "J_Smith@uni-bonn.de"),
    ("phone", "Call (415) 555-2671 after six.", "(415) 555-2671"),
    ("phone", "Her number is +44 20 7946 0958.", "+44 20 7946 0958"),
    ("phone", "Ring +49 30 901820 in Berlin.", "+49 30 901820"),
    ("phone", "Toll free: 1-800-273-8255.", "1-800-273-8255"),
    ("phone", "Mobil: +49 1512 3456977.", "+49 1512 3456977"),
    ("card", "Paid with 4111 1111 1111 1111 yesterday.", "4111 1111 1111 1111"),
    ("card", "Amex 3782-822463-10005 on file.", "3782-822463-10005"),
    ("card", "card=5555555555554444", "5555555555554444"),
    ("iban", "Transfer to DE89 3704 0044 0532 0130 00 today.", "DE89 3704 0044 0532 0130 00"),
    ("iban", "IBAN: GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("iban", "FR1420041010050500013M02606 is the account.", "FR1420041010050500013M02606"),
    ("iban", "Belgian account BE68 5390 0754 7034.", "BE68 5390 0754 7034"),
    ("ssn", "SSN 536-22-1234 on the form.", "536-22-1234"),
    ("ip", "The server is at 93.184.216.34 now.", "93.184.216.34"),
    ("ip", "Resolve via 2001:4860:4860::8888 please.", "2001:4860:4860::8888"),
    ("secret", "export OPENAI_API_KEY=sk-proj-Xq3vT9bL0pZ8aR2mK7wN4sY1", "sk-proj-Xq3vT9bL0pZ8aR2mK7wN4sY1"),
    ("secret", "aws id AKIAIOSFODNN7EXAMPLE in the log", "AKIAIOSFODNN7EXAMPLE"),
    ("secret", "token ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7c leaked", "ghp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7c"),
    ("secret", "HF: hf_QwErTy123456AsDfGh789012ZxCvBn345678 oops", "hf_QwErTy123456AsDfGh789012ZxCvBn345678"),
    ("secret", 'config: {"client_secret": "9f8a7b6c5d4e3f2a1b0c9d8e"}', "9f8a7b6c5d4e3f2a1b0c9d8e"),
    ("secret", "the token is Zk29fQ0x8LmA7pR3tW6y", "Zk29fQ0x8LmA7pR3tW6y"),
]

LOOK_ALIKES = [
    "Order 4111 1111 1111 1112 ships Monday.",  # fails Luhn
    "Tracking 1234 5678 9012 3456 7.",
    "Released on 2024-03-15 at 10:30, see 03/15/1985.",
    "ISBN 978-0-306-40615-7 and ISBN-10 0-306-40615-2.",
    "It costs $1,234.56 or 19.99 EUR (about 2,345.00 SEK).",
    "Upgrade to version 1.2.3.4 or v10.0.0.1 of the firmware.",
    "Our office LAN uses 10.0.0.1 and 192.168.1.20; localhost is 127.0.0.1.",
    "Pi is 3.14159265358979, e is 2.718281828.",
    "The ticket id is 536-22-12345 and room 000-12-3456.",
    "Account DE89 3704 0044 0532 0130 01 has a bad checksum.",
    "Account NL43 ESKI 3378 1032 78 has a typo.",  # its digits are not a phone number either
    "Signed on 13.10.2008, filed 2008/10/13.",
    "See ISBN 2-738-06756-5 for details.",
    "the password is correcthorsebatterystaple",
    "Set max_tokens = 1024 and key: value pairs; token_count=123456789012345678.",
    "Read section 4.2.1.3 and chapter 12.1.1.1.",
    "The meeting is at 12:45 on 2023/11/05, in room 101.",
    "Email us through the contact form at example dot com.",
]


# Forms an attack found missed (issue 25): each (kind, text, the value as written there).
FULLWIDTH = str.maketrans("0123456789@", "０１２３４５６７８９＠")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
MISSED_FORMS = [
    ("ip", "Set the DNS server 8.8.8.8 as primary.", "8.8.8.8"),
    ("ip", "The DNS server 2001:4860:4860::8888 answers over IPv6.", "2001:4860:4860::8888"),
    ("iban", "Pay into de89 3704 0044 0532 0130 00 by Friday.", "de89 3704 0044 0532 0130 00"),
    ("iban", "iban: gb82west12345698765432", "gb82west12345698765432"),
    ("card", "Charged to 4111\u00a01111\u00a01111\u00a01111 twice.", "4111\u00a01111\u00a01111\u00a01111"),
    ("card", "Card 4111\u202f1111\u202f1111\u202f1111 on file.", "4111\u202f1111\u202f1111\u202f1111"),
    ("card", "Card " + "4111 1111 1111 1111".translate(FULLWIDTH) + " on file.", "4111 1111 1111 1111".translate(FULLWIDTH)),
    ("card", "Card " + "4111 1111 1111 1111".translate(ARABIC_INDIC) + " on file.",
     "4111 1111 1111 1111".translate(ARABIC_INDIC)),
    ("phone", "Call " + "(415) 555-2671".translate(FULLWIDTH) + " today.", "(415) 555-2671".translate(FULLWIDTH)),
    ("phone", "Call " + "+44 20 7946 0958".translate(ARABIC_INDIC) + " today.",
     "+44 20 7946 0958".translate(ARABIC_INDIC)),
    ("ssn", "SSN " + "536-22-1234".translate(ARABIC_INDIC) + " on the form.", "536-22-1234".translate(ARABIC_INDIC)),
    ("email", "Write to maria.lopez＠mail.example.org soon.", "maria.lopez＠mail.example.org"),
    ("ssn", "SSN: 536221234 on the form.", "536221234"),
    ("ssn", "Her social security number is 536221234.", "536221234"),
    ("secret", "SLACK_BOT_TOKEN=xoxb-2048351234-4091827364512-kG7pQ2rX9vT4mW1nB8cZ5dLs", "xoxb-2048351234-4091827364512-kG7pQ2rX9vT4mW1nB8cZ5dLs"),
    ("secret", "posted with xoxp-1234567890-1234567890123-1234567890123-0a1b2c3d4e5f60718293a4b5c6d7e8f9 by mistake",
     "xoxp-1234567890-1234567890123-1234567890123-0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
    # Found missing by the benchmark's hand-written corpus.
    ("secret", "curl https://hooks.slack.com/services/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 -d x",
     "https://hooks.slack.com/services/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"),
    ("secret", "I pasted glpat-Xq3vT9bL0pZ8aR2mK7wN into the chat.", "glpat-Xq3vT9bL0pZ8aR2mK7wN"),
    ("secret", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.Sfl9xwRJSMeKKF2QT4fw",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.Sfl9xwRJSMeKKF2QT4fw"),
    ("email", "Write to o'brien@example.ie for a refund.", "o'brien@example.ie"),
]
# Look-alikes of the forms above that must stay as written.
MISSED_FORMS_LOOK_ALIKES = [
    "Order 536221234 ships Monday.",  # nine digits without an SSN context
    "The DNS server runs release 4.4.2.1 and firmware v8.8.8.8.",
    "de89 3704 0044 0532 0130 01 has a wrong check digit.",
    "Order " + "4111 1111 1111 1112".translate(ARABIC_INDIC) + " fails Luhn.",
    "Order 4111\u00a01111\u00a01111\u00a01112 fails Luhn.",
    "Released " + "2024-03-15".translate(FULLWIDTH) + " as " + "v1.2.3.4".translate(FULLWIDTH) + ".",
    "The slack channel xoxo-friends and the word xoxb alone.",
    "10² is a hundred and ½ is a half; SSN format is AAA-GG-SSSS.",
    "Send the bearer bond to 'jane' today; it's@noon.",
]


def redact(text: str, **options) -> tuple[str, dict]:
    stage = Pii(Pii.Config(**options))
    out = list(stage([Record("r", [{"role": "user", "content": text}])]))
    return out[0].messages[0]["content"], stage.found


@pytest.mark.parametrize("kind,text,value", PLANTED, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(PLANTED)])
def test_each_planted_value_is_replaced_by_its_placeholder(kind, text, value):
    redacted, found = redact(text)
    assert value not in redacted
    assert redacted == text.replace(value, f"[{kind.upper()}]")
    assert dict(found) == {kind: 1}


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_stay_untouched(text):
    redacted, found = redact(text)
    assert redacted == text and not found


@pytest.mark.parametrize("kind,text,value", MISSED_FORMS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(MISSED_FORMS)])
def test_other_scripts_spacings_cases_and_contexts_are_found(kind, text, value):
    redacted, found = redact(text)
    assert redacted == text.replace(value, f"[{kind.upper()}]")
    assert dict(found) == {kind: 1}


@pytest.mark.parametrize("text", MISSED_FORMS_LOOK_ALIKES)
def test_look_alikes_of_those_forms_stay_untouched(text):
    redacted, found = redact(text)
    assert redacted == text and not found


def test_national_numbers_are_read_in_the_configured_regions():
    text = "Appelez le 01 42 68 53 00 ou le 06 12 34 56 78."
    assert redact(text)[0] == text  # read as US numbers, these are not valid
    redacted, found = redact(text, regions=["FR"])
    assert redacted == "Appelez le [PHONE] ou le [PHONE]." and found == {"phone": 2}


def test_allowed_values_stay():
    text = "Write to Support@Shop.example, not to jane@shop.example."
    assert redact(text, allow=["support@shop.example"])[0] == "Write to Support@Shop.example, not to [EMAIL]."


def test_only_the_chosen_kinds_are_looked_for():
    text = "Mail a@b.example or call (415) 555-2671."
    assert redact(text, kinds=["email"])[0] == "Mail [EMAIL] or call (415) 555-2671."


def test_redaction_keeps_the_record_shape_and_notes_what_it_replaced():
    record = Record("r1", [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "My card 4111111111111111 was charged twice."},
                           {"role": "assistant", "content": "Write to billing@shop.example with 4111111111111111."}],
                    {"task": "qa", "context": "Support line +44 20 7946 0958.", "seed": {"topic": "billing"}})
    untouched = Record("r2", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], {"task": "qa"})
    stage = Pii()
    kept = list(stage([record, untouched]))
    assert [r.id for r in kept] == ["r1", "r2"]
    assert [m["role"] for m in kept[0].messages] == ["system", "user", "assistant"]
    assert kept[0].messages[1]["content"] == "My card [CARD] was charged twice."
    assert kept[0].messages[2]["content"] == "Write to [EMAIL] with [CARD]."
    assert kept[0].metadata["context"] == "Support line [PHONE]."
    assert kept[0].metadata["seed"] == {"topic": "billing"} and kept[0].metadata["task"] == "qa"
    assert kept[0].metadata["pii_redacted"] == {"card": 2, "email": 1, "phone": 1}
    assert kept[1] is untouched and "pii_redacted" not in kept[1].metadata
    assert stage.funnel()["found"] == {"card": 2, "email": 1, "phone": 1}
    assert stage.funnel()["records_with"] == {"card": 1, "email": 1, "phone": 1}


ROWS = [
    {"id": "clean", "prompt": "How do tides work?", "completion": "The Moon pulls the sea."},
    {"id": "mail", "prompt": "Who do I ask?", "completion": "Email jane.doe@example.com or call (415) 555-2671."},
    {"id": "key", "prompt": "Why does my script fail?", "completion": "Your key sk-proj-Xq3vT9bL0pZ8aR2mK7wN4sY1 expired."},
    {"id": "order", "prompt": "Where is order 4111 1111 1111 1112?", "completion": "Version 1.2.3.4 shipped on 2024-03-15."},
]


def test_factory_filter_redacts_and_counts_per_kind_in_the_funnel_and_card(tmp_path):
    pipeline = write_pipeline(tmp_path, filters=[{"type": "pii"}, {"type": "exact_dedup"}])
    source = write_input(tmp_path, "jsonl", ROWS)
    out = tmp_path / "out"
    assert main(["filter", str(pipeline), "--input", str(source), "--out", str(out), "--quiet"]) == 0
    kept = {r["id"]: r for r in datasets.load_from_disk(str(out / "dataset"))}
    assert set(kept) == {"clean", "mail", "key", "order"}
    assert kept["mail"]["messages"][1]["content"] == "Email [EMAIL] or call [PHONE]."
    assert kept["key"]["messages"][1]["content"] == "Your key [SECRET] expired."
    assert kept["order"]["messages"] == [{"role": "user", "content": ROWS[3]["prompt"]},
                                         {"role": "assistant", "content": ROWS[3]["completion"]}]
    # One metadata schema for the dataset: kinds found only in other rows are null here.
    assert {k: v for k, v in kept["mail"]["metadata"]["pii_redacted"].items() if v is not None} == {"email": 1,
                                                                                                     "phone": 1}
    everything = (out / "data.jsonl").read_text() + (out / "data.parquet").read_bytes().decode("latin-1")
    assert "jane.doe@example.com" not in everything and "sk-proj-" not in everything
    stage = json.loads((out / "run.json").read_text())["funnel"]["stages"][0]
    assert stage["stage"] == "pii" and stage["found"] == {"email": 1, "phone": 1, "secret": 1}
    card = (out / "README.md").read_text()
    assert "## Personal data" in card and "| email | 1 | 1 |" in card and "| secret | 1 | 1 |" in card
    report = (out / "report.html").read_text()
    assert "<h2>Personal data</h2>" in report and "<td>secret</td><td class=num>1</td>" in report


def test_drop_mode_rejects_with_the_kinds_and_publishes_no_raw_value(tmp_path):
    pipeline = write_pipeline(tmp_path, filters=[{"type": "pii", "action": "drop"}])
    source = write_input(tmp_path, "jsonl", ROWS)
    out = tmp_path / "out"
    assert main(["filter", str(pipeline), "--input", str(source), "--out", str(out), "--quiet"]) == 0
    assert [r["id"] for r in read_jsonl(out / "data.jsonl")] == ["clean", "order"]
    rejected = {r["id"]: r for r in read_jsonl(out / "rejected.jsonl")}
    assert {k: (r["stage"], r["reason"]) for k, r in rejected.items()} == {"mail": ("pii", "pii"), "key": ("pii", "pii")}
    assert rejected["mail"]["detail"] == "found email 1, phone 1"
    assert rejected["mail"]["metadata"]["pii_found"] == {"email": 1, "phone": 1}
    text = (out / "rejected.jsonl").read_text()
    assert "jane.doe@example.com" not in text and "[EMAIL]" in text and "sk-proj-" not in text
    assert json.loads((out / "run.json").read_text())["funnel"]["stages"][0]["dropped"] == {"pii": 2}


@pytest.mark.parametrize("entry,words", [
    ({"type": "pii", "kinds": ["email", "passport"]}, ["filters[0].kinds", "'passport'"]),
    ({"type": "pii", "action": "mask"}, ["filters[0].action"]),
    ({"type": "pii", "regions": ["XX"]}, ["filters[0].regions", "'XX'"]),
    ({"type": "pii", "kinds": ["name"]}, ["filters[0]", "ner.model"]),
    ({"type": "pii", "ner": {"model": "/nowhere/ner-model"}}, ["filters[0].ner.model", "/nowhere/ner-model"]),
])
def test_a_bad_pii_entry_is_one_line_before_anything_is_sent(tmp_path, loopback, entry, words):
    url = loopback()
    pipeline = write_pipeline(tmp_path, url, filters=[entry])
    result = factory_cli("run", str(pipeline), "--quiet")
    assert_user_error(result.returncode, result.stderr, words)
    assert sum(loopback.teacher.received.values()) == 0
    assert not (tmp_path / "out").exists()


def test_grounded_run_redacts_answers_quotes_and_the_passage_in_metadata(tmp_path, loopback):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "contact.txt").write_text("Contact facts. Write to help@orbit.example or call +1 212 555 0199 on weekdays; "
                                      "refunds go to IBAN GB82WEST12345698765432 within ten days.\n")
    pairs = [{"question": "How do I reach support?", "quote": "Write to help@orbit.example or call +1 212 555 0199",
              "answer": "Email help@orbit.example or phone +1 212 555 0199.", "supported": True},
             {"question": "When are refunds paid?", "quote": "within ten days", "answer": "Within ten days.",
              "supported": True}]
    url = loopback(replies=[(r"Contact facts", json.dumps({"pairs": pairs}))])
    path = grounded_pipeline(tmp_path, url, {"pairs_per_chunk": 2, "chunking": {"size": 500, "overlap": 0, "min_chars": 20}})
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**config, "filters": [{"type": "pii"}]}))
    result = factory_cli("run", str(path), "--quiet")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert [r["messages"][1]["content"] for r in rows] == ["Email [EMAIL] or phone [PHONE].", "Within ten days."]
    meta = rows[0]["metadata"]
    assert meta["quote"] == "Write to [EMAIL] or call [PHONE]"
    assert "[IBAN]" in meta["context"] and "help@orbit.example" not in meta["context"]
    assert meta["pii_redacted"] == {"email": 3, "iban": 1, "phone": 3}
    assert "help@orbit.example" not in (tmp_path / "out" / "README.md").read_text()


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory):
    from tests.helpers.tiny_models import build_tiny_ner_model

    return build_tiny_ner_model(tmp_path_factory.mktemp("ner"))


def test_names_and_addresses_come_from_a_local_ner_model(tiny_ner, tmp_path):
    # Name pairs the model never saw together, beside pattern kinds it does not know.
    rows = [{"id": "a", "prompt": "Who signed ?", "completion": "Yesterday Grace Knuth wrote from 221 Mill Avenue about "
                                                               "the order . Card 4111 1111 1111 1111 ."},
            {"id": "b", "prompt": "Who comes ?", "completion": "Our meeting with Edsger Curie moved to Tuesday ."},
            {"id": "c", "prompt": "When ?", "completion": "Call the shop before noon about the delivery ."}]
    source = write_input(tmp_path, "jsonl", rows)
    pipeline = write_pipeline(tmp_path, filters=[{"type": "pii", "ner": {"model": str(tiny_ner)}}])
    out = tmp_path / "out"
    result = factory_cli("filter", str(pipeline), "--input", str(source), "--out", str(out), "--quiet",
                         env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    answers = {r["id"]: r["messages"][1]["content"] for r in read_jsonl(out / "data.jsonl")}
    assert answers == {"a": "Yesterday [NAME] wrote from [ADDRESS] about the order . Card [CARD] .",
                       "b": "Our meeting with [NAME] moved to Tuesday .",
                       "c": "Call the shop before noon about the delivery ."}
    stage = json.loads((out / "run.json").read_text())["funnel"]["stages"][0]
    assert stage["found"] == {"address": 1, "card": 1, "name": 2}
    assert stage["kinds"][-2:] == ["name", "address"]


def test_ner_kinds_can_be_chosen_alone(tiny_ner):
    stage = Pii(Pii.Config(kinds=["name"], ner={"model": str(tiny_ner)}))
    text = "Please ask Alan Hopper about the invoice . He lives at 7 Elm Road near the park ."
    out = list(stage([Record("r", [{"role": "user", "content": text}])]))
    assert out[0].messages[0]["content"] == "Please ask [NAME] about the invoice . He lives at 7 Elm Road near the park ."

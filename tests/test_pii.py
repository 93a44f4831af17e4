"""The ``pii`` stage: every kind in its formats is replaced and counted, the look-alikes (dates,
ISBNs, versions, prices, file names, Luhn failures) keep their bytes, parameters are checked, a
batch keeps its rows and nulls, hostile text stays cheap, and a run through the engine counts
exactly what the stage's own function finds in real web pages with PII pasted in."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest
from pipeline_helpers import read_manifest_files, web_docs, write_jsonl_gz
from pydantic import ValidationError

from tokenmill.engine.config import ConfigError, build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.cleanup.pii import (
    PLACEHOLDERS,
    PIIParams,
    PIIStage,
    card_brand_ok,
    iban_ok,
    luhn_ok,
    redact,
)

SAMPLES = {
    "email": ["jane.doe@example.com", "x+tag@sub.example.co.uk", "USER_1@Example.ORG",
              "first.last@mail.uni-heidelberg.de", "josé.garcía@correo.es", "5551234567@example.com"],
    "ip": ["192.168.1.1", "10.0.0.255", "8.8.8.8", "0.0.0.0", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
           "2001:db8::ff00:42:8329", "fe80::1", "FE80::0202:B3FF:FE1E:8329"],
    "phone": ["+44 20 7946 0958", "0044 20 7946 0958", "+1 (555) 123-4567", "+1-212-975-3327",
              "+49 (0)30 1234567", "+33 1 23 45 67 89", "+447946095812", "+49 - (40) - 300 30 - 1141",
              "(555) 123-4567", "(555)123-4567", "555-123-4567", "555.123.4567", "555 123 4567",
              "1-800-555-1234", "020 7946 0958", "0161 496 0000", "01 23 45 67 89", "01.23.45.67.89",
              "030 1234567", "030-123456-78", "030/1234567", "030 / 2325 786", "(030) 1234567",
              "0201.2402-403", "(11) 91234-5678", "(11) 3456-7890", "138 0013 8000", "138-0013-8000",
              "03-1234-5678", "(02) 9876 5432", "06 1234 5678"],
    "payment_card": ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "4222222222222",
                     "5555 5555 5555 4444", "2223 0031 2200 3222", "3782 822463 10005", "371449635398431",
                     "6011 1111 1111 1117", "3530 1113 3330 0000", "3056 930902 5904", "6200000000000005"],
    "iban": ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32",
             "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606", "NL91 ABNA 0417 1643 00",
             "BE68 5390 0754 7034", "CH93 0076 2011 6238 5295 7", "ES91 2100 0418 4502 0005 1332",
             "IT60 X054 2811 1010 0000 0123 456", "NO93 8601 1117 947", "PL61 1090 1014 0000 0712 1981 2874"],
}

LOOK_ALIKES = [
    "Vol. (12) 2019-2020", "(2023) 1234-5678", "138 001 3800", "1380 0138 000",
    # dates and times
    "2023-01-15", "15.01.2023", "01/15/2023", "01-15-2023", "03/29/06 2005", "05.06.2023 12 Uhr", "12:30:45",
    "12:30", "1999, 2000 and 2023",
    # ISBNs
    "ISBN 978-3-16-148410-0", "ISBN-10 0-306-40615-2", "ISBN 9783161484100", "ISBN: 0 306 40615 2",
    # versions and other dotted runs
    "v1.2.3.4", "version 1.2.3.4", "Version: 10.0.0.1", "release 2.0.0.1", "build 4.3.2.1", "ver. 1.0.0.0",
    "1.2.3.4.5", "OID 1.3.6.1.4.1.343", "256.1.1.1", "192.168.01.1", "1.234.567.890",
    # numbers and prices
    "$1,234.56", "€ 1.234.567,89", "1 234 567", "1234567", "123456", "1234567890", "0123456789",
    "Order 12345678", "123-456", "12 34 56", "example.org/2012/08/06/644121/story", "Worcester, MA 01605-3109",
    # file names, code, MACs
    "icon@2x.png", "sprite@3x.webp", "logo@2x.JPG", "style@v2.css", "app@1.5x.svg", "@handle", "a @ b",
    "std::vector", "a::b", "dead::beef", "::1", "00:1A:2B:3C:4D:5E",
    # cards failing Luhn or IIN, IBANs failing mod-97 or length
    "4111 1111 1111 1112", "4111111111111112", "1234 5678 9012 3456", "9999999999999995",
    "DE89 3704 0044 0532 0130 01", "XX89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130",
]


def run_stage(texts: list, params: PIIParams | None = None) -> tuple[list, list[dict]]:
    stage = PIIStage(params or PIIParams())
    stage.setup()
    out = stage(pa.table({"text": pa.array(texts, pa.large_string())}))
    counts = [{e["key"]: e["n"] for e in row} for row in out["stage_counts"].to_pylist()]
    for before, after, row in zip(texts, out["text"].to_pylist(), counts):   # what the placeholders stand for
        marks = sum(n * len((params or PIIParams()).placeholders[k]) for k, n in row.items() if k != "chars_replaced")
        assert row.pop("chars_replaced", 0) == (len(before) - len(after) + marks if before else 0)
    return out["text"].to_pylist(), counts


@pytest.mark.parametrize("kind,sample", [(k, s) for k, samples in SAMPLES.items() for s in samples])
def test_each_kind_is_replaced_and_counted(kind, sample):
    texts, counts = run_stage([f"Contact: {sample}, thanks.", f"{sample}\nnext line", sample])
    mark = PLACEHOLDERS[kind]
    assert texts == [f"Contact: {mark}, thanks.", f"{mark}\nnext line", mark]
    assert counts == [{kind: 1}] * 3


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_keep_their_bytes(text):
    doc = f"In the text: {text}. And on a line of its own:\n{text}\n"
    texts, counts = run_stage([doc])
    assert texts == [doc] and counts == [{}]
    assert redact(doc) == (doc, dict.fromkeys(PLACEHOLDERS, 0))


def test_checks_of_cards_and_ibans():
    for number in ("4111111111111111", "378282246310005", "30569309025904", "6011000990139424"):
        assert luhn_ok(number) and card_brand_ok(number)
        for d in "0123456789":   # any other last digit fails Luhn and stays
            broken = number[:-1] + d
            if d != number[-1]:
                assert not luhn_ok(broken)
                assert run_stage([f"card {broken} here"])[0] == [f"card {broken} here"]
    assert not card_brand_ok("9" * 16) and not card_brand_ok("4" * 17) and not card_brand_ok("34" + "0" * 14)
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")   # one short of the country's length


def test_precedence_and_run_on_groups():
    text = ("card 4111 1111 1111 1111 phone +1 555 123 4567 iban DE89370400440532013000 "
            "mail 5551234567@example.com ip 192.168.1.1:8080 and 10.0.0.0/8 at http://172.16.0.1/admin\n"
            "+44 20 7946 0958 1234 5678 | BE68 5390 0754 7034 AND MORE | Tel. 030 / 2325 786 -122")
    out, found = redact(text)
    assert out == ("card <CARD> phone <PHONE> iban <IBAN> mail <EMAIL> ip <IP>:8080 and <IP>/8 at http://<IP>/admin\n"
                   "<PHONE> 1234 5678 | <IBAN> AND MORE | Tel. <PHONE>")
    assert found == {"payment_card": 1, "phone": 3, "iban": 2, "email": 1, "ip": 3}


def test_placeholders_and_kinds_are_configurable():
    doc = "Mail jane@example.com, call 555-123-4567 from 10.1.2.3 with card 4111111111111111."
    texts, counts = run_stage([doc], PIIParams(placeholders={"email": "[mail]", "phone": ""}))
    assert texts == ["Mail [mail], call  from <IP> with card <CARD>."]
    assert counts == [{"email": 1, "phone": 1, "ip": 1, "payment_card": 1}]
    texts, counts = run_stage([doc], PIIParams(kinds=["email", "ip"]))
    assert texts == ["Mail <EMAIL>, call 555-123-4567 from <IP> with card 4111111111111111."]
    assert counts == [{"email": 1, "ip": 1}]
    texts, counts = run_stage([doc], PIIParams(kinds=["phone"]))   # a card is not a phone, even when cards are kept
    assert texts == ["Mail jane@example.com, call <PHONE> from 10.1.2.3 with card 4111111111111111."]
    assert run_stage([doc], PIIParams(kinds=[])) == ([doc], [{}])


def test_params_are_checked():
    assert PIIParams().kinds == ["email", "ip", "phone", "payment_card", "iban"]
    assert PIIParams(placeholders={"iban": "#"}).placeholders == {**PLACEHOLDERS, "iban": "#"}
    for bad in ({"kinds": ["email", "ssn"]}, {"placeholders": {"ssn": "x"}}, {"placeholder": {}}, {"kinds": "email"}):
        with pytest.raises(ValidationError):
            PIIParams(**bad)
    assert all(field.description for field in PIIParams.model_fields.values())
    with pytest.raises(ConfigError) as exc:
        build_pipeline({"name": "p", "input": {"paths": ["in.jsonl"]}, "output": {"path": "out"},
                        "stages": [{"type": "pii", "kinds": ["email", "ssn"]}]})
    assert any("kinds" in key for key, _ in exc.value.errors)


def test_a_batch_keeps_its_rows_nulls_and_bytes():
    texts = [None, "", "Nothing personal here, just 2023-01-15 and v1.2.3.4.",
             "Line one.\r\nWrite to a@b.org\r\nor call +33 1 23 45 67 89 / 01 23 45 67 89\r\n",
             "caf\u00e9 \U0001f600 4111 1111 1111 1111 \u00fcber DE89 3704 0044 0532 0130 00", "plain"]
    batch = pa.table({"id": [f"d{i}" for i in range(len(texts))],
                      "text": pa.chunked_array([pa.array(texts[:3], pa.large_string()), pa.array(texts[3:], pa.large_string())]),
                      "num_chars": [len(t or "") for t in texts]})
    out = PIIStage(PIIParams())(batch)
    assert out.num_rows == batch.num_rows and out["id"].to_pylist() == batch["id"].to_pylist()
    assert out["num_chars"].to_pylist() == batch["num_chars"].to_pylist()   # the engine recounts, not the stage
    assert out["text"].type == pa.large_string()
    assert out["text"].to_pylist() == [None, "", texts[2], "Line one.\r\nWrite to <EMAIL>\r\nor call <PHONE> / <PHONE>\r\n",
                                       "caf\u00e9 \U0001f600 <CARD> \u00fcber <IBAN>", "plain"]
    replaced = len("a@b.org") + len("+33 1 23 45 67 89") + len("01 23 45 67 89")
    assert out["stage_counts"].to_pylist() == [
        [], [], [], [{"key": "email", "n": 1}, {"key": "phone", "n": 2}, {"key": "chars_replaced", "n": replaced}],
        [{"key": "payment_card", "n": 1}, {"key": "iban", "n": 1}, {"key": "chars_replaced", "n": 19 + 27}], []]
    small = PIIStage(PIIParams())(pa.table({"text": pa.array(["x@y.io", None], pa.string())}))
    assert small["text"].type == pa.string() and small["text"].to_pylist() == ["<EMAIL>", None]
    empty = PIIStage(PIIParams())(pa.table({"text": pa.array([], pa.large_string())}))
    assert empty.num_rows == 0 and "stage_counts" in empty.column_names


def test_documents_without_pii_come_back_byte_identical(shared_data):
    texts = [r["text"] for r in web_docs(shared_data)]
    clean = [t for t in texts if not any(redact(t)[1].values())]
    assert len(clean) > 300
    out, counts = run_stage(clean)
    assert out == clean and all(c == {} for c in counts)


def test_hostile_text_finishes_and_keeps_what_is_not_pii():
    rng = random.Random(7)
    digits = "".join(rng.choice("0123456789 -./()+") for _ in range(5_000_000))
    ats, colons, dots = "@" * 100_000, "1:" * 500_000, "a." * 500_000 + "@"
    texts, counts = run_stage([digits, ats, colons, dots, "7" * 1_000_000, "0 12" * 300_000])
    assert texts[1:] == [ats, colons, dots, "7" * 1_000_000, "0 12" * 300_000] and counts[1:] == [{}] * 5
    assert len(texts[0]) > 0 and set(texts[0]) <= set("0123456789 -./()+<>PHONEIACRDB")
    assert texts[0].count("<PHONE>") == counts[0].get("phone", 0)


def test_the_stage_in_a_run_counts_what_it_replaced(tmp_path, shared_data, engine):
    rows = web_docs(shared_data)[:80]
    injected = {"email": 0, "ip": 0, "phone": 0, "payment_card": 0, "iban": 0}
    for i in range(0, 60, 3):
        rows[i]["text"] += (f"\nWrite to editor{i}@news.example.com or call (555) 123-{4000 + i}, "
                            f"server 10.0.{i}.7, IBAN DE89 3704 0044 0532 0130 00.")
        rows[i + 1]["text"] = f"Pay with 4111 1111 1111 1111 or +44 20 7946 {1000 + i}.\n" + rows[i + 1]["text"]
        for kind, n in (("email", 1), ("phone", 2), ("ip", 1), ("iban", 1), ("payment_card", 1)):
            injected[kind] += n
    write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    pipe = build_pipeline({"name": "pii", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]},
                           "output": {"path": str(tmp_path / "out")},
                           "stages": [{"type": "pii", "resources": {"batch_size": 7}}]})
    report = run_pipeline(pipe, progress=False, engine=engine, num_cpus=1).report
    data = read_manifest_files(tmp_path / "out", "data/")
    expected = {r["id"]: redact(r["text"]) for r in rows}
    assert sorted(data["id"].to_pylist()) == sorted(expected)
    for doc_id, text in zip(data["id"].to_pylist(), data["text"].to_pylist()):
        assert text == expected[doc_id][0]
    assert data["num_chars"].to_pylist() == [len(t) for t in data["text"].to_pylist()]
    totals = {k: sum(found[k] for _, found in expected.values()) for k in injected}
    assert all(totals[k] >= n > 0 for k, n in injected.items())
    reported = report["stage_counts"]["pii"]["counts"]
    assert {k: n for k, n in reported.items() if k in injected} == {k: n for k, n in totals.items() if n}
    stage = {s["stage"]: s for s in report["stages"]}["pii"]
    assert stage["docs_modified"] == reported["docs_modified"] == sum(1 for r in rows if expected[r["id"]][0] != r["text"]) >= 40
    assert stage["chars_out"] == stage["chars_in"] - stage["chars_removed"] == sum(data["num_chars"].to_pylist())

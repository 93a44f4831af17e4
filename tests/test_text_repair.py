"""``text_repair``: mojibake and entities fixed (built here and found in the dev data), Unicode
normalised, boilerplate and C4 lines removed per language, untouched documents byte-identical,
and in a run the counts stay true."""
from __future__ import annotations

import json

import ftfy
import pyarrow as pa
import pytest
from pipeline_helpers import read_manifest_files, web_docs, write_jsonl_gz

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.cleanup.repair import RepairParams, TextRepair


def _repair(texts: list, languages: list | None = None, **params) -> pa.Table:
    stage = TextRepair(RepairParams(**params))
    stage.setup()
    cols = {"text": pa.array(texts, pa.large_string())}
    if languages is not None:
        cols["language"] = pa.array(languages, pa.string())
    return stage(pa.table(cols))


def _counts(row: list) -> dict:
    return {e["key"]: e["n"] for e in row}


def _mojibake() -> list[tuple[str, str]]:
    """(original, broken) for texts whose UTF-8 bytes a legacy code page decodes (wrongly)."""
    pairs = []
    for original in ["café crème", "naïve “quotes” — über", "Straße, Ærø, señor", "Gdańsk – łódź"]:
        for codec in ["cp1252", "latin-1", "cp1250"]:
            try:
                pairs.append((original, original.encode("utf-8").decode(codec)))
            except UnicodeDecodeError:
                continue
    return pairs


@pytest.mark.parametrize("original, broken", _mojibake())
def test_mojibake_built_here_is_repaired(original, broken):
    out = _repair([f"Line one: {broken}.", "clean line."])
    assert out["text"].to_pylist() == [f"Line one: {original}.", "clean line."]
    assert [_counts(r).get("ftfy_fixed", 0) for r in out["stage_counts"].to_pylist()] == [1, 0]


def test_mojibake_and_entities_in_the_dev_data_are_fixed_as_ftfy_does(shared_data):
    texts = [json.loads(line)["text"] for line in open(shared_data / "langid_dev.jsonl", encoding="utf-8")]
    config = ftfy.TextFixerConfig(uncurl_quotes=False, fix_character_width=False, fix_latin_ligatures=False,
                                  fix_line_breaks=False, normalization=None)
    broken = [t for t in texts if ftfy.fix_text(t, config) != t]
    assert len(broken) >= 20   # HTML entities, C1 controls, Windows-1250 mojibake: real ones
    out = _repair(broken + texts[:500], normalization="none", boilerplate=False, policy=False, javascript=False, lorem_ipsum=False)
    assert out["text"].to_pylist()[:len(broken)] == [ftfy.fix_text(t, config) for t in broken]
    assert out["text"].to_pylist()[len(broken):] == [ftfy.fix_text(t, config) for t in texts[:500]]


def test_lines_are_removed_by_rule_and_language():
    doc_en = "Welcome to the shop\nWe use cookies to give you the best experience.\nOur bread is baked daily.\n" \
             "Please enable JavaScript in your browser.\nLorem ipsum dolor sit amet.\nRead our Privacy Policy\n\nAll rights reserved."
    doc_de = "Wir verwenden Cookies, um Ihnen das beste Erlebnis zu bieten.\nUnser Brot wird täglich gebacken.\nsubscribe to our newsletter"
    out = _repair([doc_en, doc_de], ["en", "de"], policy=True)
    assert out["text"].to_pylist() == ["Welcome to the shop\nOur bread is baked daily.\n", "Unser Brot wird täglich gebacken.\nsubscribe to our newsletter"]
    c_en, c_de = (_counts(r) for r in out["stage_counts"].to_pylist())
    assert c_en == {"lines:javascript": 1, "lines:lorem_ipsum": 1, "lines:policy": 2, "lines:boilerplate": 1}
    assert c_de == {"lines:boilerplate": 1}    # the German list only: the newsletter line is English


def test_terminal_punctuation_short_lines_and_long_boilerplate_lines():
    long_line = "Subscribe to our newsletter " + "and many more words of real content " * 8 + "in this sentence."
    doc = "A heading\nA sentence that ends well.\nShort one.\n" + long_line + "\n日本語の文。"
    out = _repair([doc, doc], ["en", "ja"], no_terminal_punctuation=True)
    en, ja = out["text"].to_pylist()
    assert en == "A sentence that ends well.\nShort one.\n" + long_line   # the boilerplate line is long: kept
    assert _counts(out["stage_counts"].to_pylist()[0]) == {"lines:no_terminal_punctuation": 2}
    assert ja.endswith("日本語の文。")                  # "。" ends a Japanese sentence
    short = _repair([doc], ["en"], min_words_per_line=3)
    assert short["text"].to_pylist() == ["A sentence that ends well.\n" + long_line]
    assert _counts(short["stage_counts"].to_pylist()[0]) == {"lines:short": 3}


def test_a_long_line_of_prose_is_not_page_furniture():
    speech = "The State of the Union is sound. " * 40 + "We will protect your privacy policy rights. " + "More. " * 10
    out = _repair([speech, "Read our privacy policy."])
    assert out["text"].to_pylist() == [speech, ""] and out["reject_reason"].to_pylist() == [None, "empty_after_repair"]


def test_untouched_documents_are_byte_identical_and_empty_ones_rejected():
    clean = ["Plain text.\r\nWith CRLF lines.\r\n", "  spaces  kept\n\n\n", "", None, "😀 emoji, ｆｕｌｌｗｉｄｔｈ, ﬁ ligature"]
    out = _repair(clean + ["Lorem ipsum dolor sit amet\nSubscribe to our newsletter"])
    assert out["text"].to_pylist()[:5] == clean
    assert out["reject_reason"].to_pylist() == [None] * 5 + ["empty_after_repair"]
    assert _repair(["ｆｕｌｌ"], normalization="NFKC")["text"].to_pylist() == ["full"]


def test_hostile_input_does_not_blow_up():
    many_lines = "\n" * 200_000 + "x"
    huge_line = "Ã©" * 500_000
    out = _repair([many_lines, huge_line, "&amp;" * 10_000])
    assert out["text"].to_pylist()[0] == many_lines
    assert out["text"].to_pylist()[1] == "é" * 500_000 and out["text"].to_pylist()[2] == "&" * 10_000


def test_text_repair_in_a_run_keeps_counts_true(tmp_path, shared_data, engine):
    rows = web_docs(shared_data)[:50]
    rows[0]["text"] = "Caf\u00c3\u00a9 opens at 9.\nWe use cookies on this site.\n" + rows[0]["text"]
    rows[1]["text"] = "Lorem ipsum dolor sit amet"
    write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    pipe = build_pipeline({"name": "repair", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]},
                           "output": {"path": str(tmp_path / "out")},
                           "stages": [{"type": "text_repair"}, {"type": "langid"}]})
    report = run_pipeline(pipe, progress=False, engine=engine, num_cpus=1).report
    data = read_manifest_files(tmp_path / "out", "data/")
    assert data["num_chars"].to_pylist() == [len(t) for t in data["text"].to_pylist()]
    first = dict(zip(data["id"].to_pylist(), data["text"].to_pylist()))[rows[0]["id"]]
    assert first.startswith("Café opens at 9.\n") and "cookies" not in first.split("\n")[1]
    stage = {s["stage"]: s for s in report["stages"]}["text_repair"]
    assert stage["docs_rejected"] == 1 and stage["docs_modified"] >= 2
    counts = report["stage_counts"]["text_repair"]["counts"]
    assert counts["ftfy_fixed"] >= 1 and counts["lines:lorem_ipsum"] == 1 and counts["lines:policy"] >= 1
    assert report["input"]["chars"] == sum(len(r["text"]) for r in rows)
    assert report["stages"][-1]["chars_out"] == sum(data["num_chars"].to_pylist())

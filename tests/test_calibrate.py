"""``tokenmill calibrate`` on real text of shared/data (langid_dev sentences as the clean reference,
web_dev as the sample) with the real lid.176 and heuristics: the FineWeb-2 LID rule and its cap;
sentence marks learned from Punjabi, Urdu and Armenian text; a C4 filter that rejects clean
Serbian turned off while corrupted copies stay rejected; the written folder loads and validates
as a languages.dir, holds the base files it did not calibrate, has a calibration.html page per
language, and is the same on a second run;
a language with too little text gets no file and says why; a missing input is a clear error; a
language without a file gets its script and word tokenizer from the reference; the shipped folder
is exactly what its documented command writes, hand-written LID thresholds kept where FineWeb-2's
rule would raise them; a second calibrate on the same folder is refused; a line too long to hold is
skipped."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import tokenmill_cmd

from tokenmill.stages.calibrate import derive
from tokenmill.stages.calibrate.documents import as_documents, corrupted, read_reference

HAND = Path(__file__).resolve().parents[1] / "configs" / "languages" / "hand-written"
#: the command that writes configs/languages (configs/languages/README.md)
SHIPPED_ARGS = ("--reference", "{data}/langid_dev.jsonl", "--sample", "{data}/web_dev.jsonl",
                "--base", str(HAND), "--prefer-base")


@pytest.fixture(scope="module")
def reference(shared_data) -> dict[str, list[str]]:
    return read_reference([str(shared_data / "langid_dev.jsonl")])


def test_the_fineweb2_rule_and_its_bounds():
    assert derive.fineweb2_lid_threshold([0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert derive.fineweb2_lid_threshold([0.99, 1.0, 1.0]) == 0.9            # min(0.9, ...)
    assert derive.fineweb2_lid_threshold([0.1, 0.5, 0.9]) == 0.3             # max(0.3, median - std)
    scores = [0.5, 0.6, 0.7, 0.8, 0.9]
    assert derive.fineweb2_lid_threshold(scores) == pytest.approx(0.7 - 0.1414213, abs=1e-6)


def test_lid_threshold_from_the_sample_capped_by_the_clean_reference():
    sample = [0.9] * 20
    value, why = derive.lid_threshold(sample, [0.5] * 3 + [0.95] * 30, shipped=0.65, min_docs=10)   # 9% low
    assert value == 0.5 and "FineWeb-2 rule on 20 sample documents" in why and "capped" in why
    assert derive.lid_threshold(sample, [0.5] + [0.95] * 30, shipped=0.65, min_docs=10)[0] == 0.9   # 3% low: no cap
    value, why = derive.lid_threshold([0.9] * 3, [0.95] * 30, shipped=0.65, min_docs=10)
    assert value is None and "shipped value (3 sample documents" in why     # kept as shipped


def test_sentence_marks_of_scripts_c4_did_not_know(reference):
    for lang, mark in (("pa", "।"), ("ur", "۔"), ("hy", "։")):
        _, sentences = as_documents(reference[lang], seed=0)
        assert mark in derive.sentence_marks(sentences), lang
    _, english = as_documents(reference["en"], seed=0)
    assert set(derive.sentence_marks(english)) <= set(".!?\"'”’»):;")


def test_a_filter_that_rejects_clean_serbian_is_turned_off_and_corrupted_copies_stay_rejected(reference):
    from tokenmill.engine.languages import LanguageTable, language_params_model

    docs, _ = as_documents(reference["sr"], seed=0)
    bad = corrupted(docs, seed=0)
    start = LanguageTable().get("sr").model_dump()
    params, notes = derive.loosen(start, docs, bad, 0.03, language_params_model().model_validate)
    assert params["c4"]["filter_curly_bracket"] is False and start["c4"]["filter_curly_bracket"] is True
    assert notes["c4.filter_curly_bracket"].startswith("off: it rejected")
    lp = language_params_model().model_validate(params)
    assert all(f is not None for f in derive.failures(bad, lp, frozenset()))
    assert sum(f is not None for f in derive.failures(docs, lp, frozenset())) <= 0.03 * len(docs)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, shared_data) -> Path:
    from tokenmill.stages.calibrate.run import CalibrateArgs, calibrate

    out = tmp_path_factory.mktemp("cal") / "langs"
    calibrate(CalibrateArgs(reference=[str(shared_data / "langid_dev.jsonl")],
                            sample=[str(shared_data / "web_dev.jsonl")], out=str(out), base=str(HAND),
                            languages=["pa", "sr", "hr", "ko", "nb", "xh", "cri"]), log=lambda line: None)
    return out


def test_the_folder_is_a_languages_dir_with_each_change_explained(calibrated):
    from tokenmill.engine.languages import LanguageTable, load_language_files

    files = load_language_files(calibrated)
    table = LanguageTable(files=files)
    base = {p.stem for p in HAND.glob("*.yaml")}
    assert base <= set(files) and {"pa", "sr", "hr", "no", "xh"} <= set(files)   # nb is lid.176's "no"
    assert "।" in table.get("pa").terminal_punctuation and table.get("sr").c4.filter_curly_bracket is False
    assert "# added '।'" in (calibrated / "pa.yaml").read_text()
    summary = json.loads((calibrated / "calibration.json").read_text())
    assert summary["pa"]["clean_rejected"] == {"shipped": 1.0, "calibrated": 0.0}
    assert summary["pa"]["corrupted_rejected"]["calibrated"] >= summary["pa"]["corrupted_rejected"]["shipped"]
    assert summary["hr"]["lid_rejects_clean"]["calibrated"] <= 0.05 < summary["hr"]["lid_rejects_clean"]["shipped"]
    assert summary["xh"]["lid_label"] == "xh"          # lid.176 reads it as another reference language
    assert "too little reference text" in summary["cri"]["status"] and not (calibrated / "cri.yaml").exists()
    assert "the base file's values" in (calibrated / "en.yaml").read_text().splitlines()[0]
    page = (calibrated / "calibration.html").read_text()
    assert all(f"<h2 id='{iso}'>" in page for iso in ("pa", "sr", "hr", "ko", "no", "xh"))
    assert "filter_curly_bracket" in page and "<svg" in page and "cri: too little reference text" in page


def test_calibration_is_deterministic(calibrated, tmp_path, shared_data):
    from tokenmill.stages.calibrate.run import CalibrateArgs, calibrate

    calibrate(CalibrateArgs(reference=[str(shared_data / "langid_dev.jsonl")],
                            sample=[str(shared_data / "web_dev.jsonl")], out=str(tmp_path), base=str(HAND),
                            languages=["pa", "sr", "hr", "ko", "nb", "xh", "cri"]), log=lambda line: None)
    for p in calibrated.iterdir():
        assert (tmp_path / p.name).read_bytes() == p.read_bytes(), p.name


def test_the_command_refuses_a_missing_input(tmp_path, shared_data):
    proc = subprocess.run(tokenmill_cmd("calibrate", "--reference", str(tmp_path / "none.jsonl"), "--sample",
                                        str(shared_data / "web_dev.jsonl"), "--out", str(tmp_path / "o")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "none.jsonl" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_shipped_folder_is_what_its_command_writes(tmp_path, shared_data):
    from tokenmill.languages import shipped_dir

    out = tmp_path / "langs"
    proc = subprocess.run(tokenmill_cmd("calibrate", *(a.format(data=shared_data) for a in SHIPPED_ARGS),
                                        "--out", str(out)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "calibrated 76 languages" in proc.stdout
    shipped = sorted(p.name for p in shipped_dir().glob("*.yaml")) + ["calibration.json"]
    assert sorted(p.name for p in out.glob("*.yaml")) + ["calibration.json"] == shipped and len(shipped) == 81
    for name in shipped:
        assert (out / name).read_bytes() == (shipped_dir() / name).read_bytes(), name


def test_the_shipped_files_keep_hand_written_lid_thresholds_and_say_so():
    from tokenmill.engine.languages import LanguageTable, load_language_files
    from tokenmill.languages import shipped_dir

    table = LanguageTable(files=load_language_files(shipped_dir()))
    summary = json.loads((shipped_dir() / "calibration.json").read_text())
    assert table.get("en").lid_threshold == 0.65 and table.get("de").lid_threshold == 0.6
    assert set(summary["en"]["kept"]) == {"lid_threshold"} and "gives 0.89" in summary["en"]["kept"]["lid_threshold"]
    assert "lid_threshold: 0.65  # hand-written value kept: FineWeb-2 rule" in (shipped_dir() / "en.yaml").read_text()
    assert table.get("hr").lid_threshold < 0.6 and "।" in table.get("pa").terminal_punctuation   # calibrated
    assert sum(row["status"] == "calibrated" for row in summary.values()) == 76
    for iso, tokenizer in (("km", "khmer"), ("lo", "lao"), ("my", "myanmar"), ("th", "thai"), ("ja", "cjk")):
        assert table.get(iso).word_tokenizer == tokenizer, iso


def test_a_language_without_a_file_gets_the_script_and_tokenizer_of_its_reference(tmp_path, shared_data, reference):
    from tokenmill.engine.languages import LanguageTable, load_language_files
    from tokenmill.stages.calibrate.run import CalibrateArgs, calibrate

    empty = tmp_path / "empty"
    empty.mkdir()
    calibrate(CalibrateArgs(reference=[str(shared_data / "langid_dev.jsonl")], sample=[str(shared_data / "web_dev.jsonl")],
                            out=str(tmp_path / "o"), base=str(empty), languages=["ja", "ru"]), log=lambda line: None)
    table = LanguageTable(files=load_language_files(tmp_path / "o"))
    assert (table.get("ja").word_tokenizer, table.get("ja").script) == ("cjk", "Jpan")
    assert (table.get("ru").word_tokenizer, table.get("ru").script) == ("whitespace", "Cyrl")
    assert "# the reference is written in Jpan" in (tmp_path / "o" / "ja.yaml").read_text()
    assert len(as_documents(reference["ja"], seed=0)[0]) == 10        # 111 sentences: 11 to a document
    assert derive.script_of(["ខ្ញុំស្រឡាញ់ភាសាខ្មែរ"]) == ("Khmr", "khmer")


def test_a_second_calibrate_on_the_same_folder_is_refused(tmp_path, shared_data):
    from tokenmill.stages.calibrate.run import folder_lock

    held = folder_lock(str(tmp_path / "o"))
    try:
        proc = subprocess.run(tokenmill_cmd("calibrate", "--reference", str(shared_data / "langid_dev.jsonl"),
                                            "--sample", str(shared_data / "web_dev.jsonl"), "--out", str(tmp_path / "o"),
                                            "--languages", "pa"), capture_output=True, text=True, timeout=120)
    finally:
        held.close()
    assert proc.returncode == 2 and "another tokenmill calibrate is writing this folder" in proc.stderr, proc.stderr
    assert not list((tmp_path / "o").glob("*.yaml"))


def test_a_line_too_long_to_hold_is_skipped_and_the_rest_read(tmp_path):
    import io

    from tokenmill.stages.calibrate.documents import bounded_lines

    data = b'{"text": "a", "lang": "en"}\n' + b'{"text": "' + b"x" * 5000 + b'"}\n' + b'{"text": "b", "lang": "en"}'
    with pytest.warns(UserWarning, match="f.jsonl: a line over 1,000 bytes was skipped"):
        lines = list(bounded_lines(io.BytesIO(data), "f.jsonl", limit=1000))
    assert [json.loads(line)["text"] for line in lines] == ["a", "b"]


def test_calibrating_more_languages_into_a_folder_keeps_the_earlier_ones(tmp_path, shared_data):
    from tokenmill.stages.calibrate.run import CalibrateArgs, calibrate

    for lang in ("pa", "sr"):
        calibrate(CalibrateArgs(reference=[str(shared_data / "langid_dev.jsonl")], sample=[str(shared_data / "web_dev.jsonl")],
                                out=str(tmp_path), base=str(HAND), languages=[lang]), log=lambda line: None)
    assert "reference documents)." in (tmp_path / "pa.yaml").read_text().splitlines()[0]   # not overwritten by a base copy
    summary = json.loads((tmp_path / "calibration.json").read_text())
    assert summary["pa"]["status"] == summary["sr"]["status"] == "calibrated"
    assert "the base file's values" in (tmp_path / "en.yaml").read_text().splitlines()[0]

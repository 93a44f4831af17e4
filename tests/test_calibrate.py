"""``tokenmill calibrate`` on real text of shared/data (langid_dev sentences as the clean reference,
web_dev as the sample) with the real lid.176 and heuristics: the FineWeb-2 LID rule and its cap;
sentence marks learned from Punjabi, Urdu and Armenian text; a C4 filter that rejects clean
Serbian turned off while corrupted copies stay rejected; the written folder loads and validates
as a languages.dir, holds the shipped files it did not calibrate, has a calibration.html page per
language, and is the same on a second run;
a language with too little text gets no file and says why; a missing input is a clear error."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import tokenmill_cmd

from tokenmill.stages.calibrate import derive
from tokenmill.stages.calibrate.documents import as_documents, corrupted, read_reference


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
                            sample=[str(shared_data / "web_dev.jsonl")], out=str(out),
                            languages=["pa", "sr", "hr", "ko", "nb", "xh", "cri"]), log=lambda line: None)
    return out


def test_the_folder_is_a_languages_dir_with_each_change_explained(calibrated):
    from tokenmill.engine.languages import LanguageTable, load_language_files
    from tokenmill.languages import shipped_dir

    files = load_language_files(calibrated)
    table = LanguageTable(files=files)
    shipped = {p.stem for p in shipped_dir().glob("*.yaml")}
    assert shipped <= set(files) and {"pa", "sr", "hr", "no", "xh"} <= set(files)   # nb is lid.176's "no"
    assert "।" in table.get("pa").terminal_punctuation and table.get("sr").c4.filter_curly_bracket is False
    assert "# added '।'" in (calibrated / "pa.yaml").read_text()
    summary = json.loads((calibrated / "calibration.json").read_text())
    assert summary["pa"]["clean_rejected"] == {"shipped": 1.0, "calibrated": 0.0}
    assert summary["pa"]["corrupted_rejected"]["calibrated"] >= summary["pa"]["corrupted_rejected"]["shipped"]
    assert summary["hr"]["lid_rejects_clean"]["calibrated"] <= 0.05 < summary["hr"]["lid_rejects_clean"]["shipped"]
    assert summary["xh"]["lid_label"] == "xh"          # lid.176 reads it as another reference language
    assert "too little reference text" in summary["cri"]["status"] and not (calibrated / "cri.yaml").exists()
    assert "shipped values" in (calibrated / "en.yaml").read_text().splitlines()[0]
    page = (calibrated / "calibration.html").read_text()
    assert all(f"<h2 id='{iso}'>" in page for iso in ("pa", "sr", "hr", "ko", "no", "xh"))
    assert "filter_curly_bracket" in page and "<svg" in page and "cri: too little reference text" in page


def test_calibration_is_deterministic(calibrated, tmp_path, shared_data):
    from tokenmill.stages.calibrate.run import CalibrateArgs, calibrate

    calibrate(CalibrateArgs(reference=[str(shared_data / "langid_dev.jsonl")],
                            sample=[str(shared_data / "web_dev.jsonl")], out=str(tmp_path),
                            languages=["pa", "sr", "hr", "ko", "nb", "xh", "cri"]), log=lambda line: None)
    for p in calibrated.iterdir():
        assert (tmp_path / p.name).read_bytes() == p.read_bytes(), p.name


def test_the_command_refuses_a_missing_input(tmp_path, shared_data):
    proc = subprocess.run(tokenmill_cmd("calibrate", "--reference", str(tmp_path / "none.jsonl"), "--sample",
                                        str(shared_data / "web_dev.jsonl"), "--out", str(tmp_path / "o")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "none.jsonl" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

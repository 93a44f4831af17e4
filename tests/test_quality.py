"""Model-based quality filtering with fastText, on real Ray and a real trained model:
``tokenmill train-quality`` reaches a ROC AUC floor on held-out quality_dev documents; the
``quality_fasttext`` stage keeps the top fraction of each language over the whole run (within one
point, with a recorded threshold that reproduces the kept set), filters by a fixed threshold,
annotates only; a missing or corrupt model is a config error before any work."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import tokenmill_cmd
from pipeline_helpers import read_manifest_files

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.quality.evaluate import roc_auc


@pytest.fixture
def engine() -> str:
    """The local executor only: these runs on Ray are test_local_executor's parity tests."""
    return "local"


AUC_FLOOR = 0.97   # measured 0.9953 (held-out 20%: 32 high, 119 low; epoch 25, lr 0.5)
DEFAULTS_FLOOR = 0.97   # measured 0.9958 with no options (held-out 10%: 16 high, 60 low)


def test_train_quality_reaches_the_auc_floor(tmp_path, quality_model):
    """The CLI trains, prints and writes the evaluation; the model folder is what the stage reads."""
    out = tmp_path / "cli-model"
    folder = quality_model.parent
    proc = subprocess.run(tokenmill_cmd("train-quality", "--positive", str(folder / "positive.jsonl"), "--negative",
                                        str(folder / "negative.jsonl"), "--out", str(out), "--holdout", "0.2",
                                        "--epoch", "25", "--lr", "0.5", "--word-ngrams", "2", "--bucket", "100000"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "eval.json").read_text())
    assert result["roc_auc"] >= AUC_FLOOR and f"ROC AUC {result['roc_auc']}" in proc.stdout
    assert result["held_out"] == 151 and result["positives"] == 32
    at_half = next(r for r in result["thresholds"] if r["threshold"] == 0.5)
    assert at_half["precision"] >= 0.9 and at_half["recall"] >= 0.8
    info = json.loads((out / "quality.json").read_text())
    assert info["kind"] == "fasttext" and info["fasttext"]["wordNgrams"] == 2


@pytest.mark.slow   # the search trains four models, then the chosen one
def test_train_quality_with_its_defaults_searches_and_reaches_the_floor(tmp_path, quality_model):
    """No options: balanced classes and the searched settings (fastText's own defaults gave ROC
    AUC 0.55 here); the search's validation scores are printed and recorded."""
    out = tmp_path / "default-model"
    folder = quality_model.parent
    proc = subprocess.run(tokenmill_cmd("train-quality", "--positive", str(folder / "positive.jsonl"), "--negative",
                                        str(folder / "negative.jsonl"), "--out", str(out), "--bucket", "100000",
                                        "--threads", "2"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "eval.json").read_text())
    assert result["roc_auc"] >= DEFAULTS_FLOOR and not result["weak"]
    assert len(result["search"]) == 4 and "searched epoch 25, lr 0.5" in proc.stdout
    best = max(r["validation_roc_auc"] for r in result["search"])
    info = json.loads((out / "quality.json").read_text())
    chosen = next(r for r in result["search"] if r["validation_roc_auc"] == best)
    assert {k: info["fasttext"][k] for k in ("epoch", "lr", "wordNgrams")} == \
        {k: chosen[k] for k in ("epoch", "lr", "wordNgrams")} and info["fasttext"]["balanced"]


def test_a_weak_model_stops_train_quality_with_exit_1(tmp_path, quality_model):
    """fastText's own defaults on these few hundred long documents: no better than chance. Only
    eval.json is written (no stage can load the model) and the command says why, unless told
    --allow-weak."""
    folder = quality_model.parent
    args = ["--positive", str(folder / "positive.jsonl"), "--negative", str(folder / "negative.jsonl"),
            "--no-search", "--no-balance", "--bucket", "100000"]
    weak = subprocess.run(tokenmill_cmd("train-quality", *args, "--out", str(tmp_path / "weak")),
                          capture_output=True, text=True, timeout=300)
    assert weak.returncode == 1, weak.stderr
    assert "the model is weak" in weak.stderr and "--allow-weak" in weak.stderr
    assert sorted(p.name for p in (tmp_path / "weak").iterdir()) == ["eval.json"]
    assert json.loads((tmp_path / "weak" / "eval.json").read_text())["weak"]
    allowed = subprocess.run(tokenmill_cmd("train-quality", *args, "--out", str(tmp_path / "allowed"), "--allow-weak"),
                             capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0 and (tmp_path / "allowed" / "quality.json").exists()


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([True, False], [0.9, 0.1]) == 1.0
    assert roc_auc([True, False, True, False], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert roc_auc([False, True], [0.9, 0.1]) == 0.0


def _corpus(folder: Path, shared_data: Path, files: int = 4) -> list[str]:
    """quality_dev (mostly English) and the vi, pl and fi sentences of langid_dev, in ``files`` files."""
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()]
    rows += [r for r in (json.loads(line) for line in (shared_data / "langid_dev.jsonl").read_text().splitlines())
             if r["id"].split("-")[2] in ("vi", "pl", "fi")]
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"part-{i}.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n"
                                                       for r in rows[i::files]))
    return [str(folder)]


def _config(inputs, out: Path, model: Path, **quality) -> dict:
    return {"name": "quality", "input": {"paths": inputs, "files_per_chunk": 1}, "output": {"path": str(out)},
            "stages": [{"type": "langid"},
                       {"type": "quality_fasttext", "model_path": str(model), "resources": {"batch_size": 37},
                        **quality}]}


def _scores(out: Path) -> tuple[dict, dict]:
    """(kept: id -> (language, score), rejected by quality: id -> reason)."""
    data = read_manifest_files(out, "data/").to_pylist()
    rej = read_manifest_files(out, "rejects/").to_pylist()
    kept = {r["id"]: (r["language"], r["quality_score"]) for r in data}
    return kept, {r["id"]: (r["reject_reason"], r["quality_score"]) for r in rej
                  if r["reject_stage"] == "quality_fasttext"}


def test_keep_top_is_per_language_over_the_whole_run(engine, tmp_path, shared_data, quality_model):
    out = tmp_path / "out"
    result = run_pipeline(build_pipeline(_config(_corpus(tmp_path / "in", shared_data), out, quality_model,
                                                 keep_top=0.25)), progress=False, engine=engine)
    step = result.report["global_steps"]["quality_fasttext"]
    kept, rejected = _scores(out)
    assert set(r for r, _ in rejected.values()) == {"low_quality"}
    for lang, docs in step["documents"].items():
        n_kept = sum(1 for lg, _ in kept.values() if lg == lang)
        assert n_kept + sum(1 for i in rejected if _lang_of(i, out) == lang) == docs
        if docs >= 200:   # en, vi, pl, fi
            assert abs(n_kept / docs - 0.25) <= 0.01, (lang, n_kept, docs)
    assert sum(1 for d in step["documents"].values() if d >= 200) >= 4
    # the recorded threshold reproduces the kept set
    for lg, score in kept.values():
        assert score >= step["thresholds"][lg]
    for doc_id, (_, score) in rejected.items():
        t = step["thresholds"][_lang_of(doc_id, out)]
        assert t is None or score < t
    # the report: a histogram of scores per language, with the chosen threshold drawn on it
    hist = result.report["quality_scores"]
    assert {lang: sum(c) for lang, c in hist["languages"].items()} == step["documents"]
    assert hist["thresholds"] == {lang: t for lang, t in step["thresholds"].items() if t is not None}
    page = (out / "report.html").read_text()
    assert "Quality scores per language" in page and page.count('stroke="#d9534f"') >= 4


_LANGS: dict = {}


def _lang_of(doc_id: str, out: Path) -> str:
    if out not in _LANGS:
        rej = read_manifest_files(out, "rejects/")
        _LANGS[out] = dict(zip(rej["id"].to_pylist(), pc.fill_null(rej["language"], "und").to_pylist()))
    return _LANGS[out][doc_id]


def test_threshold_filters_streamed_and_annotate_only_keeps_all(engine, tmp_path, shared_data, quality_model):
    inputs = _corpus(tmp_path / "in", shared_data, files=2)
    fixed = run_pipeline(build_pipeline(_config(inputs, tmp_path / "fixed", quality_model, threshold=0.5)),
                         progress=False, engine=engine)
    assert "quality_fasttext" not in fixed.report["global_steps"]   # no global step, no phase break
    kept, rejected = _scores(tmp_path / "fixed")
    assert kept and rejected
    assert all(s >= 0.5 for _, s in kept.values()) and all(s < 0.5 for _, s in rejected.values())
    hist = fixed.report["quality_scores"]
    assert sum(map(sum, hist["languages"].values())) == len(kept) + len(rejected)
    assert set(hist["thresholds"].values()) == {0.5}
    annotated = run_pipeline(build_pipeline(_config(inputs, tmp_path / "ann", quality_model, keep_top=0.1,
                                                    annotate_only=True)), progress=False, engine=engine)
    kept_all, none = _scores(tmp_path / "ann")
    assert not none and len(kept_all) == len(kept) + len(rejected)
    assert kept_all.keys() == kept.keys() | rejected.keys()
    assert annotated.report["global_steps"]["quality_fasttext"]["thresholds"]["en"] > 0


@pytest.mark.parametrize("problem", ["missing", "corrupt", "folder without quality.json", "no such label"])
def test_a_bad_model_is_a_config_error(tmp_path, quality_model, problem):
    model, extra = tmp_path / "model.bin", []
    if problem == "corrupt":
        model.write_bytes(b"not a fastText model" * 10)
    elif problem == "folder without quality.json":
        model = tmp_path / "folder"
        model.mkdir()
    elif problem == "no such label":
        model = quality_model / "model.bin"
        extra = ["positive_label: __label__nope"]
    config = tmp_path / "c.yaml"
    config.write_text("\n".join(["name: q", "input: {paths: [in.jsonl]}", "output: {path: out}", "stages:",
                                 "  - type: quality_fasttext", f"    model_path: {model}", "    threshold: 0.5",
                                 *[f"    {e}" for e in extra]]) + "\n")
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    proc = subprocess.run(tokenmill_cmd("run", str(config)), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "stages[0].model_path" in proc.stderr and not (tmp_path / "out").exists()


def test_training_documents_come_from_jsonl_gz_and_parquet(tmp_path):
    """read_texts takes JSONL (compressed or not) and Parquet; records without a usable text are
    skipped; no usable document at all is an error that names the files."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenmill.stages.quality.train import read_texts

    pq.write_table(pa.table({"body": ["a parquet document", None, "  "]}), tmp_path / "p.parquet")
    with gzip.open(tmp_path / "j.jsonl.gz", "wt") as fh:
        fh.write('{"body": "a json document"}\n{"body": 7}\nnot json\n{"other": "x"}\n')
    assert read_texts([str(tmp_path / "p.parquet"), str(tmp_path / "j.jsonl.gz")], "body") == [
        "a parquet document", "a json document"]
    with pytest.raises(ValueError, match="no documents with a non-empty 'text'"):
        read_texts([str(tmp_path / "j.jsonl.gz")], "text")

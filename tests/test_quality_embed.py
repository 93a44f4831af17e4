"""The embedding quality classifier on real torch/transformers with the bundled all-MiniLM-L6-v2:
``train-quality --kind embed`` reaches a ROC AUC floor on held-out quality_dev documents; the
``quality_embed`` stage under Ray on CPU (a CPU tokenizer stage feeding the model stage) gives
the scores of calling the model directly on the same texts, with and without length sorting; a
head whose dimension does not match the encoder is a config error before any work."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import tokenmill_cmd
from pipeline_helpers import run_quality_embed

pytest.importorskip("torch")
AUC_FLOOR = 0.99   # measured 1.0 (held-out 20%: 32 high, 119 low; max_tokens 128)


@pytest.fixture(scope="module")
def embed_model(quality_model, tmp_path_factory) -> Path:
    from tokenmill.stages.quality.train import TrainArgs, train

    folder = quality_model.parent
    out = tmp_path_factory.mktemp("embed") / "model"
    train(TrainArgs(positive=[str(folder / "positive.jsonl")], negative=[str(folder / "negative.jsonl")],
                    out=str(out), kind="embed", holdout=0.2, max_tokens=128))
    return out


@pytest.mark.slow   # trains an embedding head; runs on Ray
def test_embed_head_reaches_the_auc_floor(embed_model):
    result = json.loads((embed_model / "eval.json").read_text())
    info = json.loads((embed_model / "quality.json").read_text())
    assert result["roc_auc"] >= AUC_FLOOR, result
    assert result["held_out"] == 151 and info["kind"] == "embed" and info["dim"] == 384


def _direct_scores(texts: list[str], model_dir: Path, max_tokens: int = 128) -> np.ndarray:
    """The model called directly: padded batch, mean pooling over the mask, L2 norm, the head."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tokenmill.stages.quality.embed_model import default_encoder

    tok = AutoTokenizer.from_pretrained(default_encoder())
    model = AutoModel.from_pretrained(default_encoder()).eval()
    head = np.load(model_dir / "head.npz")
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tok(texts[i:i + 16], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            emb = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=1).numpy()
            out.append(1 / (1 + np.exp(-(emb.astype(np.float64) @ head["w"].astype(np.float64) + float(head["b"])))))
    return np.concatenate(out)


@pytest.mark.parametrize("sort_by_length", [True, False])
@pytest.mark.slow   # trains an embedding head; runs on Ray
def test_stage_under_ray_gives_the_direct_model_scores(ray_local, tmp_path, shared_data, embed_model, sort_by_length):
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()][:120]
    result, data = run_quality_embed(rows, tmp_path, model_path=str(embed_model), sort_by_length=sort_by_length,
                                     micro_batch=8, resources={"batch_size": 50})
    assert [s["stage"] for s in result.report["stages"]][1:] == ["quality_embed.tokenize", "quality_embed"]
    got = dict(zip(data["id"].to_pylist(), data["quality_score"].to_pylist()))
    assert "quality_tokens" not in data.column_names and len(got) == len(rows)
    want = _direct_scores([r["text"] for r in rows], embed_model)
    np.testing.assert_allclose([got[r["id"]] for r in rows], want, atol=2e-4)


def test_a_head_of_the_wrong_dimension_is_a_config_error(tmp_path, embed_model):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "quality.json").write_text((embed_model / "quality.json").read_text())
    np.savez(bad / "head.npz", w=np.zeros(10, np.float32), b=np.float64(0))
    config = tmp_path / "c.yaml"
    config.write_text(f"name: q\ninput: {{paths: [in.jsonl]}}\noutput: {{path: out}}\nstages:\n"
                      f"  - type: quality_embed\n    model_path: {bad}\n    threshold: 0.5\n")
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    proc = subprocess.run(tokenmill_cmd("run", str(config)), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "stages[0].model_path" in proc.stderr and "10 dimensions" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_padded_micro_batches_hold_each_document_and_its_mask():
    from tokenmill.stages.quality.embed_model import padded

    ids = [[101, 7, 102], [101, 102], [], [101, 5, 6, 7, 102]]
    input_ids, mask = padded(ids, np.array([3, 0, 2]))
    assert input_ids.tolist() == [[101, 5, 6, 7, 102], [101, 7, 102, 0, 0], [0, 0, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert padded([[], []], np.array([0, 1]))[0].shape == (2, 1)   # nothing to encode: one pad column


def test_half_precision_embeddings_stay_at_the_float32_ones():
    """bfloat16 weights (what a GPU's float16 default stands for on CPU) move each embedding by
    little: pooling and normalisation run in float32; sorted and unsorted give the same rows."""
    from tokenmill.stages.quality.embed_model import Encoder

    texts = ["a short one", "The committee met on Tuesday to review the budget for the coming year. " * 6,
             "Photosynthesis turns light into chemical energy in plants.", ""]
    full = Encoder(dtype="float32")
    full.load_model()
    ids = full.tokens(texts)
    ref = full.embed(ids, batch_size=2, by_length=False)
    assert np.allclose(full.embed(ids, batch_size=3, by_length=True), ref, atol=1e-5)
    half = Encoder(dtype="bfloat16")
    half.load_model()
    cos = np.sum(half.embed(ids, batch_size=2) * ref, axis=1)
    assert cos.min() > 0.995 and np.allclose(np.linalg.norm(ref, axis=1), 1, atol=1e-5), cos


def test_only_a_prefix_is_tokenized_and_the_ids_are_the_whole_texts(shared_data):
    """A document of megabytes costs what its first tokens cost (tokenizing it whole took 3 GB for
    20 MB), and every text gets the ids of tokenizing it whole: long words, a word cut by the
    prefix inside the first tokens, separators other than spaces."""
    import time

    from tokenmill.stages.quality.embed_model import Encoder

    enc = Encoder(max_tokens=128)
    texts = [json.loads(line)["text"] for line in (shared_data / "web_dev.jsonl").read_text().split("\n")[:200]]
    texts += [("a" * 120 + " ") * 300, "x" * 5000, "word " * 2000 + "\n" + "tail",
              "the " * 125 + "x" * 1000 + "," + "abcdefghij" * 20 + " end",   # a cut inside a word at token 127
              ("A" * 1000 + " word ") * 100,                                    # 1,000 characters per [UNK]
              "\r".join(["line"] * 800), "\u3000".join(["mot"] * 800), "\xa0".join(["wort"] * 800)]
    whole = enc.tokenizer(texts, truncation=True, max_length=128, padding=False)["input_ids"]
    assert enc.tokens(texts) == whole
    t0 = time.perf_counter()
    ids = enc.tokens(["word " * 4_000_000])   # 20 MB
    assert len(ids[0]) == 128 and time.perf_counter() - t0 < 5


def _window_reference(model, tok, text: str, content: int, step: int) -> np.ndarray:
    """A document read in windows, by hand: its first ``content`` tokens in pieces of ``step``, each
    with [CLS] and [SEP] and run through the model alone; the mean of every window token's output."""
    import torch

    ids = tok(text, add_special_tokens=False)["input_ids"][:content]
    total, count = torch.zeros(model.config.hidden_size, dtype=torch.float64), 0
    for k in range(0, max(len(ids), 1), step):
        row = torch.tensor([[tok.cls_token_id, *ids[k:k + step], tok.sep_token_id]])
        with torch.no_grad():
            total += model(input_ids=row).last_hidden_state[0].double().sum(0)
        count += row.shape[1]
    mean = (total / count).numpy()
    return mean / np.linalg.norm(mean)


def test_a_document_past_the_models_window_is_read_in_windows_and_pooled_over_all_of_them(shared_data):
    """max_tokens past MiniLM's 256 (its position table stops at 512: 1,024 crashed the model) reads
    the document in windows of 256 tokens, each with [CLS]/[SEP], pooled over every token of every
    window: the same rows as running each window alone, whatever the batch size; a document that fits
    one window is embedded as before; a moved paragraph changes the first 256 tokens, not the whole."""
    from tokenmill.stages.quality.embed_model import Encoder

    pages = [json.loads(line)["text"] for line in (shared_data / "web_dev.jsonl").read_text().split("\n")[:40]]
    long = [p for p in pages if len(p) > 8000][:3]
    texts = [*long, "a short one", ""]
    enc = Encoder(max_tokens=1024)
    enc.load_model()
    assert enc.window == 256 and enc.content_budget() == 1016   # 4 windows of 254 + [CLS] + [SEP]
    ids = enc.tokens(texts)
    rows, starts = enc.windows(ids)
    assert [len(x) for x in ids[:3]] == [1018] * 3 and starts.tolist() == [0, 4, 8, 12, 13]
    assert all(len(r) <= 256 and r[0] == 101 and r[-1] == 102 for r in rows)
    got = enc.embed(ids, batch_size=3)
    assert np.allclose(enc.embed(ids, batch_size=64, by_length=False), got, atol=1e-6)
    for i, text in enumerate(long):
        assert np.allclose(got[i], _window_reference(enc.model, enc.tokenizer, text, 1016, 254), atol=1e-5)
    one = Encoder(max_tokens=256)
    one.load_model()
    assert np.allclose(got[3:], one.embed(one.tokens(texts[3:])), atol=1e-6)
    huge = Encoder(max_tokens=8192)   # the schema's ceiling: 32 windows
    huge.load_model()
    assert np.allclose(np.linalg.norm(huge.embed(huge.tokens([long[0] * 8])), axis=1), 1, atol=1e-5)
    page = next(p for p in pages if 600 < len(enc.tokens([p])[0]) < 1000 and p.count("\n") >= 4)
    paragraphs = page.split("\n")   # its second half moved to the front: another start, the same page
    moved = "\n".join(paragraphs[len(paragraphs) // 2:] + paragraphs[:len(paragraphs) // 2])
    cos = {n: float(e.embed(e.tokens([page]))[0] @ e.embed(e.tokens([moved]))[0]) for n, e in ((256, one), (1024, enc))}
    assert cos[1024] > max(cos[256] + 0.1, 0.95), cos


def test_the_models_window_comes_from_its_folder(tmp_path):
    """sentence-transformers' max_seq_length first; else the tokenizer's limit and the position
    table (a RoBERTa's 514 positions hold 512 tokens); nothing known: 512."""
    from types import SimpleNamespace

    from tokenmill.stages.quality.embed_model import default_encoder, model_window

    endless = SimpleNamespace(model_max_length=int(1e30))
    assert model_window(default_encoder(), endless) == 256
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 514}))
    assert model_window(str(tmp_path), endless) == 512
    assert model_window(str(tmp_path), SimpleNamespace(model_max_length=128)) == 128
    (tmp_path / "config.json").write_text("{not json")
    assert model_window(str(tmp_path), endless) == 512
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 384}))
    assert model_window(str(tmp_path), endless) == 384

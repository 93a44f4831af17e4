"""The lexical encoder (``stages/embed/lexical.py``) and ``tokenmill train-embedder``, on real text
and the real all-MiniLM-L6-v2 teacher: a small encoder is trained once per module; its folder
loads without torch; its rows are L2-normalised float32 of ``dim`` plus the word block's columns (zeros for an empty text) and
the same for the same input; training with one seed gives the same weights; held-out cosine
similarities follow the teacher's (a measured floor); a missing or corrupt folder is a clear
error naming it; the command runs end to end and refuses a missing input; a quality head over it
is recorded with its encoder spec and the quality_embed stage runs it as one part."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tokenmill_cmd

pytest.importorskip("torch")

#: the small fixture encoders (45 web documents + passages, 30 epochs over the documents, hidden 64,
#: dim 32) measured Spearman on their 15 held-out web documents (105 pairs): contextual 0.57, bag 0.54
#: (0.52 before the word block, 0.36 without the token prior; an untrained random network: -0.08):
#: a floor against a broken prior or loss; full-size figures are in bench/README.md
SPEARMAN_FLOOR = {"contextual": 0.4, "bag": 0.4}
TEXTS = ["The committee met on Tuesday to review the budget for the coming year.",
         "Photosynthesis turns light into chemical energy in plants.", "", "a"]


def small_args(shared_data: Path, out: Path, **kw):
    from tokenmill.stages.embed.train_embedder import EmbedderArgs

    settings = {"inputs": [str(shared_data / "web_dev.jsonl")], "out": str(out), "max_docs": 60, "holdout": 0.25,
                "passages_per_doc": 3, "epochs": 30, "hidden": 64, "dim": 32, "batch_size": 64,
                "word_dim": 16}
    return EmbedderArgs(**{**settings, **kw})


@pytest.fixture(scope="module")
def embedder(tmp_path_factory, shared_data) -> Path:
    """train-embedder's default student (contextual), small."""
    from tokenmill.stages.embed.train_embedder import train_embedder

    out = tmp_path_factory.mktemp("lexical") / "enc"
    train_embedder(small_args(shared_data, out), log=lambda line: None)
    return out


@pytest.fixture(scope="module")
def bag_embedder(tmp_path_factory, shared_data) -> Path:
    """The bag student, small."""
    from tokenmill.stages.embed.train_embedder import train_embedder

    out = tmp_path_factory.mktemp("lexical") / "bag"
    train_embedder(small_args(shared_data, out, student="bag"), log=lambda line: None)
    return out


def load(path: Path, **kw):
    from tokenmill.stages.embed.encoders import EncoderSpec, make_encoder

    enc = make_encoder(EncoderSpec(kind="lexical", path=str(path), **kw))
    enc.load_model()
    return enc


@pytest.mark.parametrize("student", ["contextual", "bag"])
def test_the_folder_holds_the_model_and_its_evaluation(request, student):
    folder = request.getfixturevalue("embedder" if student == "contextual" else "bag_embedder")
    config = json.loads((folder / "embedder.json").read_text())
    assert config["kind"] == "lexical" and config["dim"] == 32
    assert config["version"] == (4 if student == "contextual" else 3)   # a bag folder's format did not change
    assert config["network"] == student and config["hidden"] == 64
    assert config["words"] == {"dim": 16, "weight": 0.2, "buckets": 1 << 18, "tokenizer": "cjk"}
    if student == "bag":
        assert config["buckets"] == config["vocab"] == 30522 and config["orders"] == [1] and config["token_prior"]
        assert config["epochs"] == 30 and config["layers"] == 2
    else:
        assert config["specials"] == {"before": [101], "after": [102]} and config["teacher_dim"] == 384
        assert config["epochs"] == 30 and config["token_epochs"] == 10
    assert {p.name for p in folder.iterdir()} >= {"embedder.json", "weights.npz", "tokenizer.json", "eval.json"}
    row = next(iter(json.loads((folder / "eval.json").read_text())["held_out"].values()))
    assert row["docs"] == 15 and row["pairs"] == 105 and row["docs_per_second"] > 0


def test_rows_are_normalised_float32_and_empty_text_is_zero(embedder):
    emb = load(embedder).embed_texts(TEXTS)
    assert emb.dtype == np.float32 and emb.shape == (4, 48)   # the network's 32 and the word block's 16
    assert np.allclose(np.linalg.norm(emb[[0, 1, 3]], axis=1), 1, atol=1e-5) and not emb[2].any()


def test_same_input_same_output_whatever_the_batch(embedder):
    enc = load(embedder)
    one = enc.embed_texts(TEXTS)
    assert np.array_equal(one, enc.embed_texts(TEXTS))
    assert np.allclose(load(embedder, batch_size=1).embed_texts(TEXTS), one, atol=1e-6)


@pytest.mark.parametrize("student", ["contextual", "bag"])
def test_held_out_similarities_follow_the_teacher(request, student):
    folder = request.getfixturevalue("embedder" if student == "contextual" else "bag_embedder")
    row = next(iter(json.loads((folder / "eval.json").read_text())["held_out"].values()))
    assert row["spearman"] >= SPEARMAN_FLOOR[student], row
    lo, hi = row["spearman_95"]   # the figure's bootstrap interval over the held-out documents
    assert 0 < hi - lo < 1 and lo - 0.02 <= row["spearman"] <= hi + 0.02, row   # 15 documents: a wide one


def test_the_interval_narrows_with_more_documents():
    from tokenmill.stages.embed.train_embedder import pair_fidelity

    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 16))
    b = a + rng.normal(size=(300, 16))
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    few, many = pair_fidelity(a[:20], b[:20], resamples=100), pair_fidelity(a, b, resamples=100)
    width = [r["spearman_95"][1] - r["spearman_95"][0] for r in (few, many)]
    assert width[1] < width[0] / 2 and many["spearman_95"][0] < many["spearman"] < many["spearman_95"][1]


def test_inference_imports_no_torch(embedder):
    code = ("import sys\nfrom tokenmill.stages.embed.encoders import EncoderSpec, make_encoder\n"
            f"e = make_encoder(EncoderSpec(kind='lexical', path={str(embedder)!r}))\ne.load_model()\n"
            "assert e.embed_texts(['some words here', '']).shape == (2, 48)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_one_seed_gives_the_same_weights():
    import scipy.sparse as sp

    from tokenmill.stages.embed.train_embedder import EmbedderArgs, fit_network

    rng = np.random.default_rng(1)
    x = sp.random(40, 500, density=0.05, format="csr", dtype=np.float32, random_state=2)
    target = rng.normal(size=(40, 16)).astype(np.float32)
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    args = EmbedderArgs(inputs=[], out="", hidden=16, dim=8, epochs=2, batch_size=16, seed=3, student="bag")
    a, b = (fit_network(x, target, args, log=lambda line: None) for _ in range(2))
    assert all(np.array_equal(u, v) for la, lb in zip(a, b) for u, v in zip(la, lb))
    c = fit_network(x, target, EmbedderArgs(**{**args.__dict__, "seed": 4}), log=lambda line: None)
    assert not np.array_equal(a[0][0], c[0][0])


def test_the_prior_starts_the_network_as_the_token_vectors_principal_components():
    import scipy.sparse as sp

    from tokenmill.stages.embed.lexical import forward
    from tokenmill.stages.embed.train_embedder import prior_layers

    vectors = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    rows, proj = prior_layers(vectors, hidden=8, dim=3)
    assert rows.shape == (50, 8) and proj.shape == (8, 3)
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    want = centred @ vt[:3].T
    x = sp.csr_matrix(np.eye(50, dtype=np.float32))   # one token per text, weight 1
    got = forward(x, [(rows, np.zeros(8, np.float32)), (proj, np.zeros(3, np.float32))])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert np.allclose(np.abs((got * want).sum(1)), 1, atol=1e-5)   # the same direction, up to the SVD's sign


def test_bigrams_hash_past_the_vocabulary_and_a_version_1_folder_keeps_its_columns():
    from tokenmill.stages.embed.lexical import ngram_counts

    ids = [np.array([5, 9, 5, 7], np.int64), np.array([3], np.int64)]
    now = ngram_counts(ids, (1, 2), buckets=10_000, vocab=20)
    uni = ngram_counts(ids, (1,), buckets=10_000, vocab=20)
    assert sorted(uni[0].indices) == [5, 7, 9] and uni[0, 5] == 2 and list(uni[1].indices) == [3]
    bigrams = (now - uni).tocsr()
    bigrams.eliminate_zeros()
    assert bigrams.nnz == 3 and bigrams.indices.min() >= 20 and bigrams[1].nnz == 0
    old = ngram_counts(ids, (1, 2), buckets=10_000)   # version 1: hashed over every column
    assert np.array_equal(old[:, :20].toarray()[1], uni[:, :20].toarray()[1]) and old.sum() == now.sum()


def test_an_unknown_format_version_is_an_error_naming_the_folder(tmp_path, embedder):
    folder = _copy(embedder, tmp_path / "future", version=9)
    with pytest.raises(ValueError, match=f"{folder}/embedder.json: format version 9"):
        load(folder)


def _copy(embedder: Path, folder: Path, **config_changes) -> Path:
    folder.mkdir()
    for p in embedder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    config = {**json.loads((folder / "embedder.json").read_text()), **config_changes}
    (folder / "embedder.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    return folder


def test_the_word_block_is_its_weight_of_the_cosine():
    from tokenmill.stages.embed.word_block import combine

    rng = np.random.default_rng(0)
    net, words = rng.normal(size=(5, 8)), rng.normal(size=(5, 4))
    net, words = (m / np.linalg.norm(m, axis=1, keepdims=True) for m in (net, words))
    words[4] = 0
    out = combine(net, words, 0.2)
    assert np.allclose(out[:4] @ out[:4].T, 0.8 * net[:4] @ net[:4].T + 0.2 * words[:4] @ words[:4].T, atol=1e-5)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5) and np.allclose(out[4, :8], net[4], atol=1e-5)
    assert not combine(np.zeros((1, 8)), np.zeros((1, 4)), 0.2).any()


def test_word_sketches_ignore_case_numbers_and_punctuation_and_tell_other_words_apart(shared_data):
    from tokenmill.stages.embed.lexical import fit_idf, tfidf
    from tokenmill.stages.embed.word_block import projection, sketch, word_counts

    rows = [json.loads(line) for line in (shared_data / "langid_dev.jsonl").read_text().splitlines()]
    ru = [r["text"] for r in rows if r["lang"] == "ru"][:12]
    a, other = " ".join(ru[:6]), " ".join(ru[6:])
    same = a.upper().replace(",", "").replace(".", " ; ").replace("1", "7")
    texts = [a, same, other, "中文的句子在这里", "这里中文"]
    x = word_counts(texts, 1 << 18)
    rows = sketch(tfidf(x, fit_idf(x)), projection(1 << 18, 256))
    cos = rows @ rows.T
    assert cos[0, 1] > 0.999 and abs(cos[0, 2]) < 0.3, cos
    assert x[3].nnz == 8 and x[4].nnz == 4 and cos[3, 4] > 0.3   # every Han character is a word


@pytest.mark.parametrize("student", ["contextual", "bag"])
def test_the_word_block_keeps_other_pages_of_a_script_spelled_letter_by_letter_apart(request, student, shared_data):
    from tokenmill.stages.embed.lexical import context_ids, forward

    rows = [json.loads(line) for line in (shared_data / "langid_dev.jsonl").read_text().splitlines()]
    enc = load(request.getfixturevalue("embedder" if student == "contextual" else "bag_embedder"))
    for lang in ("ru", "el"):
        texts = [r["text"] for r in rows if r["lang"] == lang][:24]
        pages = [" ".join(texts[i:i + 6]) for i in range(0, 24, 6)]
        copy = pages[0].replace(pages[0].split()[3], "X", 1)
        full = enc.embed_texts(pages + [copy])
        if enc.contextual is not None:
            net = enc.contextual.embed(context_ids(enc.tokenizer, pages + [copy], enc.max_tokens,
                                                   enc.config["specials"], enc.unk))
        else:
            net = forward(enc.features(pages + [copy]), enc.layers)
        iu = np.triu_indices(4, 1)
        assert ((full @ full.T)[iu] < (net @ net.T)[iu] - 0.05).all(), lang   # unrelated pages: apart
        assert full[0] @ full[4] > 0.95, lang                                  # a copy: still alike


@pytest.mark.parametrize("student", ["contextual", "bag"])
def test_a_folder_without_words_has_no_word_block_and_a_bad_one_is_an_error(request, tmp_path, student):
    folder = request.getfixturevalue("embedder" if student == "contextual" else "bag_embedder")
    old = load(_copy(folder, tmp_path / "v2", version=2 if student == "bag" else 4, words=None))
    assert old.dim == 32
    assert np.allclose(old.embed_texts(TEXTS), load(folder).embed_texts(TEXTS)[:, :32] / np.sqrt(0.8), atol=1e-5)
    config = json.loads((folder / "embedder.json").read_text())
    bad = _copy(folder, tmp_path / "bad", words={**config["words"], "buckets": 1000})
    with pytest.raises(ValueError, match=f"{bad}/weights.npz: word_idf has 262144 buckets"):
        load(bad)


def test_the_default_eps_is_the_larger_one_only_with_a_word_block(tmp_path, bag_embedder):
    from tokenmill.stages.semantic.params import DEFAULT_EPS, LEXICAL_EPS_WITHOUT_WORDS, SemanticParams

    def eps(folder):
        return SemanticParams(encoder={"kind": "lexical", "path": str(folder)}).eps_for()

    assert eps(bag_embedder) == DEFAULT_EPS["lexical"] == 0.1
    assert eps(_copy(bag_embedder, tmp_path / "v2", version=2, words=None)) == LEXICAL_EPS_WITHOUT_WORDS == 0.05
    assert SemanticParams(encoder={"kind": "lexical", "path": str(bag_embedder)}, eps=0.3).eps_for() == 0.3


def test_token_sums_add_every_output_vector_by_id_and_leave_the_embeddings_alone():
    import torch

    from tokenmill.stages.embed.train_embedder import token_sums
    from tokenmill.stages.quality.embed_model import Encoder, special_ids

    teacher = Encoder(None, max_tokens=32)
    teacher.load_model()
    assert special_ids(teacher.tokenizer) == ([101], [102])   # BERT's [CLS] ... [SEP]
    ids = teacher.tokens(TEXTS[:2] + ["the the the"])
    sums = token_sums(teacher)
    with_sums = teacher.embed(ids, batch_size=2, token_sums=sums)
    assert np.array_equal(with_sums, teacher.embed(ids, batch_size=2))
    flat = np.concatenate(ids)
    assert np.array_equal(sums[1].numpy()[np.unique(flat)], np.bincount(flat)[np.unique(flat)])
    assert sums[1].sum() == len(flat)
    the = teacher.tokenizer.convert_tokens_to_ids("the")
    assert sums[1][the] >= 3 and torch.linalg.norm(sums[0][the]) > 0


def test_a_missing_or_corrupt_folder_is_an_error_naming_it(tmp_path, embedder):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load(missing)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("embedder.json", "tokenizer.json"):
        (corrupt / name).write_bytes((embedder / name).read_bytes())
    (corrupt / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"{corrupt}/weights.npz"):
        load(corrupt)
    (corrupt / "weights.npz").unlink()
    with pytest.raises(FileNotFoundError, match="weights.npz is missing"):
        load(corrupt)


@pytest.mark.slow   # a child process trains an encoder (about 30 s)
def test_the_command_end_to_end(tmp_path, shared_data):
    out = tmp_path / "enc"
    proc = subprocess.run(tokenmill_cmd("train-embedder", "--input", str(shared_data / "web_dev.jsonl"), "--out",
                                        str(out), "--student", "bag", "--max-docs", "40", "--epochs", "1", "--passages",
                                        "2", "--buckets",
                                        "4096", "--hidden", "32", "--dim", "16", "--holdout", "0.2"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Spearman" in proc.stdout and "epoch 1/1" in proc.stderr
    assert "no token prior: --buckets 4096 is below the teacher's vocabulary (30,522)" in proc.stderr
    assert {p.name for p in out.iterdir()} == {"embedder.json", "weights.npz", "tokenizer.json", "eval.json"}
    bad = subprocess.run(tokenmill_cmd("train-embedder", "--input", str(tmp_path / "missing.jsonl"), "--out",
                                       str(tmp_path / "x")), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing.jsonl" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "x" / "embedder.json").exists()
    weight = subprocess.run(tokenmill_cmd("train-embedder", "--input", str(shared_data / "web_dev.jsonl"), "--out",
                                          str(tmp_path / "y"), "--word-weight", "1.5"),
                            capture_output=True, text=True, timeout=120)
    assert weight.returncode == 2 and "--word-weight in (0, 1), got 128 and 1.5" in weight.stderr, weight.stderr


@pytest.fixture(scope="module")
def lexical_head(embedder, tmp_path_factory, shared_data) -> Path:
    from tokenmill.stages.quality.train import TrainArgs, train

    folder = tmp_path_factory.mktemp("qlex")
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()]
    for label, name in (("high", "positive.jsonl"), ("low", "negative.jsonl")):
        (folder / name).write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows if r["label"] == label))
    train(TrainArgs(positive=[str(folder / "positive.jsonl")], negative=[str(folder / "negative.jsonl")],
                    out=str(folder / "model"), kind="embed", encoder=str(embedder), encoder_kind="lexical",
                    holdout=0.2, allow_weak=True))
    return folder / "model"


def test_a_quality_head_records_its_lexical_encoder(lexical_head, embedder):
    info = json.loads((lexical_head / "quality.json").read_text())
    assert info["encoder_spec"]["kind"] == "lexical" and info["encoder_spec"]["path"] == str(embedder)
    assert info["dim"] == 48 and info["max_tokens"] == 256   # the network's 32 + the word block's 16


def test_quality_embed_runs_a_lexical_head_in_one_part_without_tokens(lexical_head, embedder, shared_data):
    import pyarrow as pa

    from tokenmill.engine.stage import Resources
    from tokenmill.stages.quality.embed_model import head_scores
    from tokenmill.stages.quality.embed_stage import EmbedParams, QualityEmbed

    params = EmbedParams(model_path=str(lexical_head), annotate_only=True)
    assert list(QualityEmbed.check_params(params)) == []
    parts = QualityEmbed.composite_parts("q", params, Resources())
    assert [p.name for p in parts] == ["q"] and QualityEmbed.columns_needed(params) == {}
    stage = QualityEmbed(params)
    stage.setup()
    texts = [json.loads(line)["text"] for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()[:20]]
    head = np.load(lexical_head / "head.npz")
    want = head_scores(load(embedder).embed_texts(texts), head["w"], float(head["b"]))
    assert np.allclose(stage.scores(pa.table({"text": texts})), want)


@pytest.mark.slow   # a pipeline on Ray
def test_quality_embed_with_a_lexical_head_under_ray_gives_the_direct_scores(ray_local, tmp_path, lexical_head,
                                                                             embedder, shared_data):
    from pipeline_helpers import run_quality_embed

    from tokenmill.stages.quality.embed_model import head_scores

    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()][:90]
    result, data = run_quality_embed(rows, tmp_path, model_path=str(lexical_head), resources={"batch_size": 25})
    assert [s["stage"] for s in result.report["stages"]][1:] == ["quality_embed"]
    got = dict(zip(data["id"].to_pylist(), data["quality_score"].to_pylist()))
    head = np.load(lexical_head / "head.npz")
    want = head_scores(load(embedder).embed_texts([r["text"] for r in rows]), head["w"], float(head["b"]))
    assert len(got) == len(rows)
    np.testing.assert_allclose([got[r["id"]] for r in rows], want, atol=1e-5)


def test_the_command_refuses_what_it_cannot_train_or_write_before_the_teacher(tmp_path, shared_data):
    """Too few documents, a --max-docs below the floor and an --out that cannot be written are
    exit 2 at once, naming what is wrong, and leave no folder behind."""
    five = tmp_path / "five.jsonl"
    five.write_text("\n".join((shared_data / "web_dev.jsonl").read_text().split("\n")[:5]) + "\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [(["--input", str(five), "--out", str(tmp_path / "e1")], "5 training documents"),
             (["--input", str(five), "--out", str(tmp_path / "e2"), "--max-docs", "0"], "--max-docs: expected at least"),
             (["--input", str(five), "--out", str(blocker / "sub")], "--out: cannot write the folder")]
    for argv, message in cases:
        proc = subprocess.run(tokenmill_cmd("train-embedder", *argv), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()
    from tokenmill.stages.embed.train_cli import unwritable

    assert unwritable(str(tmp_path / "a" / "b" / "enc")) is None and not (tmp_path / "a").exists()


@pytest.mark.parametrize("flags, message", [
    (["--teacher", "{tmp}/none"], "--teacher: {tmp}/none: no config.json (not a hf encoder folder)"),
    (["--teacher", "s3://bucket/teacher"], "--teacher: expected a local folder, got s3://bucket/teacher"),
    (["--dim", "0"], "--dim: expected at least 1, got 0"),
    (["--hidden", "-1"], "--hidden: expected at least 1, got -1"),
    (["--epochs", "0"], "--epochs: expected at least 1, got 0"),
    (["--batch-size", "1"], "--batch-size: expected at least 2, got 1"),
    (["--max-tokens", "2"], "--max-tokens: expected at least 8, got 2"),
    (["--lr", "0"], "--lr: expected a positive rate, got 0.0"),
    (["--orders", "0", "2", "--student", "bag"], "--orders: expected n-gram orders from 1 to 5, got [0, 2]"),
    (["--orders", "1", "2"], "--orders: applies to --student bag (the contextual student reads the teacher's tokens)"),
    (["--buckets", "4096"], "--buckets: applies to --student bag (the contextual student reads the teacher's tokens)"),
    (["--token-epochs", "-1"], "--token-epochs: expected at least 0, got -1"),
    (["--input", "{tmp}"], "--input: {tmp} is a folder: give its JSONL or Parquet files"),
    (["--input", "{tmp}/nope.jsonl"], "--input: {tmp}/nope.jsonl: no such file"),
])
def test_every_argument_the_training_cannot_use_is_named_before_any_work(tmp_path, flags, message):
    """Each flag out of range, a teacher that is not an encoder folder and an input that is not a
    file: named by flag, with nothing made under --out (the command exits 2 on any of them)."""
    from tokenmill.engine.cli import _parser
    from tokenmill.stages.embed.train_cli import argument_problems

    good = tmp_path / "in.jsonl"
    good.write_text('{"text": "a"}\n')
    argv = ["train-embedder", "--input", str(good), "--out", str(tmp_path / "enc")]
    args = _parser().parse_args(argv + [f.format(tmp=tmp_path) for f in flags])
    assert argument_problems(args) == [message.format(tmp=tmp_path)]
    assert not (tmp_path / "enc").exists()
    assert argument_problems(_parser().parse_args(argv)) == [] and not (tmp_path / "enc").exists()


def test_semantic_dedup_reads_whole_documents_with_a_lexical_encoder(tmp_path, embedder, shared_data):
    """Long pages whose copies carry another page's 120 words on top (word 5-gram Jaccard > 0.9):
    with the stage's default window (2,048 tokens) one side of every pair is removed, and nothing
    else; at the 256 tokens the encoder was trained on, the new top fills half the window and most
    copies stay. (eps 0.15: the fixture encoder is small; its pairs measured 0.87-0.99 at 2,048
    tokens, 0.80 at most at 256, and 0.66 at most between two originals; the bag fixture's 0.88-0.99,
    0.80 and 0.68.)"""
    from pipeline_helpers import read_manifest_files

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline
    from tokenmill.stages.semantic.params import LEXICAL_DEDUP_TOKENS, SemanticParams

    pages = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")]
    long = [p for p in pages if 1500 < len(p["text"].split()) < 4000][:12]
    tops = [p for p in pages if len(p["text"].split()) > 400][-12:]
    rows = [{"id": p["id"], "text": p["text"]} for p in long]
    rows += [{"id": p["id"] + "~copy", "text": " ".join(t["text"].split()[:120]) + "\n" + p["text"]}
             for p, t in zip(long, tops)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert SemanticParams(encoder={"kind": "lexical", "path": str(embedder)}).encoder.max_tokens == LEXICAL_DEDUP_TOKENS
    removed = {}
    for name, encoder in (("default", {"kind": "lexical", "path": str(embedder)}),
                          ("trained", {"kind": "lexical", "path": str(embedder), "max_tokens": 256})):
        cfg = {"name": name, "input": {"paths": [str(tmp_path / "in.jsonl")]}, "output": {"path": str(tmp_path / name)},
               "stages": [{"type": "semantic_dedup", "encoder": encoder, "scope": "global", "eps": 0.15}]}
        run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
        rejects = read_manifest_files(tmp_path / name, "rejects/")
        removed[name] = set(rejects["id"].to_pylist()) if "id" in rejects.column_names else set()
    pairs = [{p["id"], p["id"] + "~copy"} for p in long]
    assert all(len(removed["default"] & pair) == 1 for pair in pairs) and len(removed["default"]) == len(pairs)
    assert sum(1 for pair in pairs if removed["trained"] & pair) <= len(pairs) // 2


def test_the_contextual_network_in_numpy_is_the_one_torch_trained():
    """contextual.py's tables (a token's own, left and right neighbours', the document mean) give
    torch's per-token formula, averaged and projected, for documents of any length in one batch
    (neighbours never cross from one document into the next), in chunks or not."""
    import torch

    from tokenmill.stages.embed import contextual
    from tokenmill.stages.embed.train_contextual import arrays_of, network, padded_batch

    rng = np.random.default_rng(0)
    prior = rng.normal(size=(40, 6)).astype(np.float32)
    net = network(torch, prior, hidden=5, proj=rng.normal(size=(6, 4)).astype(np.float32))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(rng.normal(size=tuple(p.shape)).astype(np.float32)))
    ids = [rng.integers(0, 40, n).astype(np.int64) for n in (1, 2, 7, 3, 12)]
    t_ids, mask, _ = padded_batch(torch, ids, np.arange(len(ids)))
    with torch.no_grad():
        want = torch.nn.functional.normalize(net.docs(t_ids, mask), dim=1).numpy()
    model = contextual.Contextual(arrays_of(net, prior))
    assert np.allclose(model.embed(ids), want, atol=1e-5)
    gaps = model.embed([ids[0][:0], ids[1], ids[0][:0], ids[2], np.array([45, 60])])   # empty and unknown ids
    assert not gaps[[0, 2, 4]].any() and np.allclose(gaps[[1, 3]], want[[1, 2]], atol=1e-5)
    assert np.allclose(model.embed([ids[2]]), want[2:3], atol=1e-5)   # alone: the same row
    small = contextual.CHUNK_TOKENS
    try:
        contextual.CHUNK_TOKENS = 8   # several forward steps, one document longer than a step
        assert np.allclose(model.embed(ids), want, atol=1e-5)
    finally:
        contextual.CHUNK_TOKENS = small
    assert not model.embed([ids[0][:0]]).any()   # nothing to read: a zero row
    assert contextual.check_shapes(arrays_of(net, prior), 4) is None
    assert "p_w (6, 4) (expected (6, 3))" in contextual.check_shapes(arrays_of(net, prior), 3)


def test_contextual_ids_wrap_the_text_in_the_teachers_specials_and_skip_what_it_cannot_read(embedder):
    from tokenmill.stages.embed.lexical import context_ids

    enc = load(embedder, max_tokens=10)
    ids = context_ids(enc.tokenizer, ["one two three four five six seven eight nine ten eleven", "", "🙂🙂",
                                      "a"], 10, {"before": [101], "after": [102]}, enc.unk)
    assert len(ids[0]) == 10 and ids[0][0] == 101 and ids[0][-1] == 102
    assert len(ids[1]) == 0 and len(ids[2]) == 0 and list(ids[3][[0, -1]]) == [101, 102] and len(ids[3]) == 3
    emb = load(embedder).embed_texts(["🙂🙂🙂", "plain words"])
    assert not emb[0].any() and np.linalg.norm(emb[1]) == pytest.approx(1, abs=1e-5)


def test_a_contextual_folder_whose_shapes_disagree_is_an_error_naming_the_array(tmp_path, embedder):
    folder = _copy(embedder, tmp_path / "bad", dim=33)
    with pytest.raises(ValueError, match=rf"{folder}/weights.npz: shapes do not match embedder.json \(dim 33\): "
                                         r"p_w \(384, 32\)"):
        load(folder)


def test_the_teacher_pass_keeps_per_token_outputs_up_to_its_cap_and_gives_the_teachers_embeddings():
    from tokenmill.stages.embed.train_contextual import teacher_pass
    from tokenmill.stages.embed.train_embedder import token_sums
    from tokenmill.stages.quality.embed_model import Encoder

    teacher = Encoder(None, max_tokens=32)
    teacher.load_model()
    texts = TEXTS[:2] + ["the the the", "a longer sentence about the weather in the mountains today"] * 3
    ids = teacher.tokens(texts)
    sums = token_sums(teacher)
    emb, outs = teacher_pass(teacher, ids, sums, lambda line: None, max_targets=40, batch=3)
    assert np.allclose(emb, teacher.embed(ids), atol=1e-5)
    kept = [i for i, o in enumerate(outs) if o is not None]
    assert 0 < sum(len(ids[i]) for i in kept) <= 40 and len(kept) < len(texts)
    assert all(outs[i].dtype == np.float16 and outs[i].shape == (len(ids[i]), 384) for i in kept)
    assert float(sums[1].sum()) == sum(map(len, ids))   # the prior still sees every token


@pytest.mark.parametrize("texts", [50, 5])
def test_the_projection_starts_as_the_teachers_top_directions_whatever_the_number_of_texts(texts):
    """Fewer training texts than --dim (a tiny input): still dim orthonormal columns (a folder whose
    projection had one column per text failed to load after training)."""
    from tokenmill.stages.embed.train_contextual import projection

    target = np.random.default_rng(0).normal(size=(texts, 12))
    p = projection(target, 8)
    assert p.shape == (12, 8) and np.allclose(p.T @ p, np.eye(8), atol=1e-5)
    _, _, vt = np.linalg.svd(target, full_matrices=False)
    top = min(texts, 8)
    assert np.allclose(np.abs((p[:, :top] * vt[:top].T).sum(0)), 1, atol=1e-5)
    whole = projection(target, 12)
    assert whole.shape == (12, 12) and np.allclose(whole.T @ whole, np.eye(12), atol=1e-5)
    with pytest.raises(ValueError, match="dim 20: the contextual student projects the teacher's 12 dimensions"):
        projection(target, 20)


def test_the_encoder_reads_the_ids_the_teacher_trained_it_on(embedder, shared_data):
    """context_ids (inference) equal the teacher's ids (training) for ordinary pages, and phase 2's
    cut to a shorter window keeps the teacher's specials around the first tokens."""
    from tokenmill.stages.embed.lexical import context_ids
    from tokenmill.stages.embed.train_contextual import cut
    from tokenmill.stages.quality.embed_model import Encoder

    texts = [json.loads(line)["text"] for line in (shared_data / "web_dev.jsonl").read_text().splitlines()[:40]]
    texts += TEXTS[:2]
    teacher = Encoder(None, max_tokens=256)
    enc = load(embedder)
    got = context_ids(enc.tokenizer, texts, 256, {"before": [101], "after": [102]}, enc.unk)
    want = teacher.tokens(texts)
    assert sum(list(g) == list(w) for g, w in zip(got, want)) >= len(texts) - 1   # a prefix cut may differ in one
    short = context_ids(enc.tokenizer, texts, 64, {"before": [101], "after": [102]}, enc.unk)
    assert all(list(cut(np.asarray(w), 64, ([101], [102]))) == list(s) for w, s in zip(want, short))


def test_a_teacher_of_another_family_gives_a_student_that_reads_its_tokens(tmp_path, shared_data):
    """``--teacher``: a RoBERTa (byte-level BPE, ``<s>``/``</s>``, 64 dimensions) instead of MiniLM's
    BERT. The student keeps that teacher's specials and ids, embeds what the teacher read and is
    scored against it; a zero row where the tokenizer reads nothing; without ``--dim`` it projects
    to the teacher's 64 dimensions (the default 192 is more than it has)."""
    from tiny_teacher import make_tiny_teacher

    from tokenmill.stages.embed.lexical import context_ids
    from tokenmill.stages.embed.train_embedder import train_embedder
    from tokenmill.stages.quality.embed_model import Encoder

    teacher = make_tiny_teacher(tmp_path / "roberta", shared_data / "web_dev.jsonl")
    out = tmp_path / "enc"
    said = []
    train_embedder(small_args(shared_data, out, teacher=str(teacher), max_docs=30, epochs=2, token_epochs=1, dim=None),
                   log=said.append)
    config = json.loads((out / "embedder.json").read_text())
    assert config["specials"] == {"before": [0], "after": [2]} and config["teacher_dim"] == 64
    assert config["dim"] == 64 and any(line.startswith("--dim 64: the teacher's dimensions") for line in said)
    row = next(iter(json.loads((out / "eval.json").read_text())["held_out"].values()))
    assert config["teacher"] == str(teacher) and row["docs"] >= 3 and np.isfinite(row["spearman"])
    texts = [json.loads(line)["text"] for line in (shared_data / "web_dev.jsonl").read_text().splitlines()[40:50]]
    enc = load(out)
    got = context_ids(enc.tokenizer, texts, 256, config["specials"], enc.unk)
    want = Encoder(str(teacher), max_tokens=256).tokens(texts)
    assert sum(list(g) == list(w) for g, w in zip(got, want)) >= len(texts) - 1
    emb = enc.embed_texts(texts + [""])
    assert emb.shape == (11, enc.dim) and np.allclose(np.linalg.norm(emb[:10], axis=1), 1, atol=1e-5)
    assert not emb[10].any()


def test_the_contextual_student_refuses_what_it_cannot_use():
    from tokenmill.stages.embed.train_embedder import EmbedderArgs

    for bad in ({"orders": (1, 2)}, {"buckets": 4096}, {"token_prior": False}):
        with pytest.raises(ValueError, match="apply to the bag student"):
            EmbedderArgs(inputs=[], out="", **bad)
        assert EmbedderArgs(inputs=[], out="", student="bag", **bad).epochs == 10
    with pytest.raises(ValueError, match="student: expected one of contextual, bag, got 'lstm'"):
        EmbedderArgs(inputs=[], out="", student="lstm")

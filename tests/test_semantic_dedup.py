"""semantic_dedup on real text with the bundled all-MiniLM-L6-v2: the per-cluster step equals a
NumPy transcription of SemDeDup's published algorithm on the same embeddings and clusters; tiles
give the whole matrix's answer; copies of real pages are removed and unrelated pages kept; a giant
cluster is split before its pairwise step; the removals are the same for any batch size and on
the local executor, Ray and Spark; ``keep: quality_score`` keeps the best-scored copy; a bad
encoder is a config error before any work."""
from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest
from pipeline_helpers import read_manifest_files

from tokenmill.engine.config import ConfigError, build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.semantic import kmeans, semdedup, steps, vectors

pytest.importorskip("torch")
RECALL_FLOOR = 0.95   # copies with ~1% of words replaced, MiniLM at 256 tokens, eps 0.1: measured 59 / 60
FP_CEILING = 0.02


def _pages(shared_data, n: int = 60, seed: int = 0) -> list[dict]:
    """Real web pages, each followed by a copy with ~1% of its words replaced."""
    rng = random.Random(seed)
    rows = []
    for line in list(open(shared_data / "web_dev.jsonl", encoding="utf-8"))[:n]:
        r = json.loads(line)
        rows.append({"id": r["id"], "text": r["text"]})
        words = r["text"].split(" ")
        for _ in range(max(1, len(words) // 100)):
            words[rng.randrange(len(words))] = f"w{rng.randrange(10**6)}"
        rows.append({"id": r["id"] + "~copy", "text": " ".join(words)})
    return rows


@pytest.fixture(scope="module")
def embedded(shared_data):
    from tokenmill.stages.embed.encoders import EncoderSpec, make_encoder

    rows = _pages(shared_data)
    enc = make_encoder(EncoderSpec(kind="minilm"))
    enc.load_model()
    x = vectors.decode(vectors.encode(enc.embed_texts([r["text"] for r in rows])), enc.dim)
    return rows, x


def published_semdedup(x: np.ndarray, centroid: np.ndarray, eps: float) -> np.ndarray:
    """SemDeDup as published (facebookresearch/SemDeDup: sort_clusters.py, semdedup.py): sort by
    cosine distance to the centroid, hardest (farthest) first; M = max over the upper triangle of
    the similarity matrix per column; remove where M > 1 - eps. The paper leaves ties in distance
    open (identical embeddings: a copy whose edits fall past the encoder's 256 tokens); here, as in
    tokenmill, the earlier document comes first. Returns the removed mask in the order of ``x``."""
    dist = 1 - x @ centroid
    order = np.lexsort((np.arange(len(x)), -dist))    # keep_hard: farthest first
    xs = x[order]
    m = np.triu(xs @ xs.T, k=1).max(axis=0)
    gone = np.zeros(len(x), bool)
    gone[order] = m > 1 - eps
    return gone


def _key_rows(rows: list[dict], blob: pa.Array, labels: np.ndarray, cos: np.ndarray) -> pa.Table:
    n = len(rows)
    return pa.table({"row_key": [f"in.jsonl:{i:06d}" for i in range(n)], "id": [r["id"] for r in rows],
                     "url": pa.nulls(n, pa.string()), "node": pa.array(np.arange(n), pa.int64()),
                     steps.EMBEDDING: blob, steps.GROUP: pa.array(np.zeros(n, np.int64)),
                     steps.CLUSTER: pa.array(labels, pa.int32()), steps.COS: pa.array(cos, pa.float32())})


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_clusters_give_the_published_semdedups_removals(embedded, eps):
    rows, x = embedded
    blob = vectors.encode(x)
    x = vectors.decode(blob, x.shape[1])   # exactly what the step reads back from its key rows
    centroids = kmeans.fit(x, 4, seed=0)
    labels, cos = kmeans.assign(x, centroids)
    decided = steps.dedup_clusters(steps.cluster_ids(_key_rows(rows, blob, labels, cos)), eps=eps, keep="hard", block=16)
    ours = {r["_id"] for r in decided.to_pylist() if r["reject_reason"]}
    ref = set()
    for c in range(len(centroids)):
        idx = np.flatnonzero(labels == c)
        ref |= {rows[i]["id"] for i in idx[published_semdedup(x[idx], centroids[c], eps)]}
    assert ours == ref and (eps < 0.05 or len(ours) >= 30)
    by_id = {r["_id"]: r for r in decided.to_pylist()}
    for r in decided.to_pylist():   # a removed document names a kept one of its own cluster
        if r["reject_reason"]:
            kept = by_id[r["reject_reason"].removeprefix(steps.REASON_PREFIX)]
            assert kept["reject_reason"] is None and kept["_ckey"] == r["_ckey"]


def test_tiles_give_the_whole_matrix(embedded):
    _, x = embedded
    whole = np.triu(x @ x.T, k=1).max(axis=0)
    for block in (1, 7, 64, 4096):
        best, arg = semdedup.max_similarity(x, block)
        assert np.allclose(best, whole, atol=1e-6)
        has = arg >= 0
        assert np.allclose((x[arg[has]] * x[has]).sum(axis=1), best[has], atol=1e-6) and (arg[has] < np.flatnonzero(has)).all()
        for first in (1, 50, len(x) - 1, len(x)):   # earlier runs' rows first: compared with, never answered
            got, got_arg = semdedup.max_similarity(x, block, first=first)
            assert np.allclose(got[first:], whole[first:], atol=1e-6) and not got[:first].any()
            has = got_arg >= 0
            assert (got_arg[:first] == -1).all() and (got_arg[has] < np.flatnonzero(has)).all()
            assert np.allclose((x[got_arg[has]] * x[has]).sum(axis=1), got[has], atol=1e-6)


def test_earlier_runs_rows_must_lead_their_cluster():
    assert steps.earlier_rows(np.array([True, True, False])) == 2 and steps.earlier_rows(np.zeros(3, bool)) == 0
    with pytest.raises(ValueError, match="not first"):
        steps.earlier_rows(np.array([False, True]))


def test_float16_key_rows_round_trip_to_unit_vectors():
    x = np.random.default_rng(1).normal(size=(5, 384)).astype(np.float32)
    x[2] = 0
    back = vectors.decode(vectors.encode(x), 384)
    norms = np.linalg.norm(back, axis=1)
    assert np.allclose(norms[[0, 1, 3, 4]], 1, atol=1e-6) and norms[2] == 0
    assert np.allclose(back[0], x[0] / np.linalg.norm(x[0]), atol=2e-3)
    with pytest.raises(ValueError, match="384 dimensions"):
        vectors.decode(vectors.encode(x[:, :10]), 384)


#: the dedup mechanics' tests read MiniLM's own window (256 tokens), a quarter of the stage's default
#: work; the default (1,024 tokens in windows) has its own tests (test_quality_embed.py, below)
MECHANICS_ENCODER = {"kind": "minilm", "max_tokens": 256}


def _config(inp, out, batch_size: int = 256, **sem) -> dict:
    sem = {"encoder": MECHANICS_ENCODER, **sem}
    return {"name": "sem", "input": {"paths": [str(inp)], "files_per_chunk": 1}, "output": {"path": str(out)},
            "stages": [{"type": "langid"},
                       {"type": "semantic_dedup", "docs_per_cluster": 20, "resources": {"batch_size": batch_size}, **sem}]}


def _outcome(out) -> dict:
    data = read_manifest_files(out, "data/")
    rej = read_manifest_files(out, "rejects/")
    got = {r["id"]: (None, round(r[steps.MAX_SIM], 5)) for r in data.to_pylist()}
    got.update({r["id"]: (r["reject_reason"], round(r[steps.MAX_SIM], 5)) for r in rej.to_pylist()})
    return got


@pytest.fixture(scope="module")
def pages_file(shared_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("sem") / "pages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _pages(shared_data)))
    return path


@pytest.fixture(scope="module")
def local_run(pages_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("sem-local") / "out"
    result = run_pipeline(build_pipeline(_config(pages_file, out, eps=0.1)), progress=False, engine="local", num_cpus=1)
    return out, result.report


def test_copies_are_removed_and_pages_without_copies_kept(local_run):
    out, report = local_run
    got = _outcome(out)
    copies = [i for i in got if i.endswith("~copy")]
    pairs_hit = sum(1 for c in copies if got[c][0] or got[c.removesuffix("~copy")][0])
    originals_lost = sum(1 for i in got if not i.endswith("~copy") and got[i][0] and not got[i][0].endswith("~copy"))
    assert pairs_hit / len(copies) >= RECALL_FLOOR, pairs_hit
    assert originals_lost / len(copies) <= FP_CEILING
    for reason, _ in got.values():
        assert reason is None or reason.startswith(steps.REASON_PREFIX)
    figures = report["global_steps"]["semantic_dedup"]
    share = figures["removal_share_at_eps"]["en"]
    removed = sum(1 for r, _ in got.values() if r) / len(got)
    assert share["0.1"] == pytest.approx(removed, abs=1e-6) and share["0.01"] <= share["0.05"] <= share["0.2"]
    assert figures["largest_clusters"][0]["examples"] and figures["clusters"]["en"] == 6
    assert figures["encoder"] == {"kind": "minilm", "path": None, "max_tokens": 256} and figures["eps"] == 0.1
    html = (out / "report.html").read_text()
    assert "removal_share_at_eps" in html and figures["largest_clusters"][0]["examples"][0]["id"] in html


def test_same_removals_for_any_batch_size(local_run, pages_file, tmp_path):
    out, _ = local_run
    run_pipeline(build_pipeline(_config(pages_file, tmp_path / "b7", batch_size=7, eps=0.1)), progress=False,
                 engine="local", num_cpus=1)
    assert _outcome(tmp_path / "b7") == _outcome(out)


def test_a_giant_cluster_is_split_before_its_pairwise_step(pages_file, tmp_path):
    run = run_pipeline(build_pipeline(_config(pages_file, tmp_path / "out", clusters=1, max_cluster=40, eps=0.1)),
                       progress=False, engine="local", num_cpus=1)
    figures = run.report["global_steps"]["semantic_dedup"]
    assert figures["giant_clusters_split"] == 1
    assert max(c["size"] for c in figures["largest_clusters"]) < 120
    got = _outcome(tmp_path / "out")
    copies = [i for i in got if i.endswith("~copy")]
    assert sum(1 for c in copies if got[c][0] or got[c.removesuffix("~copy")][0]) / len(copies) >= 0.9


def test_keep_quality_score_keeps_the_best_scored_of_each_set_of_copies(pages_file, tmp_path, quality_model,
                                                                          local_run):
    """``keep: quality_score`` after a quality stage: each removal names a kept document scored at
    least as high as it; where a copy outscores its original the copy is kept (``hard`` differs)."""
    cfg = _config(pages_file, tmp_path / "out", keep="quality_score", eps=0.1)
    cfg["stages"].insert(1, {"type": "quality_fasttext", "model_path": str(quality_model), "annotate_only": True})
    run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    rows = read_manifest_files(tmp_path / "out", "data/").to_pylist() + \
        read_manifest_files(tmp_path / "out", "rejects/").to_pylist()
    score = {r["id"]: r["quality_score"] for r in rows}
    named = {r["id"]: r["reject_reason"].removeprefix(steps.REASON_PREFIX) for r in rows if r.get("reject_reason")}
    assert len(named) >= 50 and all(score[kept] >= score[gone] for gone, kept in named.items())
    hard = {i: (r or "").removeprefix(steps.REASON_PREFIX) for i, (r, _) in _outcome(local_run[0]).items() if r}
    assert any(hard.get(gone) != kept for gone, kept in named.items())


@pytest.mark.parametrize("engine", [pytest.param("ray", marks=pytest.mark.slow),
                                    pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])])
def test_engines_give_the_local_removals(local_run, pages_file, tmp_path, engine, request):
    out, _ = local_run
    if engine == "ray":
        request.getfixturevalue("ray_local")
    run_pipeline(build_pipeline(_config(pages_file, tmp_path / engine, eps=0.1)), progress=False, engine=engine)
    assert _outcome(tmp_path / engine) == _outcome(out)


@pytest.mark.parametrize("stage, key", [({"encoder": {"kind": "lexical"}}, "encoder"),
                                        ({"encoder": {"kind": "lexical", "path": "/nonexistent/lex"}}, "encoder.path"),
                                        ({"eps": 1.5}, "eps"), ({"keep": "random"}, "keep"),
                                        ({"clusters": 0}, "clusters"), ({"clusters": -3}, "clusters")])
def test_a_bad_semantic_config_fails_before_any_work(tmp_path, pages_file, stage, key):
    with pytest.raises(ConfigError, match=key.split(".")[0]):
        build_pipeline(_config(pages_file, tmp_path / "out", **stage))
    assert not (tmp_path / "out").exists()


def _tiny_lexical_folder(folder, seed: int = 0) -> None:
    """A complete lexical encoder folder (random weights over MiniLM's tokenizer), written as
    train-embedder writes one."""
    from tokenmill.stages.embed.train_embedder import write_folder
    from tokenmill.stages.quality.embed_model import Encoder

    tok = Encoder().tokenizer
    vocab, rng = int(tok.vocab_size), np.random.default_rng(seed)
    tok_path = folder.parent / "tokenizer.json"
    tok.backend_tokenizer.save(str(tok_path))
    arrays = {"idf": np.ones(vocab, np.float32), "w0": rng.normal(size=(vocab, 8)).astype(np.float32),
              "b0": np.zeros(8, np.float32), "w1": rng.normal(size=(8, 4)).astype(np.float32),
              "b1": np.zeros(4, np.float32)}
    write_folder(str(folder), arrays, str(tok_path),
                 {"kind": "lexical", "version": 3, "dim": 4, "hidden": 8, "orders": [1], "buckets": vocab,
                  "vocab": vocab, "max_tokens": 64, "layers": 2})


@pytest.mark.parametrize("damage", ["none", "truncated weights", "empty weights", "no weights", "version 99",
                                    "no tokenizer", "garbage tokenizer", "shapes"])
def test_a_damaged_lexical_folder_is_a_config_error_before_any_work(tmp_path, pages_file, damage):
    """The whole folder is read before the run starts: a cut or missing file, an unknown format or
    weights that do not match embedder.json name the folder under encoder.path (no traceback
    after the stream phase, no output folder)."""
    enc = tmp_path / "enc"
    _tiny_lexical_folder(enc)
    weights, config = enc / "weights.npz", enc / "embedder.json"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty weights":
        weights.write_bytes(b"")
    elif damage == "no weights":
        weights.unlink()
    elif damage == "version 99":
        config.write_text(config.read_text().replace('"version": 3', '"version": 99'))
    elif damage == "no tokenizer":
        (enc / "tokenizer.json").unlink()
    elif damage == "garbage tokenizer":
        (enc / "tokenizer.json").write_text("garbage")
    elif damage == "shapes":
        config.write_text(config.read_text().replace('"dim": 4', '"dim": 5'))
    cfg = _config(pages_file, tmp_path / "out", encoder={"kind": "lexical", "path": str(enc)})
    if damage == "none":
        build_pipeline(cfg)
        return
    with pytest.raises(ConfigError, match="encoder.path") as err:
        build_pipeline(cfg)
    assert str(enc) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_an_index_of_another_encoder_is_refused_before_any_work(pages_file, tmp_path):
    """The first run that writes an index names its encoder there; a run with another encoder (a
    retrain of the same dimension, where cosines silently mean nothing) that reads or writes it,
    configured or as an incremental run's own index, stops before any work, naming both."""
    rows = [json.loads(line) for line in pages_file.read_text().splitlines()[:40]]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    one, two = tmp_path / "enc1", tmp_path / "enc2"
    _tiny_lexical_folder(one)
    _tiny_lexical_folder(two, seed=1)
    index = tmp_path / "index"
    cfg = _config(tmp_path / "in.jsonl", tmp_path / "A", encoder={"kind": "lexical", "path": str(one)},
                  index={"write": str(index)})
    run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    assert json.loads((index / "_encoder.json").read_text())["name"] == str(one)
    for sem in ({"index": {"read": [str(index)]}}, {"index": {"write": str(index)}}):
        with pytest.raises(ConfigError, match="holds embeddings of encoder") as err:
            build_pipeline(_config(tmp_path / "in.jsonl", tmp_path / "B", encoder={"kind": "lexical", "path": str(two)},
                                   **sem))
        assert str(one) in str(err.value) and str(two) in str(err.value)
    same = _config(tmp_path / "in.jsonl", tmp_path / "C", encoder={"kind": "lexical", "path": str(one)},
                   index={"read": [str(index)]})
    build_pipeline(same)   # the encoder that wrote it: fine
    inc = {**_config(tmp_path / "in.jsonl", tmp_path / "D", encoder={"kind": "lexical", "path": str(one)}),
           "output": {"path": str(tmp_path / "D"), "incremental": True}}
    run_pipeline(build_pipeline(inc), progress=False, engine="local", num_cpus=1)
    inc["stages"][1]["encoder"]["path"] = str(two)
    inc["input"]["paths"] = [str(pages_file)]
    with pytest.raises(ConfigError, match="holds embeddings of encoder"):
        run_pipeline(build_pipeline(inc), progress=False, engine="local", num_cpus=1)


@pytest.mark.parametrize("kind", ["lexical", "minilm"])
def test_texts_the_encoder_cannot_read_are_nobodys_duplicates(tmp_path, kind):
    """Emoji and Braille are all [UNK] to MiniLM's tokenizer, so every such text embedded alike and
    distinct ones were removed as copies of each other: they get zero rows, so sem_max_sim 0."""
    from tokenmill.stages.embed.encoders import EncoderSpec, make_encoder

    texts = ["🎉🎊🥳 🎈🎂", "🚀🌕✨ 🔭", "⠓⠑⠇⠇⠕ ⠺⠕⠗⠇⠙", "⠞⠓⠊⠎ ⠊⠎ ⠁ ⠞⠑⠎⠞", "The river rose overnight. 🎉",
             "The river rose overnight. 🎉"]
    spec = {"kind": kind}
    if kind == "lexical":
        _tiny_lexical_folder(tmp_path / "enc")
        spec["path"] = str(tmp_path / "enc")
    enc = make_encoder(EncoderSpec(**spec))
    enc.load_model()
    norms = np.linalg.norm(enc.embed_texts(texts), axis=1)
    assert np.allclose(norms, [0, 0, 0, 0, 1, 1], atol=1e-5), norms
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    cfg = {"name": "unk", "input": {"paths": [str(tmp_path / "in.jsonl")]}, "output": {"path": str(tmp_path / "out")},
           "stages": [{"type": "semantic_dedup", "encoder": spec, "scope": "global", "eps": 0.2}]}
    run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    got = _outcome(tmp_path / "out")
    assert {i: got[i] for i in ("t0", "t1", "t2", "t3")} == {f"t{i}": (None, 0.0) for i in range(4)}
    assert got["t5"][0] == f"{steps.REASON_PREFIX}t4" and got["t4"][0] is None   # a readable copy still goes


def test_an_encoder_is_the_same_encoder_whatever_lies_beside_its_weights(tmp_path):
    """Notes, a .git folder and eval.json beside the weights do not make another encoder; the
    bundled MiniLM and a path to its folder are one encoder; an index whose only _encoder.json was
    left by a run that never committed refuses nobody."""
    from tokenmill.stages.embed.encoders import EncoderSpec
    from tokenmill.stages.quality.embed_model import default_encoder
    from tokenmill.stages.semantic import index_encoder

    enc = tmp_path / "enc"
    _tiny_lexical_folder(enc)
    before = index_encoder._folder_digest(str(enc), "embedder.json")[0]
    (enc / "NOTES.md").write_text("trained on the March crawl")
    (enc / ".git").mkdir()
    (enc / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (enc / "eval.json").write_text("{}")
    assert index_encoder._folder_digest(str(enc), "embedder.json")[0] == before
    (enc / "weights.npz").write_bytes((enc / "weights.npz").read_bytes()[:-1] + b"x")
    assert index_encoder._folder_digest(str(enc), "embedder.json")[0] != before
    bundled = index_encoder.identity(EncoderSpec(kind="minilm"))
    assert bundled["digest"] == index_encoder.identity(EncoderSpec(kind="minilm", path=default_encoder()))["digest"]
    index = tmp_path / "index"
    index.mkdir()
    (index / "_encoder.json").write_text(json.dumps({**bundled, "digest": "another"}))
    assert index_encoder.problem(EncoderSpec(kind="minilm"), [str(index)]) is None   # no committed run


def test_two_encoders_racing_for_an_empty_index_never_mix_in_it(pages_file, tmp_path, monkeypatch):
    """Two runs of different encoders start on an empty index (both pass the check): a run whose
    index names another encoder just before it commits does not add its embeddings. The race is
    injected: the other run names itself right after this one did."""
    from tokenmill.stages.embed.encoders import EncoderSpec
    from tokenmill.stages.semantic import index_encoder

    rows = [json.loads(line) for line in pages_file.read_text().splitlines()[:20]]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    one, two, index = tmp_path / "enc1", tmp_path / "enc2", tmp_path / "index"
    _tiny_lexical_folder(one)
    _tiny_lexical_folder(two, seed=1)
    real_record = index_encoder.record

    def other_run_names_itself_meanwhile(spec, root):
        real_record(spec, root)
        (index / "_encoder.json").write_text(json.dumps(index_encoder.identity(EncoderSpec(kind="lexical",
                                                                                            path=str(one)))))

    monkeypatch.setattr(index_encoder, "record", other_run_names_itself_meanwhile)
    cfg = _config(tmp_path / "in.jsonl", tmp_path / "B", encoder={"kind": "lexical", "path": str(two)},
                  index={"write": str(index)})
    with pytest.raises(Exception, match="another run named it while this run ran"):
        run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    assert json.loads((index / "_encoder.json").read_text())["name"] == str(one)
    assert not list(index.glob("run=*"))


@pytest.mark.parametrize("stage", ["semantic_dedup", "minhash_dedup", "exact_dedup"])
def test_an_index_folder_that_cannot_be_written_stops_the_run_before_any_work(tmp_path, stage):
    """index.write under a regular file: a config error naming it when the run starts (it was a
    traceback at the end of the global step, after every document had been streamed)."""
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"document number {i} " * 20}) + "\n"
                                               for i in range(20)))
    (tmp_path / "a-file").write_text("x")
    spec = {"type": stage, "index": {"write": str(tmp_path / "a-file" / "index")}}
    if stage == "semantic_dedup":
        _tiny_lexical_folder(tmp_path / "enc")
        spec["encoder"] = {"kind": "lexical", "path": str(tmp_path / "enc")}
    cfg = {"name": "w", "input": {"paths": [str(tmp_path / "in.jsonl")]}, "output": {"path": str(tmp_path / "out")},
           "stages": [spec]}
    with pytest.raises(ConfigError, match="cannot write the index folder"):
        run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    assert not (tmp_path / "out" / "data").exists() and not (tmp_path / "out" / "report.json").exists()


def test_an_index_to_read_that_does_not_exist_is_named_in_a_warning(tmp_path, caplog):
    """A typo in index.read turned cross-run dedup off with no word; the run still goes on."""
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n"
                                               for i in range(5)))
    cfg = {"name": "r", "input": {"paths": [str(tmp_path / "in.jsonl")]}, "output": {"path": str(tmp_path / "out")},
           "stages": [{"type": "exact_dedup", "index": {"read": [str(tmp_path / "no-such-index")]}}]}
    with caplog.at_level("WARNING", logger="tokenmill"):
        run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    assert f"index.read: {tmp_path / 'no-such-index'} does not exist" in caplog.text
    assert (tmp_path / "out" / "report.json").exists()


def test_d4_drops_the_most_prototypical_of_each_cluster_with_a_floor():
    from tokenmill.stages.semantic import diversify

    assert [diversify.dropped_count(n, 0.8, 1) for n in (1, 2, 5, 10, 11)] == [0, 0, 1, 2, 2]
    assert diversify.dropped_count(3, 0.1, 0) == 2 and diversify.dropped_count(3, 0.1, 2) == 1
    n = 6
    rows = pa.table({"row_key": [f"f:{i}" for i in range(n)], "id": [f"d{i}" for i in range(n)], "url": pa.nulls(n, pa.string()),
                     "node": pa.array(range(n), pa.int64()), "_group": pa.array([7] * n, pa.int64()),
                     diversify.DKEY: pa.array([1, 1, 1, 1, 2, 2], pa.int64()),
                     steps.COS: pa.array([0.5, 0.9, 0.7, 0.9, 0.2, 0.3], pa.float32()),
                     "sem_max_sim": pa.array([0.1] * n, pa.float32())})
    out = {r["_id"]: r["reject_reason"] for r in diversify.prune(rows, keep=0.5, floor=1).to_pylist()}
    # cluster 1: the two closest to the centroid go (a tie at 0.9: the later, d3, first); cluster 2: one of two
    assert out == {"d0": None, "d1": diversify.REASON, "d2": None, "d3": diversify.REASON, "d4": None,
                   "d5": diversify.REASON}


def test_d4_after_dedup_prunes_a_share_of_the_survivors(pages_file, tmp_path, local_run):
    run = run_pipeline(build_pipeline(_config(pages_file, tmp_path / "out", eps=0.1,
                                              diversify={"keep": 0.75, "docs_per_cluster": 10})),
                       progress=False, engine="local", num_cpus=1)
    got = _outcome(tmp_path / "out")
    dedup_only = _outcome(local_run[0])
    figures = run.report["global_steps"]["semantic_dedup"]["diversify"]
    survivors = [i for i, (r, _) in dedup_only.items() if r is None]
    pruned = [i for i, (r, _) in got.items() if r == "semantic_prototype"]
    assert figures["survivors"]["en"] == len(survivors) and figures["pruned"]["en"] == len(pruned)
    assert 0.2 * len(survivors) <= len(pruned) <= 0.25 * len(survivors) and set(pruned) <= set(survivors)
    assert {i: r for i, (r, _) in got.items() if r != "semantic_prototype"} == {i: r for i, (r, _) in dedup_only.items()
                                                                            if i not in pruned}


def test_a_later_run_removes_copies_of_what_earlier_runs_kept(shared_data, tmp_path):
    rows = _pages(shared_data, n=60)
    originals = [r for r in rows if not r["id"].endswith("~copy")]
    copies = [r for r in rows if r["id"].endswith("~copy")]
    fresh = [json.loads(line) for line in list(open(shared_data / "web_dev.jsonl", encoding="utf-8"))[100:130]]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in originals))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n"
                                              for r in copies[:30] + fresh))
    index = tmp_path / "index"
    run_pipeline(build_pipeline(_config(tmp_path / "a.jsonl", tmp_path / "A", eps=0.1, index={"write": str(index)})),
                 progress=False, engine="local", num_cpus=1)
    kept_a = {i for i, (r, _) in _outcome(tmp_path / "A").items() if r is None}
    assert len(list(index.glob("run=*/_SUCCESS"))) == 1
    cfg_b = _config(tmp_path / "b.jsonl", tmp_path / "B", eps=0.1, index={"read": [str(index)], "write": str(index)})
    result = run_pipeline(build_pipeline(cfg_b), progress=False, engine="local", num_cpus=1)
    got = _outcome(tmp_path / "B")
    assert set(got) == {r["id"] for r in copies[:30] + fresh}   # decisions for this run's documents only
    hit = [c["id"] for c in copies[:30] if got[c["id"]][0] == f"{steps.REASON_PREFIX}{c['id'].removesuffix('~copy')}"]
    assert len(hit) >= 27 and all(c.removesuffix("~copy") in kept_a for c in hit)
    assert sum(1 for r in fresh if got[r["id"]][0]) <= 1
    figures = result.report["global_steps"]["semantic_dedup"]
    assert figures["indexed_runs"] == 1 and len(list(index.glob("run=*/_SUCCESS"))) == 2
    assert run_pipeline(build_pipeline(cfg_b), progress=False, engine="local", num_cpus=1).skipped


def test_nothing_new_to_keep_or_to_decide_is_no_crash(shared_data, tmp_path):
    """A run whose every document an earlier run already kept (with D4 on: no survivor to prune),
    and a run where no document reaches the stage: both finish."""
    rows = [r for r in _pages(shared_data, n=20) if not r["id"].endswith("~copy")]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(dict(r, id=r["id"] + "~again")) + "\n" for r in rows))
    index = tmp_path / "index"
    run_pipeline(build_pipeline(_config(tmp_path / "a.jsonl", tmp_path / "A", index={"write": str(index)})),
                 progress=False, engine="local", num_cpus=1)
    run = run_pipeline(build_pipeline(_config(tmp_path / "b.jsonl", tmp_path / "B", index={"read": [str(index)]},
                                              diversify={"keep": 0.5})), progress=False, engine="local", num_cpus=1)
    got = _outcome(tmp_path / "B")
    assert all(reason == f"{steps.REASON_PREFIX}{i.removesuffix('~again')}" for i, (reason, _) in got.items())
    assert run.report["global_steps"]["semantic_dedup"]["diversify"]["pruned"] == {}
    cfg = _config(tmp_path / "a.jsonl", tmp_path / "C")
    cfg["stages"].insert(1, {"type": "length_filter", "min_chars": 10**9})
    empty = run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    assert empty.report["output"]["docs"] == 0


def test_centroid_cosines_do_not_depend_on_the_rows_beside_them(embedded):
    _, x = embedded
    c = kmeans.fit(x, 3, seed=0)
    whole = kmeans.assign(x, c)
    for block in (1, 7):
        parts = [kmeans.assign(x[s:s + block], c) for s in range(0, len(x), block)]
        assert np.array_equal(np.concatenate([p[0] for p in parts]), whole[0])
        assert np.array_equal(np.concatenate([p[1] for p in parts]), whole[1])


def test_zero_embeddings_take_no_part_in_their_clusters_pairwise_step(embedded):
    """Texts the encoder cannot read (zero embeddings) all land in one cluster; the pairwise step
    skips them (max_sim 0, kept) and decides the rest as it would without them."""
    rows, x = embedded
    blob = vectors.encode(x)
    x = vectors.decode(blob, x.shape[1])
    zeros = 50
    n = len(rows)
    both = np.r_[x, np.zeros((zeros, x.shape[1]), np.float32)]
    more = rows + [{"id": f"empty{i}", "text": ""} for i in range(zeros)]
    labels, cos = np.zeros(len(both), np.int32), np.r_[np.round(x @ x.mean(axis=0), 6), np.zeros(zeros)].astype(np.float32)
    alone = steps.dedup_clusters(steps.cluster_ids(_key_rows(rows, blob, labels[:n], cos[:n])), eps=0.1, keep="hard", block=16)
    mixed = steps.dedup_clusters(steps.cluster_ids(_key_rows(more, vectors.encode(both), labels, cos)), eps=0.1,
                                 keep="hard", block=16)
    got = {r["_id"]: (r["reject_reason"], r[steps.MAX_SIM]) for r in mixed.to_pylist()}
    assert {r["_id"]: (r["reject_reason"], r[steps.MAX_SIM]) for r in alone.to_pylist()} == {
        i: v for i, v in got.items() if not i.startswith("empty")}
    assert all(got[f"empty{i}"] == (None, 0.0) for i in range(zeros)) and any(r for r, _ in got.values())


KILL_AFTER_INDEX = """
import os, signal, sys, yaml
from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.semantic import stage

real = stage.commit_marker
def commit_then_die(store):
    real(store)
    os.kill(os.getpid(), signal.SIGKILL)   # killed the moment its index is committed
stage.commit_marker = commit_then_die
run_pipeline(build_pipeline(yaml.safe_load(open(sys.argv[1]))), progress=False, engine="local", num_cpus=1)
"""


@pytest.mark.slow
def test_a_run_killed_once_its_index_is_committed_resumes_without_meeting_itself(local_run, pages_file, tmp_path):
    """An incremental run SIGKILLed right after committing its embedding index, then run again:
    the leftover index is the run's own (not an earlier run's), so the decisions are a plain run's,
    nothing is lost, and the index holds the run once."""
    import signal
    import subprocess
    import sys

    import yaml

    cfg = _config(pages_file, tmp_path / "out", eps=0.1)
    cfg["output"]["incremental"] = True
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "kill.py").write_text(KILL_AFTER_INDEX)
    killed = subprocess.run([sys.executable, str(tmp_path / "kill.py"), str(tmp_path / "cfg.yaml")],
                            capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    index = tmp_path / "out" / "_index" / "semantic_dedup"
    assert len(list(index.glob("run=*/_SUCCESS"))) == 1 and not (tmp_path / "out" / "_manifest.json").exists()
    run_pipeline(build_pipeline(cfg), progress=False, engine="local", num_cpus=1)
    assert _outcome(tmp_path / "out") == _outcome(local_run[0])
    assert len(list(index.glob("run=*/_SUCCESS"))) == 1


def test_a_transformer_reads_whole_documents_here_unless_told_otherwise():
    """semantic_dedup's MiniLM reads 1,024 tokens in windows (a copy with a new header is the same
    document), at its own eps; a max_tokens given is kept, and the index names the tokens read, so
    an index written at 256 tokens refuses the new default by name."""
    from tokenmill.stages.semantic import index_encoder
    from tokenmill.stages.semantic.params import DEFAULT_EPS, TRANSFORMER_DEDUP_TOKENS, SemanticParams

    default = SemanticParams(encoder={"kind": "minilm"})
    assert default.encoder.max_tokens == TRANSFORMER_DEDUP_TOKENS == 1024 and default.eps_for() == DEFAULT_EPS["minilm"] == 0.15
    given = SemanticParams(encoder={"kind": "minilm", "max_tokens": 256}, eps=0.2)
    assert (given.encoder.max_tokens, given.eps_for()) == (256, 0.2)
    assert index_encoder.identity(default.encoder)["max_tokens"] == 1024
    old, new = index_encoder.identity(given.encoder), index_encoder.identity(default.encoder)
    assert not index_encoder._same(old, new) and "Set encoder.max_tokens: 256" in index_encoder._advice(old, new)

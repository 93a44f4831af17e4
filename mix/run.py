"""A mix on an executor, in durable phases, under the output's lease.

1. **Check** (driver, before any work): the config, each source's files and columns, the tokenizer.
2. **Plan**: the metadata pass (``budget.source_stats`` on the executor, no text) and ``solve``;
   the plan goes to ``_mix_work/<fingerprint>/plan.json`` and a re-run takes it from there.
3. **Shards**: ``tokens.mix_rows`` (read, select, repeat, tokenize, key) then one ``partition_map``
   by key range (``shards.write_shards``): the engine's own shuffle brings each shard's rows to one
   task, which sorts them by key and writes the shard. The global order is a sort by a seeded hash,
   never an in-memory shuffle of the corpus.
4. **Commit**: ``mix.json`` and ``mix.html`` from the tasks' statistics, then ``_manifest.json``
   (every file with its size and SHA-256, as the writing task counted them): the manifest is the
   commit; the driver reads no shard.

The fingerprint covers everything that decides the bytes (sources and their files, budgets,
tokenizer, format, seed), not the engine: a finished mix re-run does nothing, a killed one re-run
writes only the missing shards, and Ray, Spark and local write identical shards.
"""
from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace

import pyarrow as pa

from tokenmill.engine.config import ConfigError
from tokenmill.engine.durable.lease import LEASE_FOLDER, Lease
from tokenmill.engine.durable.manifest import MANIFEST
from tokenmill.engine.executors.base import run_executor
from tokenmill.engine.io.storage import Storage
from tokenmill.mix import budget, report, shards, tokens
from tokenmill.mix.sources import resolve_sources

WORK = "_mix_work"
KIND = "tokenmill-mix"
OWN_TOP = {MANIFEST, "mix.json", "mix.html", WORK, LEASE_FOLDER}
#: files per metadata / tokenize task
FILES_PER_TASK = 1


def fingerprint(cfg, files: list) -> str:
    decided = cfg.model_dump(include={"sources", "target_tokens", "tokenizer", "eos", "shuffle", "seed"})
    decided["output"] = cfg.output.model_dump(include={"format", "max_tokens_per_file"})
    decided["files"] = [f.urls for f in files]
    return hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check(cfg, where=None) -> tuple[list, tokens.Tokenizer]:
    """Files of each source and the tokenizer, or a ConfigError naming every problem."""
    files, errors = resolve_sources(cfg)
    tok = None
    try:
        tok = tokens.tokenizer_of(cfg)
    except Exception as e:
        at = "tokenizer.eos_token" if "eos_token" in str(e) else "tokenizer.path" if cfg.tokenizer.path else "tokenizer.encoding"
        errors.append((at, f"cannot load the tokenizer: {type(e).__name__}: {e}"))
    if tok is not None and cfg.eos and tok.eos_id is None:
        errors.append(("tokenizer.eos_token", "eos: true, but the tokenizer has none of "
                       f"{', '.join(tokens.EOS_CANDIDATES)}: name it, or set eos: false"))
    if errors:
        raise ConfigError(errors, where)
    return files, tok


def _foreign(store: Storage) -> list[str]:
    """Top-level names in the output that a mix did not write."""
    if not store.exists(store.root):
        return []
    names = [n.rsplit("/", 1)[-1] for n in store.names(store.root)]
    return [n for n in names if n not in OWN_TOP and not n.startswith("part-")]


def run_mix(cfg, *, engine: str | None = None, say=print, where=None) -> dict:
    """Run (or finish, or recognise as done) the mix; returns its mix.json."""
    files, tok = check(cfg, where)
    fp = fingerprint(cfg, files)
    store = Storage(cfg.output.path)
    store.makedirs(store.root)
    lease = Lease(store, store.path(LEASE_FOLDER), 600.0, say)
    lease.acquire(0.0)
    try:
        done = store.read_json(store.path(MANIFEST))
        if isinstance(done, dict) and done.get("kind") == KIND:
            if done.get("fingerprint") == fp:
                say(f"mix {cfg.name}: already finished in {cfg.output.path} (nothing to do)")
                return store.read_json(store.path("mix.json")) or {}
            raise ConfigError([("output.path", f"holds a finished mix of another config (fingerprint "
                                f"{done.get('fingerprint')}); write this one elsewhere")], where)
        foreign = _foreign(store)
        if foreign:
            raise ConfigError([("output.path", f"holds files a mix did not write ({', '.join(foreign[:5])}); "
                                "a mix writes only to an empty folder or its own")], where)
        return _run(cfg, files, tok, fp, store, lease, engine or cfg.engine, say, where)
    finally:
        lease.release()


def _run(cfg, files, tok, fp, store, lease, engine, say, where) -> dict:
    t0 = time.time()
    work = Storage(store.path(WORK, fp))
    items = pa.table({"url": [u for f in files for u in f.urls],
                      "source": pa.array([f.index for f in files for _ in f.urls], pa.int32())})
    key_columns, languages = [""] * len(cfg.sources), [False] * len(cfg.sources)
    for f in files:
        key_columns[f.index], languages[f.index] = f.key_column, f.has_language
    blocks = max(1, -(-items.num_rows // FILES_PER_TASK))
    executor = run_executor(engine, SimpleNamespace(config=cfg, stages=[]))
    executor.start()
    try:
        plan = work.read_json(work.path("plan.json"))
        if plan is None:
            ops = executor.dataset_ops(1)
            say(f"mix {cfg.name}: metadata pass over {items.num_rows} file(s)")
            stats = ops.collect(ops.map(ops.from_rows(items, blocks), budget.source_stats, sources=cfg.sources,
                                        key_columns=key_columns, languages=languages, seed=cfg.seed, eos=cfg.eos))
            plan = budget.solve(cfg, stats if stats.num_rows else budget.STATS_SCHEMA.empty_table())
            errors = budget.plan_errors(cfg, plan)
            if errors:
                raise ConfigError(errors, where)
            plan["dtype"] = tok.dtype.str
            lease.check()
            work.write_json_atomic(work.path("plan.json"), plan)
        finished = _finished(work)
        todo = plan["ranges"] - len(finished)
        say(f"mix {cfg.name}: {plan['expected_tokens']:,} tokens planned in {plan['ranges']} shard(s); "
            f"{todo} to write")
        if todo:
            ops = executor.dataset_ops(plan["ranges"])
            rows = ops.map(ops.from_rows(items, blocks), tokens.mix_rows, sources=cfg.sources, key_columns=key_columns,
                           plans=plan["sources"], seed=cfg.seed, eos=cfg.eos,
                           tokenizer=(cfg.tokenizer.kind, cfg.tokenizer.encoding, cfg.tokenizer.path,
                                      cfg.tokenizer.eos_token),
                           ranges=plan["ranges"], done=frozenset(finished))
            written = ops.collect(ops.partition_map([rows], "_range", shards.write_shards, hashed=False,
                                                    out_url=store.url(store.root), done_url=work.url(work.path("done")),
                                                    dtype=plan["dtype"], fmt=cfg.output.format,
                                                    max_tokens=cfg.output.max_tokens_per_file))
            for row in written.to_pylist() if written.num_rows else []:
                finished[row["range"]] = json.loads(row["stats"])
    finally:
        executor.stop()
    lease.check()
    return _commit(cfg, plan, finished, fp, store, work, tok, time.time() - t0, say)


def _finished(work: Storage) -> dict[int, dict]:
    """The shards an earlier attempt finished (their done markers), by range."""
    folder = work.path("done")
    if not work.exists(folder):
        return {}
    out = {}
    for name in work.names(folder):
        if name.endswith(".json") and ".tmp-" not in name:
            stats = work.read_json(work.path("done", name))
            if stats:
                out[int(stats["range"])] = stats
    return out


def _commit(cfg, plan, finished, fp, store, work, tok, seconds, say) -> dict:
    shard_stats = [finished[r] for r in sorted(finished)]
    summary = report.build(cfg, plan, shard_stats, tok, seconds)
    store.write_json_atomic(store.path("mix.json"), summary)
    store.write_text_atomic(store.path("mix.html"), report.html(summary))
    files = [f for s in shard_stats for f in s["files"]]
    manifest = {"kind": KIND, "fingerprint": fp, "name": cfg.name, "format": cfg.output.format,
                "dtype": plan["dtype"], "documents": summary["documents"], "tokens": summary["tokens"],
                "files": files}
    store.write_json_atomic(store.path(MANIFEST), manifest)   # the commit
    listed = {f["path"] for f in files}
    for name in store.names(store.root):   # a killed attempt's temporary or cut-off pieces
        if name.startswith("part-") and name not in listed:
            store.rm(store.path(name))
    store.rm(store.path(WORK))   # this attempt's plan and markers, and any other config's killed attempt
    say(f"mix {cfg.name}: {summary['documents']:,} documents, {summary['tokens']:,} tokens in "
        f"{len(files)} file(s) -> {cfg.output.path} ({seconds:.1f}s); report: mix.json, mix.html")
    return summary

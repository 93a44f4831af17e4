"""A mix on an executor, in durable phases, under the output's lease.

1. **Check** (driver, before any work): the config, each source's files and columns, the tokenizer.
2. **Plan**: the metadata pass (``budget.source_stats`` on the executor, no text) and ``solve``;
   the plan goes to ``_mix_work/<fingerprint>/plan.json`` and a re-run takes it from there.
3. **Shards**: ``tokens.mix_rows`` (read, select, repeat, tokenize, key) then one ``partition_map``
   by key range (``shards.write_shards``): the engine's own shuffle brings each shard's rows to one
   task, which sorts them by key and writes the shard. The global order is a sort by a seeded hash,
   never an in-memory shuffle of the corpus.
5. **Commit**: ``mix.json`` and ``mix.html`` from the tasks' statistics, then ``_manifest.json``
   (every file with its size and SHA-256, as the writing task counted them): the manifest is the
   commit; the driver reads no shard.

The fingerprint covers everything that decides the bytes (sources and their files, budgets,
tokenizer, format, seed), not the engine: a finished mix re-run does nothing, a killed one re-run
tokenizes only unfinished tasks and writes only the missing shards, and Ray, Spark and local write
identical shards.
"""
from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from tokenmill.engine.config import ConfigError
from tokenmill.engine.durable.lease import LEASE_FOLDER, Lease
from tokenmill.engine.durable.manifest import MANIFEST
from tokenmill.engine.executors.base import run_executor
from tokenmill.engine.io.storage import Storage
from tokenmill.mix import budget, report, shards, tokens
from tokenmill.mix.progress import MarkerProgress
from tokenmill.mix.sources import resolve_sources

WORK = "_mix_work"
KIND = "tokenmill-mix"
OWN_TOP = {MANIFEST, "mix.json", "mix.html", WORK, LEASE_FOLDER}
#: input files per metadata / tokenize task, and the fewest tasks a mix of many files gets
FILES_PER_TASK, MIN_TASKS = 8, 16


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


def task_table(files: list) -> pa.Table:
    """The tokenize tasks: consecutive input files, at most ``FILES_PER_TASK`` each and at least
    ``MIN_TASKS`` tasks when there are that many files (so every core has work)."""
    pairs = [(u, f.index) for f in files for u in f.urls]
    n = min(len(pairs), max(MIN_TASKS, -(-len(pairs) // FILES_PER_TASK)))
    bounds = np.linspace(0, len(pairs), n + 1).astype(int)
    chunks = [pairs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return pa.table({"task": pa.array(range(len(chunks)), pa.int64()),
                     "urls": [[u for u, _ in c] for c in chunks],
                     "sources": pa.array([[s for _, s in c] for c in chunks], pa.list_(pa.int32()))})


def _run(cfg, files, tok, fp, store, lease, engine, say, where) -> dict:
    t0 = time.time()
    work = Storage(store.url(store.path(WORK, fp)))   # on the output's store (a bare path would be local)
    tasks = task_table(files)
    key_columns, languages = [""] * len(cfg.sources), [False] * len(cfg.sources)
    for f in files:
        key_columns[f.index], languages[f.index] = f.key_column, f.has_language
    executor = run_executor(engine, SimpleNamespace(config=cfg, stages=[]))
    executor.start()
    try:
        ops = executor.dataset_ops(1)
        plan = work.read_json(work.path("plan.json"))
        if plan is None:
            say(f"mix {cfg.name}: metadata pass over {sum(len(u) for u in tasks['urls'].to_pylist())} file(s)")
            stats = ops.collect(ops.map(ops.from_rows(tasks, tasks.num_rows), budget.source_stats, sources=cfg.sources,
                                        key_columns=key_columns, languages=languages, seed=cfg.seed, eos=cfg.eos))
            plan = budget.solve(cfg, stats if stats.num_rows else budget.STATS_SCHEMA.empty_table())
            errors = budget.plan_errors(cfg, plan)
            if errors:
                raise ConfigError(errors, where)
            plan["dtype"] = tok.dtype.str
            lease.check()
            work.write_json_atomic(work.path("plan.json"), plan)
        finished = _finished(work, "done")
        say(f"mix {cfg.name}: {plan['expected_tokens']:,} tokens planned in {plan['ranges']} shard(s), "
            f"{tasks.num_rows} tokenize task(s)")
        if len(finished) < plan["ranges"]:
            index = _tokenize(cfg, ops, tasks, work, plan, key_columns, frozenset(finished), say)
            todo = _shard_items(index, set(finished), work)
            say(f"mix {cfg.name}: writing {todo.num_rows} shard(s)")
            if todo.num_rows:
                with MarkerProgress(work, work.path("done"), len(finished) + todo.num_rows, f"mix {cfg.name}: shards", say,
                                    before=len(finished)):
                    written = ops.collect(ops.map(ops.from_rows(todo, todo.num_rows), shards.write_shards,
                                                  out_url=store.url(store.root), done_url=work.url(work.path("done")),
                                                  dtype=plan["dtype"], fmt=cfg.output.format,
                                                  max_tokens=cfg.output.max_tokens_per_file))
                for row in written.to_pylist() if written.num_rows else []:
                    finished[row["range"]] = json.loads(row["stats"])
    finally:
        executor.stop()
    lease.check()
    return _commit(cfg, plan, finished, fp, store, work, tok, time.time() - t0, say)


def _tokenize(cfg, ops, tasks, work, plan, key_columns, done, say) -> pa.Table:
    """The exchange index (task, shard, row group, rows, tokens) of every task: those an earlier
    attempt finished (their markers), and the rest, tokenized now."""
    folder = work.path("tokens")
    earlier = _finished(work, "tokens", key="task")
    todo = tasks.filter(pa.array([t not in earlier for t in tasks["task"].to_pylist()]))
    say(f"mix {cfg.name}: tokenizing in {todo.num_rows} task(s) ({len(earlier)} done earlier)")
    index = [pa.Table.from_pylist([r for rows in earlier.values() for r in rows], schema=tokens.INDEX_SCHEMA)]
    if todo.num_rows:
        t = cfg.tokenizer
        with MarkerProgress(work, folder, tasks.num_rows, f"mix {cfg.name}: tokenize", say, before=len(earlier)):
            index.append(ops.collect(ops.map(
                ops.from_rows(todo, todo.num_rows), tokens.tokenize_tasks, tokenizer=(t.kind, t.encoding, t.path, t.eos_token),
                work_url=work.url(folder), sources=cfg.sources, key_columns=key_columns, plans=plan["sources"],
                seed=cfg.seed, eos=cfg.eos, ranges=plan["ranges"], done=done)))
    return pa.concat_tables([i for i in index if i.num_rows] or [tokens.INDEX_SCHEMA.empty_table()])


def _shard_items(index: pa.Table, finished: set, work: Storage) -> pa.Table:
    """One work item per shard still to write: its exchange files' row groups."""
    by: dict[int, list] = {}
    for r in index.to_pylist():
        if r["range"] not in finished:
            by.setdefault(r["range"], []).append((work.url(work.path("tokens", f"task-{r['task']:06d}.parquet")), r["group"]))
    shards_ = sorted(by)
    return pa.table({"range": pa.array(shards_, pa.int64()), "files": [[f for f, _ in by[r]] for r in shards_],
                     "groups": pa.array([[g for _, g in by[r]] for r in shards_], pa.list_(pa.int32()))})


def _finished(work: Storage, folder: str, key: str = "range") -> dict[int, object]:
    """What an earlier attempt finished in ``folder`` (its markers), by shard or by task."""
    path = work.path(folder)
    out = {}
    for name in work.names(path) if work.exists(path) else []:
        if name.endswith(".json") and ".tmp-" not in name:
            got = work.read_json(work.path(folder, name))
            if got is not None:
                out[int(got["range"]) if key == "range" else int(name.split("-")[1].split(".")[0])] = got
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

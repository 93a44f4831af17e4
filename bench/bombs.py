"""Benchmark: hostile inputs against bounded memory. Each case builds one hostile input beside a few
good records (from ../shared/data) in a temp folder, runs ``tokenmill run --engine local`` on it in
a child process while sampling the RSS of the whole process tree (psutil, every 50 ms: the parent
and all its children, recursively), and runs the same input without the hostile part as the
baseline. Per case it prints the exit code, the good records kept (and the baseline's), how the
bad input was reported, the peak tree RSS, the baseline's peak, the delta, and PASS/FAIL: exit 0,
every good record kept, the bad one reported as expected, and a delta within ``--margin-mib``.

    python bench/bombs.py                                # every case at full size (~2 GB each)
    python bench/bombs.py --cases zstd-line,fifo --scale 0.1

Cases (sizes at ``--scale 1``; ``--scale`` shrinks them and ``input.max_doc_bytes`` alike):

- ``{gzip,bz2,xz,zstd}-line``: a decompression bomb, one 2 GiB line of repeated text (one
  compressed block written again and again: concatenated members, streams or frames), 5 good
  records before it and 5 after; expected a ``too_large`` reject with the line's size and SHA-256.
- ``{gzip,bz2,xz,zstd}-lines``: a bomb of 2 GiB of normal-looking 8 KB lines (a real web page,
  numbered ids), every one kept or rejected by a stage like any record (token counting off here:
  2 GiB of text would take the tokenizer ~6 min; its memory is bounded per call and measured by
  the ``token-*`` cases).
- ``zstd-real-line``: the user's case: a .jsonl.zst with one 2 GiB line of real text (web pages in
  random order) between 10 good records.
- ``warc-record``: a .warc.gz with the 22 responses of sample.warc.gz and one response of 1 GiB of
  HTML (``input.max_record_bytes``, read_warc.py); expected a ``too_large`` reject.
- ``token-10mb``: a 10 MiB document of one "word" (random letters), just over ``max_doc_bytes``:
  streamed past, never tokenized. ``token-9mb``: one just under it, kept and tokenized (the
  tokenizer's own cost: tiktoken holds ~40 bytes per byte of a single pre-token).
- ``fifo``, ``symlink-loop``: a named pipe, and a folder symlink to its parent, in the input folder
  (readers.py); expected an ``input`` file error, and no hang (``--timeout``).
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import lzma
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, MemorySampler, machine_info, print_table, write_json  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
BOMB_URL = "http://bomb.example/"
BLOCK = 16 * MiB   # a bomb's repeated part: compressed once, written again and again
SUFFIX = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zstd": ".zst"}
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: gzip.compress(d, 6), "bz2": lambda d: bz2.compress(d, 9),
    "xz": lambda d: lzma.compress(d, preset=1), "zstd": lambda d: zstandard.ZstdCompressor(level=3).compress(d),
}


@dataclass
class Built:
    """A case's input folder and what its bad part must come out as."""
    folder: Path
    expect: str                      # "too_large", "lines", "row", "input"
    line: tuple[int, str] | None = None   # the oversized line's length and SHA-256, when known
    lines: int = 0                   # how many bomb lines
    config: dict = field(default_factory=dict)


# -- inputs ------------------------------------------------------------------------------------------
def web_docs() -> list[dict]:
    return [json.loads(line) for line in open(SHARED_DATA / "web_dev.jsonl", encoding="utf-8")]


def good_lines(n: int, start: int = 0) -> bytes:
    docs = web_docs()[start:start + n]
    return b"".join(json.dumps({"id": f"good-{start + i}", "text": d["text"], "url": d.get("url")}).encode() + b"\n"
                    for i, d in enumerate(docs))


def write_repeated(path: Path, codec: str, head: bytes, block: bytes, times: int, tail: bytes) -> None:
    """``head + block * times + tail``, each part compressed on its own (the block once)."""
    c = COMPRESS[codec]
    packed = c(block)
    with open(path, "wb") as fh:
        fh.write(c(head))
        for _ in range(times):
            fh.write(packed)
        fh.write(c(tail))


def line_digest(head: bytes, block: bytes, times: int, tail: bytes) -> tuple[int, str]:
    h = hashlib.sha256(head)
    for _ in range(times):
        h.update(block)
    h.update(tail)
    return len(head) + len(block) * times + len(tail), h.hexdigest()


def repeated_text(size: int) -> bytes:
    sentence = web_docs()[0]["text"][:400].replace("\\", " ").replace('"', "'").replace("\n", " ") + " "
    unit = json.dumps(sentence)[1:-1].encode()
    return (unit * (size // len(unit) + 1))[:size]


def line_bomb(folder: Path, codec: str, size: int, bad: bool) -> Built:
    head, tail = b'{"id": "bomb", "text": "', b'"}'
    block = repeated_text(min(BLOCK, size))
    times = max(1, size // len(block))
    path = folder / f"bomb.jsonl{SUFFIX[codec]}"
    if not bad:
        write_repeated(path, codec, good_lines(5), b"", 0, good_lines(5, 5))
        return Built(folder, "too_large")
    write_repeated(path, codec, good_lines(5) + head, block, times, tail + b"\n" + good_lines(5, 5))
    return Built(folder, "too_large", line=line_digest(head, block, times, tail))


def lines_bomb(folder: Path, codec: str, size: int, bad: bool) -> Built:
    page = next(d["text"] for d in web_docs() if 7000 < len(d["text"].encode()) < 9000)
    per_block = max(1, min(2000, size // 8200))
    block = b"".join(json.dumps({"id": f"bomb-{i}", "text": page}).encode() + b"\n" for i in range(per_block))
    times = max(1, size // len(block))
    path = folder / f"bomb.jsonl{SUFFIX[codec]}"
    write_repeated(path, codec, good_lines(5), block if bad else b"", times if bad else 0, good_lines(5, 5))
    return Built(folder, "lines", lines=per_block * times if bad else 0, config={"tokenizer": {"kind": "none"}})


def real_line(folder: Path, size: int, bad: bool) -> Built:
    """The user's file: one line of real text (web pages in random order) between 10 good records."""
    path = folder / "bomb.jsonl.zst"
    head, tail = b'{"id": "bomb", "text": "', b'"}'
    pool = [json.dumps(d["text"])[1:-1].encode() + b" " for d in web_docs()]
    rng, h, n = random.Random(0), hashlib.sha256(), 0
    with open(path, "wb") as fh:
        z = zstandard.ZstdCompressor(level=3).compressobj()
        fh.write(z.compress(good_lines(5)))
        if bad:
            for piece in _random_pieces(rng, pool, size, head, tail):
                h.update(piece)
                n += len(piece)
                fh.write(z.compress(piece))
            fh.write(z.compress(b"\n"))
        fh.write(z.compress(good_lines(5, 5)) + z.flush())
    return Built(folder, "too_large", line=(n, h.hexdigest()) if bad else None)


def _random_pieces(rng: random.Random, pool: list[bytes], size: int, head: bytes, tail: bytes) -> Iterator[bytes]:
    yield head
    left = size
    while left > 0:
        piece = b"".join(rng.choices(pool, k=200))[:left]
        left -= len(piece)
        yield piece
    yield tail


def warc_record(folder: Path, size: int, bad: bool) -> Built:
    """sample.warc.gz's records and one response of ``size`` bytes of HTML (its own gzip member)."""
    path = folder / "bomb.warc.gz"
    shutil.copy(SHARED_DATA / "sample.warc.gz", path)
    if bad:
        para = b"<p>" + repeated_text(4000) + b"</p>\n"
        body_len = len(para) * (size // len(para))
        http = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {body_len}\r\n\r\n".encode()
        warc = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {BOMB_URL}\r\n"
                f"WARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000001>\r\n"
                f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http) + body_len}\r\n\r\n").encode()
        z = zlib.compressobj(1, zlib.DEFLATED, 31)
        with open(path, "ab") as fh:
            fh.write(z.compress(warc + http))
            chunk = para * (MiB // len(para))
            for _ in range(body_len // len(chunk)):
                fh.write(z.compress(chunk))
            fh.write(z.compress(para * ((body_len % len(chunk)) // len(para))) + z.compress(b"\r\n\r\n") + z.flush())
    return Built(folder, "too_large")


def one_word(folder: Path, size: int, bad: bool) -> Built:
    """A document of one "word" of ``size`` random letters between good records."""
    path = folder / "bomb.jsonl"
    word = "".join(random.Random(0).choices(string.ascii_lowercase, k=size)) if bad else ""
    line = json.dumps({"id": "bomb", "text": word}).encode() + b"\n" if bad else b""
    path.write_bytes(good_lines(5) + line + good_lines(5, 5))
    return Built(folder, "row" if bad else "none")


def fifo(folder: Path, bad: bool) -> Built:
    (folder / "good.jsonl").write_bytes(good_lines(10))
    if bad:
        os.mkfifo(folder / "pipe.jsonl")
    return Built(folder, "input")


def symlink_loop(folder: Path, bad: bool) -> Built:
    (folder / "good.jsonl").write_bytes(good_lines(10))
    if bad:
        (folder / "sub").mkdir()
        os.symlink(folder, folder / "sub" / "loop")
    return Built(folder, "input")


def cases(scale: float) -> dict[str, Callable[[Path, bool], Built]]:
    big, cap = int(2 * GiB * scale), int(10_000_000 * scale)
    out: dict[str, Callable[[Path, bool], Built]] = {}
    for codec in SUFFIX:
        out[f"{codec}-line"] = lambda f, bad, c=codec: line_bomb(f, c, big, bad)
    for codec in SUFFIX:
        out[f"{codec}-lines"] = lambda f, bad, c=codec: lines_bomb(f, c, big, bad)
    out["zstd-real-line"] = lambda f, bad: real_line(f, big, bad)
    out["warc-record"] = lambda f, bad: warc_record(f, big // 2, bad)
    out["token-10mb"] = lambda f, bad: one_word(f, max(cap + 1, int(10 * MiB * scale)), bad)
    out["token-9mb"] = lambda f, bad: one_word(f, cap - 1000, bad)
    out["fifo"] = fifo
    out["symlink-loop"] = symlink_loop
    return out


# -- running -----------------------------------------------------------------------------------------
def config(built: Built, out: Path, scale: float) -> Path:
    cfg = {"name": "bombs", "input": {"paths": [str(built.folder)], "max_doc_bytes": int(10_000_000 * scale),
                                      "max_record_bytes": max(MiB, int((64 << 20) * scale))},
           "output": {"path": str(out)}, "stages": [{"type": "langid"}], **built.config}
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(cfg))
    return path


def run(cfg: Path, timeout: float) -> tuple[int, float, float]:
    """(exit code, peak tree RSS in MiB, seconds) of ``tokenmill run`` on ``cfg``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tokenmill.engine.cli", "run", str(cfg), "--engine", "local",
                             "--progress", "off"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with MemorySampler(proc.pid, 0.05, pss=False) as mem:
        try:
            _, err = proc.communicate(timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            rc = "timeout"
    if rc not in (0, "timeout"):
        print(err.decode(errors="replace")[-1500:], file=sys.stderr)
    return rc, mem.peak["rss_all"] / MiB, time.perf_counter() - t0


def _kill_tree(proc: subprocess.Popen) -> None:
    import psutil

    for p in psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]:
        try:
            p.kill()
        except psutil.Error:
            pass
    proc.wait()


def output_rows(out: Path, folder: str, columns: list[str]) -> list[dict]:
    files = sorted((out / folder).rglob("*.parquet")) if (out / folder).exists() else []
    return [r for f in files for r in pq.read_table(f, columns=columns, partitioning=None).to_pylist()]


def is_bomb(r: dict) -> bool:
    return str(r.get("id") or "").startswith("bomb") or r.get("url") == BOMB_URL


def outcome(out: Path, built: Built) -> tuple[int, str, bool]:
    """(good records kept, how the bad part was reported, whether as expected)."""
    kept = output_rows(out, "data", ["id", "url", "num_tokens"])
    rejects = output_rows(out, "rejects", ["id", "url", "text", "meta", "reject_stage", "reject_reason", "num_tokens"])
    good = sum(1 for r in kept if not is_bomb(r))
    if built.expect == "input":
        report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
        errors = [e for e in report.get("file_errors", []) if e.get("kind") == "input"]
        return good, "; ".join(f"input: {e['error'][:60]}" for e in errors) or "not reported", bool(errors)
    bad_rows = [r for r in kept if is_bomb(r)] + [r for r in rejects if is_bomb(r)]
    if built.expect == "lines":
        n = len(bad_rows)
        return good, f"{n:,} lines as rows (expected {built.lines:,})", n == built.lines
    if built.expect == "row":
        return good, "; ".join(_describe(r) for r in bad_rows) or "missing", len(bad_rows) == 1
    ok = len(bad_rows) == 1 and bad_rows[0]["reject_reason"] == "too_large"
    if ok and built.line is not None:
        note = json.loads(bad_rows[0]["meta"])["_cut"]["line"]
        ok = (note["bytes"], note["sha256"]) == built.line
    return good, "; ".join(_describe(r) for r in bad_rows) or "missing", ok


def _describe(r: dict) -> str:
    reason = r.get("reject_reason")
    if reason is None:
        return f"kept, {r.get('num_tokens') or 0:,} tokens"
    cut = json.loads(r["meta"] or "{}").get("_cut", {})
    full = cut.get("line") or cut.get("text")
    size = f", {len((r['text'] or '').encode()):,} B of {full['bytes']:,} kept" if full else ""
    return f"{r['reject_stage']}:{reason}{size}, {r.get('num_tokens') or 0:,} tokens"


def run_case(name: str, build: Callable[[Path, bool], Built], root: Path, a) -> dict:
    result = {"case": name}
    for kind, bad in (("base", False), ("bad", True)):
        folder = root / name / kind / "in"
        folder.mkdir(parents=True)
        t0 = time.perf_counter()
        built = build(folder, bad)
        result[f"{kind}_build_s"] = round(time.perf_counter() - t0, 1)
        out = root / name / kind / "out"
        rc, peak, secs = run(config(built, out, a.scale), a.timeout)
        good, how, as_expected = outcome(out, built)
        result.update({f"{kind}_rc": rc, f"{kind}_peak_mib": round(peak), f"{kind}_good": good,
                       f"{kind}_seconds": round(secs, 1)})
        if bad:
            result.update(reported=how, as_expected=as_expected)
        shutil.rmtree(root / name / kind, ignore_errors=True)
    result["delta_mib"] = result["bad_peak_mib"] - result["base_peak_mib"]
    result["pass"] = (result["bad_rc"] == 0 and result["bad_good"] == result["base_good"] > 0
                      and result["as_expected"] and result["delta_mib"] <= a.margin_mib)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="sizes (and max_doc_bytes) times this")
    p.add_argument("--margin-mib", type=float, default=500)
    p.add_argument("--timeout", type=float, default=900, help="seconds per run before it counts as hung")
    p.add_argument("--work", default=tempfile.gettempdir(), help="where the temp folder goes")
    a = p.parse_args()
    every = cases(a.scale)
    names = a.cases.split(",") if a.cases else list(every)
    unknown = set(names) - set(every)
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; known: {', '.join(every)}")
    root = Path(tempfile.mkdtemp(prefix="tokenmill-bombs-", dir=a.work))
    results = []
    try:
        for name in names:
            results.append(run_case(name, every[name], root, a))
            r = results[-1]
            print(f"{name}: rc {r['bad_rc']}, {r['reported']}, peak {r['bad_peak_mib']} MiB "
                  f"(base {r['base_peak_mib']}), {'PASS' if r['pass'] else 'FAIL'}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(["case", "rc", "good kept (base)", "bad reported as", "peak MiB", "base MiB", "delta", "s", "result"],
                [[r["case"], r["bad_rc"], f"{r['bad_good']} ({r['base_good']})", r["reported"], r["bad_peak_mib"],
                  r["base_peak_mib"], r["delta_mib"], r["bad_seconds"], "PASS" if r["pass"] else "FAIL"]
                 for r in results], title=f"\nbombs at --scale {a.scale}, margin {a.margin_mib:.0f} MiB")
    write_json(Path(__file__).with_suffix(".json"), {"scale": a.scale, "margin_mib": a.margin_mib,
                                                     "machine": machine_info(), "results": results})
    if not all(r["pass"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

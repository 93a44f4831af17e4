"""Benchmark: reading Common Crawl, one core. WARC -> text docs/s for each of tokenmill's HTML
extractors against datatrove's WarcReader + Trafilatura on the same file, and WET read speed in
MB/s against plain gzip decompression of the same file (the limit), in the same run.

    python bench/common_crawl.py                  # sample.warc.gz x20, web_dev as WET x8, 3 repeats
    python bench/common_crawl.py --warc-copies 40 --wet-copies 16 --repeats 5

Inputs (bench/_work/cc/): ``sample.warc.gz`` (22 real HTML responses) concatenated ``--warc-copies``
times (gzip members one after another, as Common Crawl writes them), and a WET file of
web_dev.jsonl's pages (``--wet-copies`` times, one gzip member per conversion record, after a
warcinfo record). Every system runs in its own child process pinned to one CPU (its own children
too: the trafilatura sandboxes), its peak RSS sampled (``_common.run_child``):

- ``tokenmill-resiliparse`` / ``tokenmill-trafilatura``: ``read_file`` over the WARC with
  ``input.extractor`` set (trafilatura with ``extraction_timeout: 1``, datatrove's default);
- ``datatrove-trafilatura``: datatrove 0.10.1's ``WarcReader`` then ``Trafilatura()`` (its
  defaults: favour_precision, timeout 1 s: the same settings), documents with text counted;
- ``tokenmill-wet``: ``read_file`` over the WET file;
- ``gzip-wet``: zlib decompression of the same file in 1 MiB reads, nothing else.

Figures: records/s per core (records read and extracted / wall, imports not timed; the trafilatura
sandboxes' start is) and how many gave text (trafilatura's ``deduplicate``, on in both, empties the
repeated copies of a page: its cache of seen paragraphs lives per process), MB/s of the compressed file and of its
uncompressed bytes, peak RSS; medians of ``--repeats``; ratios tokenmill / peer. Results: a table
on stdout and bench/common_crawl.json.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import SHARED_DATA, WORK, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
CC = WORK / "cc"
SYSTEMS = ("tokenmill-resiliparse", "tokenmill-trafilatura", "datatrove-trafilatura", "tokenmill-wet", "gzip-wet")


def prepare(warc_copies: int, wet_copies: int) -> dict:
    from test_common_crawl import wet_file

    CC.mkdir(parents=True, exist_ok=True)
    warc = CC / "warc" / f"sample-x{warc_copies}.warc.gz"
    warc.parent.mkdir(exist_ok=True)
    warc.write_bytes((SHARED_DATA / "sample.warc.gz").read_bytes() * warc_copies)
    rows = [json.loads(line) for line in open(SHARED_DATA / "web_dev.jsonl", encoding="utf-8")]
    docs = [{"text": r["text"], "url": r.get("url") or f"https://example.org/{c}/{i}"}
            for c in range(wet_copies) for i, r in enumerate(rows)]
    wet = wet_file(CC / f"web-x{wet_copies}.warc.wet.gz", docs)
    raw = len(gzip.decompress(wet.read_bytes()))
    return {"warc": str(warc), "warc_bytes": warc.stat().st_size, "wet": str(wet), "wet_bytes": wet.stat().st_size,
            "wet_raw_bytes": raw}


def _pin() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})


def child(name: str, path: str) -> dict:
    _pin()
    if name.startswith("tokenmill"):
        import fastwarc.warc  # noqa: F401
        import resiliparse.extract.html2text  # noqa: F401

        from tokenmill.engine.config import InputConfig
        from tokenmill.engine.io.readers import InputFile, detect_format, read_file
        t0 = time.perf_counter()   # imports not timed (in every system)
        extractor = "trafilatura" if name.endswith("trafilatura") else "resiliparse"
        opts = InputConfig(paths=["unused"], extractor=extractor, extraction_timeout=1.0)
        docs = rejects = 0
        for table in read_file(InputFile(path, Path(path).name, detect_format(path)), opts):
            reasons = table["reject_reason"].to_pylist()
            docs += sum(r is None for r in reasons)
            rejects += sum(r is not None for r in reasons)
        return {"seconds": time.perf_counter() - t0, "docs": docs, "records": docs + rejects}
    if name == "datatrove-trafilatura":
        import trafilatura  # noqa: F401
        import warcio  # noqa: F401
        from datatrove.pipeline.extractors import Trafilatura
        from datatrove.pipeline.readers import WarcReader

        t0 = time.perf_counter()
        reader = WarcReader(str(Path(path).parent), glob_pattern=Path(path).name)
        seen = [0]

        def counted(docs):
            for doc in docs:
                seen[0] += 1
                yield doc
        docs = sum(1 for d in Trafilatura().run(counted(reader.run())) if d.text)
        return {"seconds": time.perf_counter() - t0, "docs": docs, "records": seen[0]}
    t0 = time.perf_counter()
    d, size = zlib.decompressobj(16 + zlib.MAX_WBITS), 0   # gzip-wet: members one after another
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            while chunk:
                size += len(d.decompress(chunk))
                chunk = d.unused_data
                if chunk or d.eof:
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    return {"seconds": time.perf_counter() - t0, "raw_bytes": size}


def measure(a, files: dict) -> dict:
    runs = {s: [] for s in SYSTEMS}
    for rep in range(a.repeats):
        for name in SYSTEMS:
            path = files["wet"] if name.endswith("wet") else files["warc"]
            res = run_child([str(HERE), "--child", name, "--path", path, "--result", str(CC / f"r-{name}.json")],
                            CC / f"r-{name}.json", timeout=1800)
            runs[name].append(res)
            print(f"  repeat {rep + 1}: {name}: {res['seconds']:.2f} s", flush=True)
    return runs


def summarise(runs: dict, files: dict) -> dict:
    out = {}
    for name, rs in runs.items():
        s = median([r["seconds"] for r in rs])
        mb = (files["wet_bytes"] if name.endswith("wet") else files["warc_bytes"]) / 1e6
        row = {"seconds": round(s, 3), "mb_per_s": round(mb / s, 1),
               "peak_rss_mib": round(median([r["memory"]["peak_rss_all_mib"] for r in rs]), 1)}
        if name.endswith("wet"):
            row["raw_mb_per_s"] = round(files["wet_raw_bytes"] / 1e6 / s, 1)
        if "docs" in rs[0]:
            row.update(docs=rs[0]["docs"], records=rs[0]["records"], records_per_s=round(rs[0]["records"] / s, 1))
        out[name] = row
    def ratio(a: str, b: str) -> float:
        return round(out[a]["records_per_s"] / out[b]["records_per_s"], 3)

    out["ratios"] = {"trafilatura_tokenmill_over_datatrove_records_per_s": ratio("tokenmill-trafilatura", "datatrove-trafilatura"),
                     "resiliparse_over_datatrove_trafilatura_records_per_s": ratio("tokenmill-resiliparse", "datatrove-trafilatura"),
                     "wet_read_over_gzip_mb_per_s": round(out["tokenmill-wet"]["mb_per_s"] / out["gzip-wet"]["mb_per_s"], 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warc-copies", type=int, default=20)
    p.add_argument("--wet-copies", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        write_json(Path(a.result), child(a.child, a.path))
        return
    files = prepare(a.warc_copies, a.wet_copies)
    print(f"WARC {files['warc_bytes'] / 1e6:.1f} MB ({a.warc_copies} x sample.warc.gz); WET {files['wet_bytes'] / 1e6:.1f} MB "
          f"({files['wet_raw_bytes'] / 1e6:.1f} MB uncompressed)", flush=True)
    res = summarise(measure(a, files), files)
    rows = [[n, r.get("records", "-"), r.get("docs", "-"), r["seconds"], r.get("records_per_s", "-"), r["mb_per_s"],
             r.get("raw_mb_per_s", "-"), r["peak_rss_mib"]] for n, r in res.items() if n != "ratios"]
    table = print_table(["system", "records", "docs with text", "median s", "records/s/core", "MB/s", "raw MB/s",
                         "peak RSS MiB"], rows,
                        f"one core, medians of {a.repeats}")
    print(json.dumps(res["ratios"], indent=1))
    write_json(Path(a.out), {"machine": machine_info(), "args": vars(a), "files": files, "results": res, "table": table})


if __name__ == "__main__":
    main()

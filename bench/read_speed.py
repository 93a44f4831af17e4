"""Benchmark: the readers' own speed (docs/s and MB/s of input, one core, no Ray) on the quickstart
sample and on web_dev.jsonl in every compression, best of --repeats.

    python bench/read_speed.py --repeats 11
"""
from __future__ import annotations

import argparse
import bz2
import gzip
import shutil
import tempfile
import time
from pathlib import Path

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.io.readers import InputFile, detect_format, read_file

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "configs" / "sample"
WEB = HERE.parent.parent / "shared" / "data" / "web_dev.jsonl"


def inputs(tmp: Path) -> list[Path]:
    """The sample files, and web_dev.jsonl x4 as .jsonl, .jsonl.gz, .jsonl.zst, .jsonl.bz2."""
    import zstandard

    raw = WEB.read_bytes() * 4
    plain = tmp / "web4.jsonl"
    plain.write_bytes(raw)
    (tmp / "web4.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp / "web4.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (tmp / "web4.jsonl.bz2").write_bytes(bz2.compress(raw))
    return sorted(p for p in SAMPLE.iterdir() if detect_format(str(p))) + [plain] + \
        [tmp / f"web4.jsonl.{e}" for e in ("gz", "zst", "bz2")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=11)
    a = p.parse_args()
    opts = build_pipeline({"name": "read", "input": {"paths": [str(WEB)]}, "output": {"path": "/tmp/unused"},
                           "stages": [{"type": "langid"}]}).config.input
    tmp = Path(tempfile.mkdtemp(prefix="tokenmill-read-"))
    try:
        print(f"{'file':<24}{'MB':>8}{'docs':>8}{'best s':>9}{'docs/s':>10}{'MB/s':>8}")
        for path in inputs(tmp):
            f = InputFile(str(path), path.name, detect_format(str(path)))
            best, docs = float("inf"), 0
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                docs = sum(t.num_rows for t in read_file(f, opts))
                best = min(best, time.perf_counter() - t0)
            mb = path.stat().st_size / 1e6
            print(f"{path.name:<24}{mb:>8.1f}{docs:>8,}{best:>9.3f}{docs / best:>10,.0f}{mb / best:>8.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

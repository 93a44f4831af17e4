"""The quickstart's wall time per engine, as a user times it: ``tokenmill run configs/quickstart.yaml
--engine E`` in a fresh process (interpreter start, imports, engine start, the run, shutdown),
medians of ``--runs``, and the local executor's ratio to Ray (and Spark with ``--spark``). The
outputs of every engine are checked equal, row for row.

    python bench/engines.py --runs 3 [--spark]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def timed_run(engine: str, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tokenmill.engine.cli", "run", str(REPO / "configs" / "quickstart.yaml"),
                           "--engine", engine, "--output", str(out), "--progress", "off"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--spark", action="store_true", help="also Spark (embedded local[2])")
    a = ap.parse_args()
    from pipeline_helpers import output_rows

    engines = ["local", "ray"] + (["spark"] if a.spark else [])
    root = Path(tempfile.mkdtemp(prefix="tokenmill-engines-"))
    walls: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(a.runs):   # interleaved, so a noisy minute hits every engine alike
        for e in engines:
            walls[e].append(round(timed_run(e, root / e), 2))
    rows = {e: output_rows(root / e) for e in engines}
    same = all(rows[e] == rows["ray"] for e in engines)
    med = {e: statistics.median(v) for e, v in walls.items()}
    result = {"runs": walls, "median_seconds": med, "local_over_ray_wall": round(med["local"] / med["ray"], 3),
              "same_output": same, "kept_docs": len(rows["ray"][0])}
    if a.spark:
        result["local_over_spark_wall"] = round(med["local"] / med["spark"], 3)
    print(json.dumps(result, indent=1))
    (Path(__file__).with_suffix(".json")).write_text(json.dumps(result, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    if not same:
        raise SystemExit("the engines' outputs differ")


if __name__ == "__main__":
    main()

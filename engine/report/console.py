"""What a person sees while a run goes: tokenmill's own progress, never the engine's chatter.

- In a terminal (``live``): one line redrawn in place (tqdm): phase, files done/total, docs and
  tokens per second, rejects so far, elapsed and the ETA by input bytes; tokenmill's messages
  print above it.
- Elsewhere (``log``: CI, ``kubectl logs``, a cron job's log): tokenmill's messages, and one
  progress line at most every ``interval`` seconds.
- ``off``: the messages only.

Counters come from ``poll()`` (the executor's ``progress()``: cumulative docs, tokens, rejected
rows, input files and bytes read), sampled by a background thread; each phase shows what it
did since it started.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

COUNTERS = ("files", "bytes", "docs", "tokens", "rejected")
DEFAULT_INTERVAL = 10.0


def _si(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


@dataclass
class PhaseProgress:
    """One phase's totals and what it has done so far (counters relative to its start)."""

    label: str
    files_total: Optional[int] = None
    bytes_total: Optional[int] = None
    started: float = field(default_factory=time.monotonic)
    base: dict = field(default_factory=dict)
    done: dict = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def update(self, counters: dict) -> None:
        self.done = {k: max(0, int(counters.get(k, 0)) - int(self.base.get(k, 0))) for k in COUNTERS}

    def elapsed(self, now: Optional[float] = None) -> float:
        return (now or time.monotonic()) - self.started

    def eta(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds left, by the share of input bytes read so far; None when unknown."""
        if not self.bytes_total or not self.done["bytes"]:
            return None
        frac = min(1.0, self.done["bytes"] / self.bytes_total)
        return self.elapsed(now) * (1 - frac) / frac

    def fields(self, now: Optional[float] = None) -> str:
        """``files 3/5, 1.2k docs (410/s), 2.3M tokens (800k/s), 12 rejected``."""
        t = max(self.elapsed(now), 1e-9)
        d = self.done
        parts = []
        if self.files_total:
            parts.append(f"files {d['files']:,}/{self.files_total:,}")
        if d["docs"] or self.files_total:
            parts.append(f"{_si(d['docs'])} docs ({_si(d['docs'] / t)}/s)")
            if d["tokens"]:      # none when tokenizer.kind is none
                parts.append(f"{_si(d['tokens'])} tokens ({_si(d['tokens'] / t)}/s)")
            parts.append(f"{d['rejected']:,} rejected")
        return ", ".join(parts)

    def line(self, now: Optional[float] = None) -> str:
        """The log-mode progress line."""
        head = f"{self.label}: {_clock(self.elapsed(now))}"
        body = self.fields(now)
        eta = self.eta(now)
        tail = f", {100 * min(1.0, self.done['bytes'] / self.bytes_total):.0f}% of input, ETA {_clock(eta)}" \
            if eta is not None else ""
        return f"{head}{', ' + body if body else ''}{tail}"


class Console:
    """tokenmill's messages and its progress display; ``mode`` is ``live``, ``log`` or ``off``."""

    def __init__(self, mode: str = "log", interval: float = DEFAULT_INTERVAL, stream=None,
                 poll: Optional[Callable[[], dict]] = None, tick: float = 0.5):
        self.mode, self.interval, self.tick = mode, max(0.1, interval), tick
        self.stream = stream or sys.stderr
        self.poll = poll
        self.phase: Optional[PhaseProgress] = None
        self._lock = threading.RLock()
        self._bar = None
        self._last_line = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def auto(cls, progress: str = "auto", interval: float = DEFAULT_INTERVAL, stream=None) -> Console:
        """``progress``: auto (live in a terminal, log elsewhere), live, log or off."""
        stream = stream or sys.stderr
        if progress == "auto":
            progress = "live" if getattr(stream, "isatty", lambda: False)() else "log"
        return cls(progress, interval, stream)

    # -- messages -----------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.clear()
            self.stream.write(f"[tokenmill] {msg}\n")
            self.stream.flush()
            if self._bar is not None:
                self._bar.refresh()

    # -- phases ---------------------------------------------------------------------------------
    def start_phase(self, label: str, files_total: Optional[int] = None, bytes_total: Optional[int] = None) -> None:
        """A phase begins: counters from here on are the phase's own."""
        with self._lock:
            self.phase = PhaseProgress(label, files_total, bytes_total, base=self._sample())
            self._last_line = self.phase.started
            if self.mode == "live":
                self._open_bar()
        self._ensure_thread()

    def end_phase(self) -> None:
        """A phase ends; in log mode, one that printed a progress line prints its totals too (a
        line drawn early in a short phase would otherwise be the last word on it)."""
        with self._lock:
            if self.phase is not None:
                self.phase.update(self._sample(self.phase.base))
                if self.mode == "log" and self._last_line > self.phase.started:
                    self.stream.write(f"[tokenmill] {self.phase.line(time.monotonic())}\n")
                    self.stream.flush()
            self._close_bar()
            self.phase = None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.end_phase()

    # -- sampling and drawing -------------------------------------------------------------------------
    def _sample(self, fallback: Optional[dict] = None) -> dict:
        if self.poll is None:
            return dict(fallback or {})
        try:
            return self.poll() or dict(fallback or {})
        except Exception:  # progress must never end a run
            return dict(fallback or {})

    def _ensure_thread(self) -> None:
        if self.mode == "off" or self.poll is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="tokenmill-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick if self.mode == "live" else min(self.tick * 2, self.interval)):
            self.refresh()

    def refresh(self, now: Optional[float] = None) -> None:
        """Sample the counters and draw: the live line, or a log line when ``interval`` has passed."""
        counters = self._sample()
        with self._lock:
            phase = self.phase
            if phase is None:
                return
            if counters:
                phase.update(counters)
            now = now or time.monotonic()
            if self.mode == "live" and self._bar is not None:
                self._draw_bar(phase)
            elif self.mode == "log" and now - self._last_line >= self.interval:
                self._last_line = now
                self.stream.write(f"[tokenmill] {phase.line(now)}\n")
                self.stream.flush()

    def _open_bar(self) -> None:
        import shutil

        from tqdm import tqdm

        self._close_bar()
        p = self.phase
        fmt = "{desc} {percentage:3.0f}%|{bar:12}| {elapsed}<{remaining}" if p.bytes_total else "{desc} {elapsed}"
        size = shutil.get_terminal_size((120, 24))
        self._bar = tqdm(total=p.bytes_total or None, desc=p.label, bar_format=fmt, file=self.stream,
                         ncols=size.columns or 120, nrows=size.lines or 24, leave=False, mininterval=0)

    def _draw_bar(self, phase: PhaseProgress) -> None:
        bar = self._bar
        if phase.bytes_total:
            bar.n = min(phase.done["bytes"], phase.bytes_total)
        fields = phase.fields()
        bar.set_description_str(f"{phase.label}: {fields}" if fields else phase.label, refresh=False)
        bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

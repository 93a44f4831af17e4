"""HTML -> main text for the WARC reader: ``input.extractor``.

- ``resiliparse`` (default): Resiliparse's main-content extraction, fast and robust to broken
  markup; it runs in the reading process.
- ``trafilatura``: the extractor FineWeb used, with its settings (``favor_precision``, no comments,
  ``deduplicate``; ``pip install 'tokenmill[trafilatura]'``). trafilatura is pure Python over lxml
  and can take minutes on hostile HTML, so it runs in a child process of the reading process
  (started on first use, reused): a page not done within ``extraction_timeout`` seconds gets its
  child killed (a new one starts for the next page) and is rejected as ``html_extraction_timeout``.
  trafilatura's ``None`` (no main content found) is an empty text (``empty_text``). A child that
  dies on a page (killed, out of memory) makes that page ``html_extraction_failed``.

Both decode the bytes the same way first (Resiliparse's encoding detection).
"""
from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Optional

EXTRACTORS = ("resiliparse", "trafilatura")
#: FineWeb's trafilatura settings (datatrove's Trafilatura extractor as FineWeb ran it)
TRAFILATURA_SETTINGS = {"favor_precision": True, "include_comments": False, "deduplicate": True}


class ExtractionTimeout(Exception):
    """The extractor did not finish one page within the timeout."""


def decoded_html(body: bytes) -> str:
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return bytes_to_str(body, detect_encoding(body))


def resiliparse_text(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False,
                              form_fields=False, noscript=False)


def trafilatura_text(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, **TRAFILATURA_SETTINGS) or ""


def _serve(conn) -> None:
    """The child: import trafilatura, say so, then extract every page it is sent until the pipe closes."""
    import trafilatura  # noqa: F401

    conn.send(("ready", None))
    while True:
        try:
            html = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", trafilatura_text(html)))
        except Exception as exc:   # one broken page is one reject
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:500]))


class Sandbox:
    """One child process running ``trafilatura_text``, restarted after a timeout; one page at a time
    (a lock: readers may share a process's sandbox from threads). A page's timeout starts once the
    child is up (its start, imports included, has its own ``STARTUP_SECONDS``)."""

    STARTUP_SECONDS = 300.0

    def __init__(self):
        self.proc: Optional[mp.process.BaseProcess] = None
        self.conn = None
        self.lock = threading.Lock()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")   # no fork of a threaded reader (Ray, Spark workers)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        try:
            ready = self.conn.poll(self.STARTUP_SECONDS) and self.conn.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.stop()
            raise RuntimeError(f"the trafilatura process did not start within {self.STARTUP_SECONDS:g} s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(5)
            self.conn.close()
        self.proc = self.conn = None

    def extract(self, html: str, timeout: float) -> str:
        with self.lock:
            return self._extract(html, timeout)

    def _extract(self, html: str, timeout: float) -> str:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send(html)
        if not self.conn.poll(timeout):
            self.stop()
            raise ExtractionTimeout(f"trafilatura did not finish the page within {timeout:g} s")
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):   # the child died on this page (killed, out of memory): the next starts anew
            self.stop()
            raise ValueError("trafilatura's process died on this page") from None
        if status != "ok":
            raise ValueError(value)
        return value


_SANDBOX = Sandbox()


def html_text(body: bytes, extractor: str = "resiliparse", timeout: float = 30.0) -> str:
    """The main text of an HTML page (raises ``ExtractionTimeout``, or any error of the extractor)."""
    html = decoded_html(body)
    if extractor == "trafilatura":
        return _SANDBOX.extract(html, timeout)
    return resiliparse_text(html)

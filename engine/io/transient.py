"""Transient is not damage: which errors are worth another try, and the retries themselves.

A timeout, a reset connection, a throttled or 5xx answer from an object store says nothing about
the data: the same call a moment later may succeed. ``is_transient`` tells them from damage (a
cut gzip member, bad JSON, a missing file); ``retry`` calls a function again with exponential
backoff and jitter; ``RetryingFile`` is a read-only file that reopens itself at the same offset
when a read fails transiently, so a reader never sees the fault. When the retries run out the
transient error propagates: the task fails (the engine retries it) and the file is never marked
done with records missing.

The policy (``io.retries``, ``io.backoff_seconds``) is set once per process by ``configure``.
"""
from __future__ import annotations

import errno
import io
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
                    errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.ENETRESET,
                    errno.EBUSY}
#: error codes of object stores that ask to slow down or say the service failed
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests",
                   "429", "500", "502", "503", "504"}
#: exception class names of HTTP and AWS clients that mean "the connection failed, not the data"
TRANSIENT_NAMES = {"ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
                   "ResponseStreamingError", "IncompleteReadError", "ServerDisconnectedError",
                   "ClientConnectionError", "ClientPayloadError", "ClientOSError", "ServerTimeoutError",
                   "ProtocolError", "IncompleteRead", "RemoteDisconnected"}
MAX_WAIT_S = 30.0


class TransientError(OSError):
    """An error that another try may not have (raised by the fault-injecting test filesystem)."""

    def __init__(self, *args):
        super().__init__(*((errno.ECONNRESET, *args) if len(args) == 1 else args or (errno.ECONNRESET, "transient error")))


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    backoff_seconds: float = 0.5

    def wait(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (0-based): doubling, with jitter in [0.5, 1.5)."""
        return min(MAX_WAIT_S, self.backoff_seconds * (2 ** attempt)) * (0.5 + random.random())


_POLICY = RetryPolicy()


def configure(io_config: Any = None) -> None:
    """Set this process's policy from the config's ``io`` section (None: the defaults)."""
    global _POLICY
    _POLICY = RetryPolicy() if io_config is None else RetryPolicy(io_config.retries, io_config.backoff_seconds)


def policy() -> RetryPolicy:
    return _POLICY


def _code_of(exc: BaseException) -> Optional[str]:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):   # botocore ClientError
        code = (response.get("Error") or {}).get("Code")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(code) if code and str(code) in TRANSIENT_CODES else (str(status) if status else None)
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    return str(status) if status is not None else None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a timeout, a dropped connection or a
    throttled / failed service answer rather than damage in the data."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (TimeoutError, ConnectionError, TransientError)):
            return True
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        if type(exc).__name__ in TRANSIENT_NAMES or _code_of(exc) in TRANSIENT_CODES:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def retry(fn: Callable, *args, what: str = "", pol: Optional[RetryPolicy] = None, **kwargs):
    """``fn(*args, **kwargs)``, called again after a transient error, up to the policy's retries."""
    pol = pol or _POLICY
    for attempt in range(pol.retries + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt >= pol.retries or not is_transient(exc):
                raise
            time.sleep(pol.wait(attempt))
    raise AssertionError("unreachable")


class RetryingFile(io.RawIOBase):
    """A binary file for reading that survives transient faults: ``opener()`` gives a fresh
    handle; after a failed read it is reopened and moved to the same offset (``seek``, or reading
    up to it when the file cannot seek), then the read is tried again."""

    def __init__(self, opener: Callable[[], Any], pol: Optional[RetryPolicy] = None):
        self.opener, self.pol = opener, pol or _POLICY
        self.pos = 0
        self.fh = retry(opener, pol=self.pol)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def size(self) -> Optional[int]:
        """The file's size as the store gave it when opened (None when it does not say)."""
        value = getattr(self.fh, "size", None)
        if isinstance(value, int):
            return value
        try:
            return os.fstat(self.fh.fileno()).st_size
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = self._call(lambda: self.fh.seek(offset, whence))
        return self.pos

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        data = self._call(lambda: self.fh.read(size))
        self.pos += len(data)
        return data

    def _call(self, fn: Callable):
        for attempt in range(self.pol.retries + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt >= self.pol.retries or not is_transient(exc):
                    raise
                time.sleep(self.pol.wait(attempt))
                self._reopen()
        raise AssertionError("unreachable")

    def _reopen(self) -> None:
        try:
            self.fh.close()
        except Exception:
            pass
        try:
            self.fh = self.opener()
            if self.pos:
                self.fh.seek(self.pos)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.fh = _Unopened(exc)   # the next attempt of the read reopens again

    def close(self) -> None:
        if not self.closed:
            try:
                self.fh.close()
            finally:
                super().close()


class _Unopened:
    """Stands for a handle whose reopening failed transiently: every call raises that error."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __getattr__(self, name):
        raise TransientError(f"reopening failed: {self.exc}")

    def close(self) -> None:
        pass


def open_for_reading(path: str, pol: Optional[RetryPolicy] = None) -> RetryingFile:
    """An input file (local path or any fsspec URL) opened for reading with retries."""
    import fsspec

    return RetryingFile(lambda: fsspec.open(path, "rb").open(), pol)

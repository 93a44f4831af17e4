"""The rephrase stage's backend for any OpenAI-compatible server (OpenAI, vLLM serve, SGLang, TGI...).

Sends every conversation of a batch to ``POST {base_url}/chat/completions`` at once over one
aiohttp session, at most ``concurrency`` in flight. A timeout, a connection error, HTTP 429 or a
5xx is retried ``max_retries`` times with exponential backoff (``backoff_s * 2**attempt``, or the
server's numeric ``Retry-After``, at most 60 s); any other 4xx or a malformed response is final.
A request that still fails comes back as ``Generation(text=None, error=...)``: ``generate`` never
raises for one request. The API key is read from the environment variable ``api_key_env``.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Optional

import aiohttp

from .backend import Generation, Sampling

_MAX_RETRY_AFTER_S = 60.0


class _Retryable(Exception):
    """A failure worth another attempt; ``delay`` is the server's Retry-After, if any."""

    def __init__(self, reason: str, delay: Optional[float] = None):
        super().__init__(reason)
        self.reason, self.delay = reason, delay


class _Final(Exception):
    """A failure no retry can fix (a bad request, a response that is not the expected shape)."""


class OpenAIBackend:
    """Chat completions against an OpenAI-compatible server; ``attempts`` counts every HTTP attempt."""

    def __init__(self, model: str, sampling: Sampling, base_url: str,
                 api_key_env: Optional[str] = "OPENAI_API_KEY", concurrency: int = 16,
                 timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        self.model, self.sampling = model, sampling
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.attempts = 0

    def setup(self) -> None:
        """Nothing to load: each ``generate`` opens its own session inside its own event loop."""

    def generate(self, conversations: list[list[dict]], seeds: list[int], max_tokens: int) -> list[Generation]:
        if len(conversations) != len(seeds):
            raise ValueError(f"{len(conversations)} conversations but {len(seeds)} seeds")
        if not conversations:
            return []
        return _run(self._generate_all(conversations, seeds, max_tokens))

    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _payload(self, messages: list[dict], seed: int, max_tokens: int) -> dict:
        return {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": self.sampling.temperature, "top_p": self.sampling.top_p, "seed": seed}

    async def _generate_all(self, conversations, seeds, max_tokens) -> list[Generation]:
        limit = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=self._headers()) as session:
            tasks = [self._one(session, limit, self._payload(c, s, max_tokens))
                     for c, s in zip(conversations, seeds)]
            return list(await asyncio.gather(*tasks))

    async def _one(self, session: aiohttp.ClientSession, limit: asyncio.Semaphore, payload: dict) -> Generation:
        tries = self.max_retries + 1
        for attempt in range(tries):
            try:
                async with limit:
                    self.attempts += 1
                    return await self._attempt(session, payload)
            except _Final as e:
                return Generation(text=None, error=str(e))
            except _Retryable as e:
                if attempt == tries - 1:
                    return Generation(text=None, error=_after(e.reason, tries))
                await asyncio.sleep(e.delay if e.delay is not None else self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")

    async def _attempt(self, session: aiohttp.ClientSession, payload: dict) -> Generation:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with session.post(self.url, json=payload, timeout=timeout) as resp:
                body = await resp.text()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except asyncio.TimeoutError:
            raise _Retryable("timeout") from None
        except aiohttp.ClientError as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {str(e)[:200]}") from None
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}: {body[:200]}", _retry_after(retry_after))
        if status >= 400:
            raise _Final(f"HTTP {status}: {body[:200]}")
        return _parse(body)


def _after(reason: str, tries: int) -> str:
    """``HTTP 500: body`` -> ``HTTP 500 after 5 attempts: body``; ``timeout`` -> ``timeout after 5 attempts``."""
    head, sep, rest = reason.partition(": ")
    return f"{head} after {tries} attempts{sep}{rest}"


def _retry_after(value: Optional[str]) -> Optional[float]:
    """A numeric Retry-After in seconds, capped; an HTTP date or garbage falls back to the backoff."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds != seconds or seconds < 0 else min(seconds, _MAX_RETRY_AFTER_S)


def _parse(body: str) -> Generation:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text, finish = choice["message"]["content"], choice.get("finish_reason")
        usage = data.get("usage") or {}
        tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise _Final(f"malformed response ({type(e).__name__}): {body[:200]}") from None
    if not isinstance(text, str):
        raise _Final(f"malformed response (no text content): {body[:200]}")
    return Generation(text=text, input_tokens=tokens_in, output_tokens=tokens_out, finish_reason=finish)


def _run(coro):
    """``asyncio.run``, or in a helper thread when the caller already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as e:  # handed back to the caller's thread below
            box["error"] = e

    thread = threading.Thread(target=target, name="openai-backend")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]

"""The rephrase stage's OpenAI-compatible backend against a real local HTTP server (aiohttp.web on
127.0.0.1 in a background thread): order and content of results, what reaches the server, retries
on 500 / timeouts / 429, no retry on 400 or a malformed body, the concurrency bound, the API key.

``start_chat_server(handler_behaviour=None)`` is reusable by other tests: it returns a running
``ChatServer`` (``base_url`` ends in ``/v1``; ``close()`` stops it). Its default answer is
``"Rewritten: "`` + the last user message's words in reverse order, cut to ``max_tokens`` words
(``finish_reason`` ``length``), with word counts as usage. Markers in the last user message:
``FAIL500ONCE`` (first such request gets a 500), ``SLOWONCE`` (first one sleeps ``slow_s``),
``ALWAYS500``, ``BAD400``, ``DELAY100MS`` (each one takes 0.1 s). ``handler_behaviour`` is an
optional ``async (server, body, nth) -> web.Response | None`` tried first (``nth``: how many
requests with that last user message came before); ``None`` falls through to the default.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Optional

import pytest
from aiohttp import web

from tokenmill.stages.rephrase.backend import Sampling
from tokenmill.stages.rephrase.openai_backend import OpenAIBackend, _retry_after

Behaviour = Callable[["ChatServer", dict, int], Awaitable[Optional[web.Response]]]


@dataclass
class ChatServer:
    """A running fake chat-completions server; ``requests`` holds each request's JSON body and
    headers, in arrival order."""

    base_url: str = ""
    slow_s: float = 1.5
    requests: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    seen: Counter = field(default_factory=Counter)
    handler_behaviour: Optional[Behaviour] = None
    _loop: Optional[asyncio.AbstractEventLoop] = None
    _thread: Optional[threading.Thread] = None
    _runner: Optional[web.AppRunner] = None

    def count(self, marker: str) -> int:
        """How many requests whose last user message contains ``marker`` reached the server."""
        return sum(marker in _last_user(r["json"]) for r in self.requests)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"json": body, "headers": dict(request.headers)})
        text = _last_user(body)
        nth, self.seen[text] = self.seen[text], self.seen[text] + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.handler_behaviour is not None:
                custom = await self.handler_behaviour(self, body, nth)
                if custom is not None:
                    return custom
            return await self._default(body, text, nth)
        finally:
            self.in_flight -= 1

    async def _default(self, body: dict, text: str, nth: int) -> web.Response:
        if "ALWAYS500" in text or ("FAIL500ONCE" in text and nth == 0):
            return web.Response(status=500, text="internal error, try again")
        if "BAD400" in text:
            return web.json_response({"error": {"message": "bad request"}}, status=400)
        if "SLOWONCE" in text and nth == 0:
            await asyncio.sleep(self.slow_s)
        if "DELAY100MS" in text:
            await asyncio.sleep(0.1)
        return web.json_response(completion(body))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _last_user(body: dict) -> str:
    return next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")


def rewrite(text: str, max_tokens: int) -> tuple[str, str, int]:
    """The fake model: (text, finish_reason, completion tokens) for a last user message."""
    words = text.split()[::-1]
    finish = "length" if len(words) > max_tokens else "stop"
    words = words[:max_tokens]
    return "Rewritten: " + " ".join(words), finish, len(words)


def completion(body: dict) -> dict:
    """The OpenAI chat-completion response the default handler sends."""
    text, finish, out_tokens = rewrite(_last_user(body), body["max_tokens"])
    in_tokens = sum(len(m["content"].split()) for m in body["messages"])
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": in_tokens, "completion_tokens": out_tokens,
                      "total_tokens": in_tokens + out_tokens}}


def start_chat_server(handler_behaviour: Optional[Behaviour] = None, slow_s: float = 1.5) -> ChatServer:
    """Start the fake server on 127.0.0.1 (a free port) in a thread with its own event loop."""
    server = ChatServer(slow_s=slow_s, handler_behaviour=handler_behaviour)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server._handle)
    server._loop = asyncio.new_event_loop()
    server._thread = threading.Thread(target=server._loop.run_forever, name="chat-server", daemon=True)
    server._thread.start()

    async def start() -> int:
        server._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await server._runner.setup()
        site = web.TCPSite(server._runner, "127.0.0.1", 0)
        await site.start()
        return server._runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(start(), server._loop).result(timeout=10)
    server.base_url = f"http://127.0.0.1:{port}/v1"
    return server


@pytest.fixture
def chat_server():
    """A fresh fake server per test (its counters start at zero)."""
    server = start_chat_server()
    yield server
    server.close()


def backend(server: ChatServer, **kw) -> OpenAIBackend:
    kw = {"api_key_env": None, "backoff_s": 0.01, "timeout_s": 5.0, **kw}
    b = OpenAIBackend("test-model", Sampling(temperature=0.7, top_p=0.8), server.base_url, **kw)
    b.setup()
    return b


def convo(text: str) -> list[dict]:
    return [{"role": "system", "content": "You rewrite."}, {"role": "user", "content": text}]


def test_results_come_back_in_order_with_their_content(chat_server):
    texts = [f"document number {i} says " + "word " * (i % 5) for i in range(20)]
    gens = backend(chat_server).generate([convo(t) for t in texts], list(range(20)), max_tokens=50)
    assert [g.text for g in gens] == [rewrite(t, 50)[0] for t in texts]
    assert all(g.error is None and g.finish_reason == "stop" for g in gens)
    assert [g.output_tokens for g in gens] == [len(t.split()) for t in texts]
    assert [g.input_tokens for g in gens] == [len(t.split()) + 2 for t in texts]


def test_a_cut_off_generation_reports_length(chat_server):
    [g] = backend(chat_server).generate([convo("one two three four five")], [0], max_tokens=3)
    assert g.text == "Rewritten: five four three" and g.finish_reason == "length" and g.output_tokens == 3


def test_seeds_max_tokens_model_and_sampling_reach_the_server(chat_server):
    texts = [f"text {i}" for i in range(6)]
    seeds = [1000 + 7 * i for i in range(6)]
    backend(chat_server).generate([convo(t) for t in texts], seeds, max_tokens=33)
    got = {_last_user(r["json"]): r["json"] for r in chat_server.requests}
    assert len(chat_server.requests) == 6
    assert {t: got[t]["seed"] for t in texts} == dict(zip(texts, seeds))
    for body in got.values():
        assert body["model"] == "test-model" and body["max_tokens"] == 33
        assert body["temperature"] == 0.7 and body["top_p"] == 0.8
        assert body["messages"][0] == {"role": "system", "content": "You rewrite."}
    assert all("Authorization" not in r["headers"] for r in chat_server.requests)


def test_a_500_is_retried_then_succeeds(chat_server):
    b = backend(chat_server)
    gens = b.generate([convo("alpha FAIL500ONCE beta"), convo("plain")], [1, 2], max_tokens=20)
    assert [g.text for g in gens] == ["Rewritten: beta FAIL500ONCE alpha", "Rewritten: plain"]
    assert all(g.error is None for g in gens)
    assert b.attempts == 3 and chat_server.count("FAIL500ONCE") == 2


def test_a_timeout_is_retried_then_succeeds(chat_server):
    b = backend(chat_server, timeout_s=0.5)
    [g] = b.generate([convo("x SLOWONCE y")], [1], max_tokens=20)
    assert g.error is None and g.text == "Rewritten: y SLOWONCE x"
    assert b.attempts == 2 and chat_server.count("SLOWONCE") == 2


def test_a_request_that_keeps_failing_ends_with_an_error_and_spares_the_others(chat_server):
    b = backend(chat_server, max_retries=2)
    gens = b.generate([convo("a"), convo("ALWAYS500 here"), convo("b c")], [1, 2, 3], max_tokens=20)
    assert gens[1].text is None
    assert gens[1].error.startswith("HTTP 500 after 3 attempts: internal error"), gens[1].error
    assert [gens[0].text, gens[2].text] == ["Rewritten: a", "Rewritten: c b"]
    assert gens[0].error is None and gens[2].error is None
    assert chat_server.count("ALWAYS500") == 3 and b.attempts == 5


def test_a_400_is_not_retried(chat_server):
    b = backend(chat_server, max_retries=3)
    [g] = b.generate([convo("BAD400")], [1], max_tokens=20)
    assert g.text is None and g.error.startswith("HTTP 400") and "bad request" in g.error
    assert b.attempts == 1 and chat_server.count("BAD400") == 1


def test_concurrency_is_bounded(chat_server):
    b = backend(chat_server, concurrency=3)
    gens = b.generate([convo(f"DELAY100MS {i}") for i in range(12)], list(range(12)), max_tokens=20)
    assert all(g.error is None for g in gens) and len(chat_server.requests) == 12
    assert 2 <= chat_server.max_in_flight <= 3


def test_the_api_key_is_sent_as_a_bearer_token(chat_server, monkeypatch):
    monkeypatch.setenv("TOKENMILL_TEST_CHAT_KEY", "sekret-123")
    backend(chat_server, api_key_env="TOKENMILL_TEST_CHAT_KEY").generate([convo("hi")], [1], max_tokens=5)
    monkeypatch.setenv("TOKENMILL_TEST_CHAT_KEY", "")
    backend(chat_server, api_key_env="TOKENMILL_TEST_CHAT_KEY").generate([convo("hi")], [1], max_tokens=5)
    first, second = (r["headers"] for r in chat_server.requests)
    assert first.get("Authorization") == "Bearer sekret-123"
    assert "Authorization" not in second


def test_a_429_honours_retry_after_and_a_malformed_body_is_final():
    async def behaviour(server, body, nth):
        text = _last_user(body)
        if text == "busy" and nth == 0:
            return web.Response(status=429, text="slow down", headers={"Retry-After": "0.2"})
        if text == "garbled":
            return web.Response(status=200, text="{not json", content_type="application/json")
        return None

    server = start_chat_server(behaviour)
    try:
        b = backend(server, backoff_s=5.0)   # the 0.2 s Retry-After, not the 5 s backoff, sets the wait
        start = time.monotonic()
        busy, garbled = b.generate([convo("busy"), convo("garbled")], [1, 2], max_tokens=5)
        elapsed = time.monotonic() - start
    finally:
        server.close()
    assert 0.15 <= elapsed < 3.0, elapsed
    assert busy.text == "Rewritten: busy" and busy.error is None
    assert garbled.text is None and garbled.error.startswith("malformed response")
    assert b.attempts == 3 and server.count("garbled") == 1


def test_a_server_that_is_not_there_ends_with_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = OpenAIBackend("m", Sampling(), f"http://127.0.0.1:{port}/v1", api_key_env=None,
                      max_retries=1, backoff_s=0.01, timeout_s=2.0)
    [g] = b.generate([convo("hello")], [0], max_tokens=5)
    assert g.text is None and g.error.startswith("connection error after 2 attempts"), g.error
    assert b.attempts == 2


def test_retry_after_is_read_as_seconds_and_capped():
    assert _retry_after("2.5") == 2.5 and _retry_after("600") == 60.0
    assert _retry_after(None) is None and _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert _retry_after("-1") is None and _retry_after("nan") is None

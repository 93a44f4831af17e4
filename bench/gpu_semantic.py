"""GPU check for the ``semantic_dedup`` stage: the MiniLM encoder's docs/s on the GPU, and the
pairwise SemDeDup step (each document's largest cosine to an earlier one of its cluster) written
in torch, checked against the stage's NumPy step and timed on clusters of random unit vectors.
One prepared script for a machine with an NVIDIA GPU, PyTorch and transformers, and no network or
Ray or pydantic (the ``device`` tool's machine):

    python3 bench/gpu_semantic.py                   # 20,000 docs; clusters of 10k and 50k; cuda
    python3 bench/gpu_semantic.py --device cpu      # the smoke run: small sizes, < 2 minutes anywhere

It loads two files of this checkout by path, so no tokenmill package (and so none of its
dependencies) is imported: ``stages/quality/embed_model.py`` (the ``minilm`` encoder's tokenizer,
length-sorted micro-batches, mean pooling, L2 norm) and ``stages/semantic/semdedup.py`` (the
NumPy tiled max-similarity). The encoder folder is found as ``bench/gpu_quality.py`` finds it:
``--encoder``, the bundled all-MiniLM-L6-v2, ``bench/_work/minilm`` (carry it), else that
architecture with random weights (the same throughput; the JSON says which). Texts: the web
documents of configs/sample/web.jsonl.gz, whole, repeated to ``--docs``, each read to ``--max-tokens``
(default 1,024, semantic_dedup's for a transformer: windows of 256 tokens pooled together).

Measured: the tokenizer (CPU) alone; the encoder's ``embed`` at ``--batch-size`` in each
``--dtypes``, its embeddings' cosine to float32's; then the pairwise step: ``max_similarity_torch``
against ``semdedup.max_similarity`` on a cluster of ``--check-size`` vectors with planted near and
exact duplicates (max |difference| of max_sim, share of equal arg, equal removals at eps 0.05),
and its time per ``--sizes`` cluster, ``--blocks`` tile size and ``--pair-dtypes`` (NumPy's time
too at the sizes up to ``--numpy-max``). GPU utilisation and memory are sampled with nvidia-smi.
Results: stdout and ``$OUT/gpu_semantic.json`` (else bench/gpu_semantic.json), after each step.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import GpuSampler, Results, sync, torch_peak_gib  # noqa: E402
from gpu_quality import encoder_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMOKE = {"docs": 64, "sizes": "2000,4000", "blocks": "512", "check_size": 600, "dtypes": "float32",
         "pair_dtypes": "float32"}


def load_file(name: str, rel: str):
    """A module of this checkout by its path (no package ``__init__`` runs)."""
    spec = importlib.util.spec_from_file_location(name, REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def texts(n: int) -> list[str]:
    docs = [json.loads(line)["text"] for line in gzip.open(REPO / "configs" / "sample" / "web.jsonl.gz", "rt")]
    return [docs[i % len(docs)] for i in range(n)]


# -- the pairwise step in torch ----------------------------------------------------------------------------
def max_similarity_torch(x, block: int = 2048):
    """``semdedup.max_similarity`` on the device of ``x`` (unit rows in keep order): each row's largest
    cosine to an earlier row (floored at 0) and that row's index (-1: none above 0)."""
    import torch

    n = x.shape[0]
    best = torch.zeros(n, dtype=torch.float32, device=x.device)
    arg = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    for s in range(0, n, block):
        e = min(n, s + block)
        cols = x[s:e]
        for r in range(0, e, block):
            sims = (x[r:min(r + block, e)] @ cols.T).float()
            if r + sims.shape[0] > s:   # the tile reaches the diagonal: only earlier rows count
                rows = torch.arange(r, r + sims.shape[0], device=x.device)[:, None]
                sims.masked_fill_(rows >= torch.arange(s, e, device=x.device)[None, :], float("-inf"))
            val, top = sims.max(dim=0)
            better = val > best[s:e]
            best[s:e] = torch.where(better, val, best[s:e])
            arg[s:e] = torch.where(better, r + top, arg[s:e])
    return best, arg


def unit_rows(n: int, dim: int, seed: int, planted: float = 0.0) -> np.ndarray:
    """Random unit rows; with ``planted`` that share of rows a near (or exact) copy of an earlier row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    k = int(n * planted)
    if k:
        dst = rng.choice(np.arange(1, n), k, replace=False)
        src = (rng.random(k) * dst).astype(np.int64)
        noise = rng.choice([0.0, 0.05, 0.2], k)[:, None]
        x[dst] = x[src] + noise * rng.standard_normal((k, dim)).astype(np.float32) * np.linalg.norm(x[src], axis=1,
                                                                                                      keepdims=True) / dim**0.5
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def check_equal(semdedup, n: int, dim: int, block: int, device: str, half: bool) -> dict:
    """torch vs NumPy on one cluster with planted duplicates (tiles of ``block``, float32, TF32 off);
    with ``half`` also how far float16 tiles move max_sim and the removals at eps 0.05."""
    import torch

    x = unit_rows(n, dim, 1, planted=0.3)
    ref_best, ref_arg = semdedup.max_similarity(x, block)
    extra = {}
    if half:
        b16 = max_similarity_torch(torch.from_numpy(x).to(device, torch.float16), block)[0].cpu().numpy()
        extra = {"float16_max_abs_diff": float(np.abs(b16 - ref_best).max()),
                 "float16_removals_differing_eps_0.05": int(((b16 > 0.95) != (ref_best > 0.95)).sum())}
    best, arg = (t.cpu().numpy() for t in max_similarity_torch(torch.from_numpy(x).to(device), block))
    sim_at_arg = np.where(arg >= 0, np.sum(x * x[np.maximum(arg, 0)], axis=1), 0.0)
    near = np.abs(ref_best - 0.95) < 1e-5
    return {"check_size": n, "block": block, "max_abs_diff": float(np.abs(best - ref_best).max()),
            "arg_equal_share": float((arg == ref_arg).mean()),
            "arg_sim_max_abs_diff": float(np.abs(sim_at_arg - ref_best).max()),
            "removed_equal_eps_0.05": bool(np.array_equal((best > 0.95)[~near], (ref_best > 0.95)[~near])),
            "removed_at_eps_0.05": int((ref_best > 0.95).sum()),
            "equal": bool(np.abs(best - ref_best).max() < 1e-4 and np.abs(sim_at_arg - ref_best).max() < 1e-4), **extra}


def time_pairs(n: int, dim: int, block: int, dtype: str, device: str) -> dict:
    import torch

    x = torch.from_numpy(unit_rows(n, dim, 2)).to(device, getattr(torch, dtype))
    max_similarity_torch(x[:min(n, 2 * block)], block)   # warm-up
    sync()
    torch_peak_gib()
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        best, _ = max_similarity_torch(x, block)
        sync()
        seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 4), "pairs_per_s": round(n * (n - 1) / 2 / seconds),
            "docs_per_s": round(n / seconds, 1), "mean_max_sim": round(float(best.mean()), 4),
            "gpu_util_pct": gpu.util, "gpu_memory_mib": gpu.memory_mib, "torch_peak_gib": torch_peak_gib()}


def time_numpy(semdedup, n: int, dim: int, block: int) -> dict:
    x = unit_rows(n, dim, 2)
    t0 = time.perf_counter()
    semdedup.max_similarity(x, block)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "pairs_per_s": round(n * (n - 1) / 2 / seconds), "docs_per_s": round(n / seconds, 1)}


# -- the encoder --------------------------------------------------------------------------------------------
def measure_encoder(embed_model, folder: str, a, res: Results) -> None:
    batch = texts(a.docs)
    enc = embed_model.Encoder(folder, device=a.device, max_tokens=a.max_tokens)
    t0 = time.perf_counter()
    ids = enc.tokens(batch)
    tok_s = time.perf_counter() - t0
    res.add({"step": "tokenizer", "device": "cpu", "seconds": round(tok_s, 3), "docs_per_s": round(a.docs / tok_s, 1),
             "tokens_per_doc": round(float(np.mean([len(x) for x in ids])), 1), "max_tokens": a.max_tokens,
             "windows_per_doc": round(len(enc.windows(ids)[0]) / max(1, len(ids)), 2)})
    ref = None
    for dtype in a.dtypes.split(","):
        enc.dtype = dtype
        enc.load_model()
        enc.embed(ids[:a.batch_size], batch_size=a.batch_size)   # warm-up
        sync()
        torch_peak_gib()
        with GpuSampler() as gpu:
            t0 = time.perf_counter()
            emb = enc.embed(ids, batch_size=a.batch_size)
            sync()
            seconds = time.perf_counter() - t0
        row = {"step": "encoder", "dtype": dtype, "batch_size": a.batch_size, "seconds": round(seconds, 3),
               "docs_per_s": round(a.docs / seconds, 1), "with_tokenizer_docs_per_s": round(a.docs / (seconds + tok_s), 1),
               "gpu_util_pct": gpu.util, "gpu_memory_mib": gpu.memory_mib, "torch_peak_gib": torch_peak_gib()}
        if ref is None:
            ref = emb
        else:
            c = np.sum(emb * ref, axis=1)
            row.update(cosine_min=round(float(c.min()), 5), cosine_mean=round(float(c.mean()), 6))
        res.add(row)
        enc.model = None


def measure_pairs(semdedup, a, res: Results) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    blocks = [int(b) for b in a.blocks.split(",")]
    half = "float16" in a.pair_dtypes.split(",")
    res.add({"step": "pairwise_check", **check_equal(semdedup, a.check_size, a.dim, blocks[0], a.device, half)})
    for n in (int(s) for s in a.sizes.split(",")):
        if n <= a.numpy_max:
            res.add({"step": "pairwise_numpy", "n": n, "block": 2048, **time_numpy(semdedup, n, a.dim, 2048)})
        for block in blocks:
            for dtype in a.pair_dtypes.split(","):
                res.add({"step": "pairwise_torch", "n": n, "block": block, "dtype": dtype,
                         **time_pairs(n, a.dim, block, dtype, a.device)})


def arguments():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, or cpu: the smoke run (small sizes unless given)")
    p.add_argument("--docs", type=int)
    p.add_argument("--batch-size", type=int, default=256, help="model rows (windows of 256 tokens) per call")
    p.add_argument("--max-tokens", type=int, default=1024, help="tokens read of each document (the stage's default)")
    p.add_argument("--dtypes", help="encoder weights (default float16,float32; smoke float32)")
    p.add_argument("--encoder", help="encoder folder (default: bundled all-MiniLM-L6-v2, else random weights)")
    p.add_argument("--sizes", help="cluster sizes of the pairwise step (default 10000,50000)")
    p.add_argument("--blocks", help="tile sizes (default 2048,8192; 2048 is the stage's default block)")
    p.add_argument("--pair-dtypes", help="pairwise dtypes (default float32,float16)")
    p.add_argument("--check-size", type=int)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--numpy-max", type=int, default=10_000, help="NumPy timed up to this cluster size")
    p.add_argument("--skip-encoder", action="store_true")
    a = p.parse_args()
    full = {"docs": 20_000, "sizes": "10000,50000", "blocks": "2048,8192", "check_size": 3000,
            "dtypes": "float32,float16", "pair_dtypes": "float32,float16"}
    for k, v in (SMOKE if a.device == "cpu" else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def main() -> None:
    a = arguments()
    import torch

    if a.device == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    embed_model = load_file("tm_embed_model", "stages/quality/embed_model.py")
    semdedup = load_file("tm_semdedup", "stages/semantic/semdedup.py")
    folder, weights = encoder_folder(a.encoder)
    res = Results("gpu_semantic.json", {
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else a.device, "torch": torch.__version__,
        "encoder": weights, "args": vars(a)})
    t0 = time.perf_counter()
    if not a.skip_encoder:
        measure_encoder(embed_model, folder, a, res)
    measure_pairs(semdedup, a, res)
    res.data["seconds"] = round(time.perf_counter() - t0, 1)
    res.save()
    print(f"wrote {res.path} ({res.data['seconds']} s)")


if __name__ == "__main__":
    main()

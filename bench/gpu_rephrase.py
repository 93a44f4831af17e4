"""GPU check for the rephrase stage's transformers backend: output tokens/s through the stage vs a
plain batched ``generate`` loop, at two batch sizes, with a randomly initialised model of a real
rephraser's shape (Qwen2.5-1.5B: hidden 1536, 28 layers, 12 heads, 2 KV heads, vocab 151,936),
bf16. One prepared script for a machine with an NVIDIA GPU, PyTorch and transformers, no network
(the ``device`` tool's machine); it finishes in under 8 minutes there:

    python bench/gpu_rephrase.py                              # cuda, 1.5B, batches 16 and 64
    python bench/gpu_rephrase.py --shape tiny --device cpu --requests 16 --max-tokens 8   # smoke run

Prompts: the stage's own requests (styles wikipedia/qa/distill/tutorial, chunks of at most
``--max-input-tokens``) for the web documents of configs/sample/web.jsonl.gz, the first
``--requests`` of them; a byte-level BPE tokenizer trained here on those documents (the model's
vocabulary is larger; random weights never stop early, so both modes generate exactly
``--max-tokens`` per request: the same work). Modes, each after a warm-up batch:

- ``plain``: the chat template, left-padded batches in input order, ``model.generate``;
- ``stage``: the ``rephrase`` stage (transformers backend) over an Arrow table of the documents:
  requests, length-sorted generation, post-processing into synthetic rows (needs pyarrow and
  pydantic besides PyTorch and transformers).

GPU utilisation and memory are sampled with nvidia-smi over each timed part, with PyTorch's peak
allocation. Results: stdout and ``$OUT/gpu_rephrase.json`` (or bench/gpu_rephrase.json), rewritten
after each measurement (``bench/gpu_run.sh`` runs this on the device machine).
"""
from __future__ import annotations

import argparse
import gc
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu import GpuSampler, Results, sync, torch_peak_gib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAPES = {"qwen1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                           num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
          "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=1000)}


def _import_tokenmill():
    """``tokenmill`` from this checkout, installed or not."""
    shim = Path(tempfile.mkdtemp(prefix="tokenmill-shim-"))
    (shim / "tokenmill").symlink_to(REPO)
    sys.path.insert(0, str(shim))


def web_texts() -> list[str]:
    with gzip.open(REPO / "configs" / "sample" / "web.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def build_model(folder: Path, shape: str, texts: list[str], dtype) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "</s>", "<pad>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = Qwen2Config(max_position_embeddings=4096, bos_token_id=0, eos_token_id=1, pad_token_id=2, **SHAPES[shape])
    Qwen2ForCausalLM(cfg).to(dtype).save_pretrained(folder, safe_serialization=True)
    return folder


def documents_table(texts: list[str]):
    import pyarrow as pa

    n = len(texts)
    return pa.table({"id": [f"web-{i}" for i in range(n)], "row_key": [f"web:{i}" for i in range(n)],
                     "text": pa.array(texts, pa.large_string()), "language": ["en"] * n, "num_tokens": [10_000] * n,
                     "_chunk": [0] * n, "source": ["web"] * n, "url": [None] * n, "meta": [None] * n})


def make_stage(model: Path, a, batch_size: int):
    from tokenmill.engine.stage import Resources
    from tokenmill.stages.rephrase.params import RephraseParams
    from tokenmill.stages.rephrase.stage import Rephrase

    params = RephraseParams(backend="transformers", model=str(model), max_input_tokens=a.max_input_tokens,
                            max_output_tokens=a.max_tokens, min_chars=0, reject_truncated=False,
                            select={"min_tokens": 0}, device=a.device, dtype=a.dtype)
    stage = Rephrase(params, None, Resources(batch_size=batch_size))
    stage.setup()
    return stage


def plain(model: Path, convs: list, a, batch_size: int, gpu: GpuSampler) -> tuple[float, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, padding_side="left")
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, a.dtype)).to(a.device).eval()
    prompts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]

    def batch(texts) -> int:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(a.device)
        with torch.inference_mode():
            seqs = lm.generate(**enc, max_new_tokens=a.max_tokens, do_sample=True, temperature=0.5, top_p=0.9,
                               pad_token_id=tok.pad_token_id)
        return int((seqs[:, enc["input_ids"].shape[1]:] != tok.pad_token_id).sum())

    batch(prompts[:batch_size])   # warm-up
    sync()
    torch_peak_gib()
    with gpu:
        t0, out = time.perf_counter(), 0
        for i in range(0, len(prompts), batch_size):
            out += batch(prompts[i:i + batch_size])
        sync()
        seconds = time.perf_counter() - t0
    return seconds, out


def timed_generate(lm) -> list:
    """Wraps ``lm.generate`` to add its seconds to the returned one-item list."""
    spent, inner = [0.0], lm.generate

    def generate(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0
    lm.generate = generate
    return spent


def through_stage(model: Path, table, a, batch_size: int, gpu: GpuSampler, n: int) -> tuple[float, int]:
    import pyarrow.compute as pc

    stage = make_stage(model, a, batch_size)
    reqs = stage.requests(table)
    stage.generate(reqs.slice(0, batch_size))   # warm-up (loads the model)
    in_generate = timed_generate(stage.backend().model)
    sync()
    torch_peak_gib()
    with gpu:
        t0 = time.perf_counter()
        generated = stage.generate(reqs.slice(0, n))
        rows = stage.documents(generated)
        sync()
        seconds = time.perf_counter() - t0
    errors = generated["gen_error"].drop_null()
    if len(errors):
        print(f"stage: {len(errors)} requests failed, first: {errors[0]}", flush=True)
    stage._backend = None
    print(f"stage: {rows.num_rows} synthetic rows from {generated.num_rows} requests; {in_generate[0]:.2f} s of "
          f"{seconds:.2f} s in model.generate", flush=True)
    return seconds, int(pc.sum(generated["gen_output_tokens"]).as_py())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen1.5b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch-sizes", default="16,64")
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--batches", type=int, help="requests per measurement = this many batches (else --requests)")
    p.add_argument("--repeats", type=int, default=1, help="measure each mode this many times (medians compared)")
    p.add_argument("--order", default="plain,stage")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-input-tokens", type=int, default=512)
    a = p.parse_args()
    import torch

    _import_tokenmill()
    texts = web_texts()
    work = Path(tempfile.mkdtemp(prefix="gpu-rephrase-"))
    t0 = time.perf_counter()
    model = build_model(work / "model", a.shape, texts[:200], getattr(torch, a.dtype))
    build_seconds = time.perf_counter() - t0
    table = documents_table(texts)
    sizes = [int(x) for x in a.batch_sizes.split(",")]
    counts = {bs: bs * a.batches if a.batches else a.requests for bs in sizes}
    stage = make_stage(model, a, 16)
    reqs = stage.requests(table).slice(0, max(counts.values()))
    convs = [json.loads(m) for m in reqs["rq_messages"].to_pylist()]
    res = Results("gpu_rephrase.json", {
        "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu", "torch": torch.__version__,
        "shape": a.shape, "args": vars(a), "model_build_seconds": round(build_seconds, 1)})
    gpu = GpuSampler(every=0.5)
    for bs in sizes:
        n = counts[bs]
        for repeat in range(a.repeats):
            for mode in a.order.split(","):
                gc.collect()
                seconds, tokens = (plain(model, convs[:n], a, bs, gpu) if mode == "plain"
                                   else through_stage(model, table, a, bs, gpu, n))
                res.add({"mode": mode, "batch_size": bs, "repeat": repeat, "requests": n, "seconds": round(seconds, 2),
                         "output_tokens": tokens, "tokens_per_second": round(tokens / seconds, 1),
                         "gpu_util_pct": gpu.util, "gpu_memory_mib": gpu.memory_mib, "torch_peak_gib": torch_peak_gib()})
    for bs in sizes:
        pl, st = (statistics.median(r["tokens_per_second"] for r in res.data["results"]
                                    if r["batch_size"] == bs and r["mode"] == m) for m in ("plain", "stage"))
        print(f"batch {bs}: stage {st:,.0f} vs plain {pl:,.0f} output tokens/s (medians) -> {st / pl:.2f}x")
    print(f"wrote {res.path}")


if __name__ == "__main__":
    main()

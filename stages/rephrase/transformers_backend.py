"""The ``transformers`` backend: local generation with a Hugging Face causal LM, on CPU or GPU.

The model and tokenizer load once per worker (``setup``); a batch of conversations is rendered
with the tokenizer's chat template, left-padded and generated together (``model.generate``),
sorted by length first so a batch pads little. The random draw of a batch is fixed by its first
request's seed, so the same input and config give the same output.
"""
from __future__ import annotations

from typing import Optional

from .backend import Generation, Sampling


class TransformersBackend:
    def __init__(self, model: str, sampling: Sampling, device: Optional[str] = None, dtype: str = "auto",
                 batch_size: int = 16):
        self.path, self.sampling, self.device, self.dtype, self.batch_size = model, sampling, device, dtype, batch_size
        self.model = self.tokenizer = None

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = getattr(torch, self.dtype) if self.dtype != "auto" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype).to(self.device).eval()

    def prompts(self, conversations: list[list[dict]]) -> list[list[int]]:
        return [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)
                for c in conversations]

    def generate(self, conversations: list[list[dict]], seeds: list[int], max_tokens: int) -> list[Generation]:
        ids = self.prompts(conversations)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[Optional[Generation]] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            part = order[start:start + self.batch_size]
            for i, gen in zip(part, self._batch([ids[i] for i in part], seeds[part[0]], max_tokens)):
                out[i] = gen
        return out

    def _batch(self, ids: list[list[int]], seed: int, max_tokens: int) -> list[Generation]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        torch.manual_seed(seed)
        s = self.sampling
        sample = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p) if s.temperature > 0 else dict(do_sample=False)
        with torch.inference_mode():
            seqs = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens,
                                       pad_token_id=pad, **sample)
        return [self._one(row[width:].tolist(), len(x), max_tokens) for row, x in zip(seqs, ids)]

    def _one(self, new: list[int], n_in: int, max_tokens: int) -> Generation:
        eos = self.tokenizer.eos_token_id
        stopped = eos in new
        new = new[:new.index(eos)] if stopped else [t for t in new if t != self.tokenizer.pad_token_id]
        finish = "stop" if stopped or len(new) < max_tokens else "length"
        return Generation(self.tokenizer.decode(new, skip_special_tokens=True), n_in, len(new), finish)

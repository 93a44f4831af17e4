"""A tiny causal LM built on the fly for the rephrase tests and benchmarks (nothing downloaded):
a Llama of vLLM-CPU-compatible shape (head_dim 64) with random weights, and a byte-level BPE
tokenizer (1k tokens) trained on ../shared/data/web_dev.jsonl with a chat template."""
from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def byte_level_bpe(web_dev: Path, vocab_size: int, special_tokens: list[str], add_prefix_space: bool):
    """A byte-level BPE tokenizer trained on the first 200 pages of ``web_dev``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    texts = [json.loads(line)["text"] for line in web_dev.read_text().split("\n")[:200] if line.strip()]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens))
    return tok


def make_tiny_llm(folder: Path, web_dev: Path, seed: int = 0, layers: int = 2) -> Path:
    """Write the model and tokenizer to ``folder`` (once) and return it."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = byte_level_bpe(web_dev, 1000, ["<s>", "</s>", "<pad>"], add_prefix_space=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=128, num_attention_heads=2, num_key_value_heads=2,
                      num_hidden_layers=layers, intermediate_size=256, max_position_embeddings=2048,
                      bos_token_id=0, eos_token_id=1, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    return folder

"""A tiny encoder of another family than the bundled MiniLM, built on the fly for the
``train-embedder --teacher`` tests (nothing downloaded): a RoBERTa with random weights, 64 hidden
dimensions, and a byte-level BPE tokenizer (2k tokens, ``<s>``/``</s>`` around each text) trained
on ../shared/data/web_dev.jsonl."""
from __future__ import annotations

from pathlib import Path


def make_tiny_teacher(folder: Path, web_dev: Path, seed: int = 0) -> Path:
    """Write the model and tokenizer to ``folder`` (once) and return it."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from tiny_llm import byte_level_bpe
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    tok = byte_level_bpe(web_dev, 2000, ["<s>", "<pad>", "</s>", "<unk>"], add_prefix_space=True)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", cls_token="<s>", sep_token="</s>", model_max_length=512)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=len(fast), hidden_size=64, num_attention_heads=2, num_hidden_layers=2,
                        intermediate_size=128, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2)
    RobertaModel(cfg).save_pretrained(folder, safe_serialization=True)
    return folder

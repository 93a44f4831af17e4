"""A tiny encoder of another family than the bundled MiniLM, built on the fly for the
``train-embedder --teacher`` tests (nothing downloaded): a RoBERTa with random weights, 64 hidden
dimensions, and a byte-level BPE tokenizer (2k tokens, ``<s>``/``</s>`` around each text) trained
on ../shared/data/web_dev.jsonl."""
from __future__ import annotations

import json
from pathlib import Path


def make_tiny_teacher(folder: Path, web_dev: Path, seed: int = 0) -> Path:
    """Write the model and tokenizer to ``folder`` (once) and return it."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    texts = [json.loads(line)["text"] for line in web_dev.read_text().split("\n")[:200] if line.strip()]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
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

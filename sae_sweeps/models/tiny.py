"""A small random Llama-style LM with its own byte-level BPE tokenizer, built locally in well
under a second and saved to disk, so that it loads through the same code path as a hub model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Enough English for BPE merges that look like words; the tiny model never needs to be good.
_TOKENIZER_TEXT = """
Sparse autoencoders decompose the activations of a language model into a dictionary of features.
Each feature is a direction in activation space, and only a few features are active on any token.
The quick brown fox jumps over the lazy dog. The government said on Monday that the economy grew
faster than expected, while shares in technology companies rose sharply in London and New York.
Researchers train many dictionaries with different sparsity penalties and compare their trade-offs.
"""


def build_tiny_model(
    directory: str | Path,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    d_mlp: int = 128,
    vocab_size: int = 512,
    n_ctx: int = 256,
    seed: int = 0,
) -> Path:
    """Write a random model and its tokenizer to `directory/<hash of the settings>`; reuse it if present."""
    settings = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp,
                    vocab_size=vocab_size, n_ctx=n_ctx, seed=seed)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(directory) / f"tiny-{key}"
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    tokenizer = _train_tokenizer(vocab_size)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=n_ctx,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
    tmp = out.with_name(out.name + f".tmp{torch.randint(1 << 30, ()).item()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out)  # atomic: concurrent builders (a sweep's jobs) never see half a model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").is_file():
            raise
    return out


def _train_tokenizer(vocab_size: int) -> transformers.PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TOKENIZER_TEXT.split("\n"), trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )

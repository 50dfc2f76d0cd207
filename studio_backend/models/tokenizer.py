"""A small byte-level BPE tokenizer trained on the corpus shipped in ``assets/corpus``."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from studio_backend.errors import InputError

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CORPUS_DIR = ASSETS / "corpus"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|endoftext|>"  # noqa: S105 - a token, not a secret


def corpus_files() -> list[Path]:
    files = sorted(CORPUS_DIR.glob("*.txt"))
    if not files:
        raise InputError(CORPUS_DIR, "no corpus *.txt files to train the tokenizer on")
    return files


def train_tokenizer(vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE (deterministic for a given corpus and size)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(p) for p in corpus_files()], trainer)
    return tok


def write_tokenizer(out_dir: Path, vocab_size: int) -> int:
    """Write tokenizer.json + tokenizer_config.json; returns the EOS token id."""
    tok = train_tokenizer(vocab_size)
    if tok.get_vocab_size() > vocab_size:
        raise InputError(out_dir, f"tokenizer has {tok.get_vocab_size()} > {vocab_size} tokens")
    tok.save(str(out_dir / "tokenizer.json"))
    eos_id = tok.token_to_id(EOS_TOKEN)
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "bos_token": None,
        "model_max_length": 4096,
        "add_bos_token": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return int(eos_id)


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise InputError(path, "tokenizer.json not found (pass token ids instead of text)")
    return Tokenizer.from_file(str(path))

"""Tiny random transformer models of every family, built offline and saved to a folder.

Each builder trains (or writes) the family's own tokenizer on a small corpus, builds a
2-layer model from a config, and saves both with ``save_pretrained`` so skembed loads them the
way it loads a real model folder.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
import transformers as tf

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a cell phone in a prison cell near a blood cell",
    "Berlin and Paris are cities , New York is big !",
    "unbelievable tokenization happens here 12345",
    " ".join(string.ascii_letters + string.digits + string.punctuation),
] * 4

MAX_LEN = 64
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def _train(tokenizer_cls, **kwargs):
    base = tokenizer_cls(model_max_length=MAX_LEN, **kwargs)
    return base.train_new_from_iterator(CORPUS, vocab_size=300)


def _xlm_tokenizer(folder: Path):
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "<unk>": 3}
    for i in range(10):
        vocab[f"<special{i}>"] = len(vocab)
    for c in string.ascii_lowercase + string.digits + string.punctuation:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    for piece in ("th", "the</w>", "ce", "cell</w>", "ll</w>"):
        vocab[piece] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("t h\nth e</w>\nc e\nl l</w>\nce ll</w>\n")
    return tf.XLMTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_LEN
    )


def build(family: str, folder: Path, max_len: int = MAX_LEN) -> Path:
    """Build and save a tiny random model of ``family``; return its folder."""
    torch.manual_seed(0)
    folder = Path(folder) / family
    if family == "bert":
        tok = _train(tf.BertTokenizer)
        model = tf.BertModel(
            tf.BertConfig(vocab_size=len(tok), max_position_embeddings=max_len, **SMALL)
        )
    elif family == "distilbert":
        tok = _train(tf.DistilBertTokenizer)
        cfg = tf.DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                  max_position_embeddings=max_len)  # fmt: skip
        model = tf.DistilBertModel(cfg)
    elif family == "electra":
        tok = _train(tf.ElectraTokenizer)
        cfg = tf.ElectraConfig(
            vocab_size=len(tok), embedding_size=16, max_position_embeddings=max_len, **SMALL
        )
        model = tf.ElectraModel(cfg)
    elif family == "albert":
        tok = _train(tf.AlbertTokenizer)
        cfg = tf.AlbertConfig(
            vocab_size=len(tok), embedding_size=16, max_position_embeddings=max_len, **SMALL
        )
        model = tf.AlbertModel(cfg)
    elif family == "deberta-v2":
        tok = _train(tf.DebertaV2Tokenizer)
        cfg = tf.DebertaV2Config(vocab_size=len(tok), max_position_embeddings=max_len,
                                 relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"], **SMALL)  # fmt: skip
        model = tf.DebertaV2Model(cfg)
    elif family == "roberta":
        tok = _train(tf.RobertaTokenizer, add_prefix_space=True)
        cfg = tf.RobertaConfig(vocab_size=len(tok), max_position_embeddings=max_len + 2,
                               pad_token_id=tok.pad_token_id, **SMALL)  # fmt: skip
        model = tf.RobertaModel(cfg)
    elif family == "gpt2":
        tok = _train(tf.GPT2Tokenizer, add_prefix_space=True)
        cfg = tf.GPT2Config(
            vocab_size=len(tok), n_positions=max_len, n_embd=32, n_layer=2, n_head=2
        )
        model = tf.GPT2Model(cfg)
    elif family == "openai-gpt":
        tok = _train(tf.OpenAIGPTTokenizer)
        cfg = tf.OpenAIGPTConfig(
            vocab_size=len(tok), n_positions=max_len, n_embd=32, n_layer=2, n_head=2
        )
        model = tf.OpenAIGPTModel(cfg)
    elif family == "xlnet":
        tok = _train(tf.XLNetTokenizer)
        cfg = tf.XLNetConfig(
            vocab_size=len(tok), d_model=32, n_layer=2, n_head=2, d_inner=37, mem_len=None
        )
        model = tf.XLNetModel(cfg)
    elif family == "xlm":
        tok = _xlm_tokenizer(folder / "_vocab")
        cfg = tf.XLMConfig(vocab_size=len(tok), emb_dim=32, n_layers=2, n_heads=2,
                           max_position_embeddings=max_len, pad_index=tok.pad_token_id)  # fmt: skip
        model = tf.XLMModel(cfg)
    elif family == "t5":
        tok = _train(tf.T5Tokenizer, extra_ids=0)
        cfg = tf.T5Config(
            vocab_size=len(tok), d_model=32, d_kv=16, d_ff=37, num_layers=2, num_heads=2
        )
        model = tf.T5EncoderModel(cfg)
    elif family == "modernbert":
        tok = _train(tf.RobertaTokenizer, add_prefix_space=True)
        cfg = tf.ModernBertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=37, max_position_embeddings=max_len,
                                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, cls_token_id=tok.cls_token_id,
                                  sep_token_id=tok.sep_token_id, local_attention=16, global_attn_every_n_layers=1)  # fmt: skip
        model = tf.ModernBertModel(cfg)
    else:
        raise ValueError(f"unknown family {family!r}")
    model.eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


FAMILIES = (
    "bert", "distilbert", "electra", "albert", "deberta-v2", "roberta", "gpt2",
    "openai-gpt", "xlnet", "xlm", "t5", "modernbert",
)  # fmt: skip

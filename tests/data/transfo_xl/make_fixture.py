"""Generate the Transformer-XL test fixture with transformers 4.x (run once, outside the repo).

transformers 5 removed Transformer-XL, so this script runs in a throw-away virtual environment:

    python -m venv /work/venvs/tfxl
    /work/venvs/tfxl/bin/pip install torch==2.13.0          # first, so pip keeps the CPU build
    /work/venvs/tfxl/bin/pip install transformers==4.35.2 sacremoses safetensors numpy
    /work/venvs/tfxl/bin/python tests/data/transfo_xl/make_fixture.py

It builds four tiny random Transformer-XL models in the Hugging Face format, each exercising
other options (adaptive input embeddings with several clusters and ``div_val > 1``, a single
projected embedding, pre- and post-layer-norm, tied and untied ``r_w_bias`` / ``r_r_bias``,
``same_length``, ``clamp_len``, memory on and off), and saves, for a few documents, every hidden
state that transformers 4.x computes. The test suite only reads what this script wrote:

    <name>/config.json, weights, vocab.pkl (plus vocab.bin for model_a)
    <name>/expected.npz: ids_<i> (token ids) and hidden_<i> (n_layer + 1, n_tokens, d_model)
    docs.json: the documents (token lists), the same for every model

Each document is run on its own, starting from the model's fresh memory (``mems=None``: zeros
of ``mem_len`` when ``mem_len > 0``). A document longer than ``tgt_len`` tokens is run segment by
segment, passing the ``mems`` returned by one call to the next (memory carried only inside a
document), which is what skembed does with long documents.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLModel, TransfoXLTokenizer

OUT = Path(__file__).resolve().parent
WORDS = (
    "the , . of and to in a is was that for on as with by he at from his it an were are which "
    "this be or has had first also its new after who their one two they her been she but not "
    "have more all year most city time other into may over world between during film game "
    "season about under school early only when while later song three"
).split()  # 64 words; with <unk> and <eos>, 66 symbols

DOCS = [
    "the film was first shown in the city .".split(),
    # unknown words ('songs', 'old'...), the end-of-sentence symbol and an added token
    "she had two new songs and three old ones , who knew ? <eos> <formula>".split(),
    "a city of two film school games <eos>".split(),  # exactly one segment (tgt_len 8)
    ["Zebra"],  # one unknown token
    ["the"],
    # longer than tgt_len (8): several segments with memory carried over
    (
        "the season was the first in the world , and the school had a new game for "
        "the city during the year ; it was her time ."
    ).split(),
]

MODELS = {
    # Published layout (LM head, pytorch_model.bin): adaptive embeddings, 4 clusters, div_val 2.
    "model_a": dict(
        head=True,
        safe=False,
        config=dict(
            cutoffs=[10, 25, 45],
            d_model=16,
            d_embed=16,
            n_head=2,
            d_head=8,
            d_inner=32,
            div_val=2,
            n_layer=3,
            mem_len=6,
            clamp_len=5,
            same_length=True,
            untie_r=True,
            pre_lnorm=False,
            tgt_len=8,
        ),
    ),
    # Base model in safetensors: pre-LN, shared r biases, one projected embedding, no memory.
    "model_b": dict(
        head=False,
        safe=True,
        config=dict(
            cutoffs=[20],
            d_model=12,
            d_embed=20,
            n_head=3,
            d_head=4,
            d_inner=24,
            div_val=1,
            n_layer=2,
            mem_len=0,
            clamp_len=0,
            same_length=False,
            untie_r=False,
            pre_lnorm=True,
            tgt_len=8,
        ),
    ),
    # Post-LN, memory longer than a segment, no same_length, adaptive with div_val 3.
    "model_c": dict(
        head=False,
        safe=True,
        config=dict(
            cutoffs=[30],
            d_model=18,
            d_embed=18,
            n_head=2,
            d_head=6,
            d_inner=20,
            div_val=3,
            n_layer=4,
            mem_len=12,
            clamp_len=0,
            same_length=False,
            untie_r=True,
            pre_lnorm=False,
            tgt_len=8,
        ),
    ),
    # Pre-LN with memory: the fresh (zero) memory then has non-zero keys and values.
    "model_d": dict(
        head=False,
        safe=True,
        config=dict(
            cutoffs=[8, 40],
            d_model=12,
            d_embed=24,
            n_head=2,
            d_head=5,
            d_inner=16,
            div_val=2,
            n_layer=2,
            mem_len=5,
            clamp_len=7,
            same_length=True,
            untie_r=False,
            pre_lnorm=True,
            tgt_len=8,
        ),
    ),
}


def build_tokenizer(folder: Path) -> TransfoXLTokenizer:
    vocab_txt = folder / "words.txt"
    vocab_txt.write_text("\n".join(["<unk>", "<eos>", *WORDS]) + "\n", encoding="utf-8")
    tok = TransfoXLTokenizer(vocab_file=str(vocab_txt))
    vocab_txt.unlink()
    return tok


def run_document(model: TransfoXLModel, ids: list[int], tgt_len: int) -> np.ndarray:
    """Every hidden state of one document, segment by segment with memory carried over."""
    mems, parts = None, []
    for start in range(0, len(ids), tgt_len):
        seg = torch.tensor([ids[start : start + tgt_len]])
        out = model(seg, mems=mems, output_hidden_states=True, return_dict=True)
        mems = out.mems
        parts.append(torch.stack(out.hidden_states, 0)[:, 0])  # (n_layer + 1, seg_len, d)
    return torch.cat(parts, 1).numpy()


def main() -> None:
    print("transformers", transformers.__version__, "torch", torch.__version__)
    (OUT / "docs.json").write_text(json.dumps(DOCS, indent=1) + "\n", encoding="utf-8")
    for seed, (name, spec) in enumerate(MODELS.items()):
        folder = OUT / name
        folder.mkdir(exist_ok=True)
        tok = build_tokenizer(folder)
        config = TransfoXLConfig(vocab_size=len(tok), **spec["config"])
        torch.manual_seed(seed)
        net = (TransfoXLLMHeadModel if spec["head"] else TransfoXLModel)(config).eval()
        # Move every parameter away from its initial value (layer-norm biases start at 0,
        # which would hide mistakes in pre-LN memory handling).
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.2 * torch.randn_like(p))
        net.save_pretrained(folder, safe_serialization=spec["safe"])
        tok.save_pretrained(folder)
        if name == "model_a":
            # Old-style vocabulary: torch.save of the vocabulary's data attributes.
            data = {k: tok.__dict__[k] for k in ("idx2sym", "sym2idx", "unk_idx", "lower_case")}
            data["counter"] = tok.counter
            torch.save(data, folder / "vocab.bin")
        base = net.transformer if spec["head"] else net
        expected = {}
        with torch.no_grad():
            for i, doc in enumerate(DOCS):
                ids = tok.convert_tokens_to_ids(doc)
                expected[f"ids_{i}"] = np.asarray(ids, dtype=np.int64)
                expected[f"hidden_{i}"] = run_document(base, ids, spec["config"]["tgt_len"])
        np.savez_compressed(folder / "expected.npz", **expected)
        print(name, "layers", config.n_layer, "vocab", len(tok))
        print("  globals in vocab.pkl:", sorted(_globals(folder / "vocab.pkl")))


def _globals(path: Path) -> set[str]:
    """The globals a pickle refers to (what skembed's restricted unpickler must allow)."""
    seen = set()

    class Lister(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    with open(path, "rb") as f:
        Lister(f).load()  # our own file, written just above
    return seen


if __name__ == "__main__":
    main()

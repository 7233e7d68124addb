"""Make the Flair parity fixtures of tests/test_flair_parity.py (run by hand, not by the tests).

Two steps, each in its own environment:

1. ``python tests/data/flair/make_reference.py skembed`` with skembed installed: writes small
   random language models with skembed's writer (new format with projection, and the old
   Flair 0.4.x format), so that step 2 checks that Flair itself reads skembed's files.
2. ``/path/to/flair-venv/bin/python tests/data/flair/make_reference.py flair`` in a throw-away
   environment with ``flair==0.15.1`` (``pip install torch==2.13.0`` first, then flair): builds
   small random Flair ``LanguageModel``s, saves them with Flair's own ``save`` /
   ``save_checkpoint``, embeds ``SENTENCES`` with Flair's ``FlairEmbeddings`` for every model
   file here (Flair's and skembed's), both ``with_whitespace`` values and ``chars_per_chunk``
   512 and 3, and writes the vectors to ``expected.npz``.

Flair is never a dependency of skembed; only this script's outputs are committed.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Tokenized sentences; "ü", "€" and "🙂" are outside the dictionaries (they map to <unk>).
SENTENCES = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["Hello"],
    ["Berlin", "is", "über", "cool", ",", "costs", "5", "€", "!"],
    ["a", "b"],
    ["George", "Washington", "went", "to", "Washington", "🙂"],
]
CHARS = string.ascii_letters + string.digits + " .,!?;:'\"-()\n"


def skembed_step() -> None:
    import torch

    from skembed.flair import CharLM

    torch.manual_seed(1)
    lm = CharLM(CHARS, is_forward_lm=True, hidden_size=16, nlayers=2, embedding_size=6, nout=12)
    lm.save(HERE / "skembed_fw_proj.pt")
    lm = CharLM(CHARS, is_forward_lm=False, hidden_size=20, nlayers=1, embedding_size=5)
    lm.save(HERE / "skembed_bw_legacy.pt", legacy=True)
    print("wrote", sorted(p.name for p in HERE.glob("skembed_*.pt")))


def flair_step() -> None:
    import numpy as np
    import torch
    from flair.data import Dictionary, Sentence
    from flair.embeddings import FlairEmbeddings
    from flair.models import LanguageModel

    torch.manual_seed(0)
    dictionary = Dictionary()
    for ch in CHARS:
        dictionary.add_item(ch)

    fw = LanguageModel(dictionary, True, hidden_size=32, nlayers=2, embedding_size=8)
    fw.save(HERE / "flair_fw_2layers.pt")
    bw = LanguageModel(dictionary, False, hidden_size=24, nlayers=1, embedding_size=8, nout=16)
    # Embedding once fills the dictionary's lookup cache (a defaultdict), which Flair then
    # pickles along: skembed must read such files too.
    FlairEmbeddings(bw)
    bw.save(HERE / "flair_bw_proj_used.pt")
    gru = LanguageModel(dictionary, True, 16, 1, 8, recurrent_type="gru")
    gru.save(HERE / "flair_fw_gru.pt")
    optimizer = torch.optim.SGD(fw.parameters(), lr=20)
    fw.save_checkpoint(HERE / "flair_fw_checkpoint.pt", optimizer, epoch=1, split=2, loss=3.5)

    expected = {}
    files = sorted(p.name for p in HERE.glob("*.pt"))
    for name in files:
        for ws in (True, False):
            for cpc in (512, 3):
                emb = FlairEmbeddings(str(HERE / name), with_whitespace=ws, chars_per_chunk=cpc)
                sentences = [Sentence(list(tokens)) for tokens in SENTENCES]
                emb.embed(sentences)
                for i, sentence in enumerate(sentences):
                    vectors = torch.stack([t.get_embedding() for t in sentence.tokens])
                    expected[f"{name}|{int(ws)}|{cpc}|{i}"] = vectors.detach().cpu().numpy()
    np.savez_compressed(HERE / "expected.npz", **expected)
    (HERE / "sentences.json").write_text(json.dumps(SENTENCES, ensure_ascii=False))
    import flair

    print(f"flair {flair.__version__}, torch {torch.__version__}: {len(expected)} arrays from {files}")


if __name__ == "__main__":
    step = sys.argv[1] if len(sys.argv) > 1 else ""
    if step == "skembed":
        skembed_step()
    elif step == "flair":
        flair_step()
    else:
        sys.exit("usage: make_reference.py skembed|flair  (see the module docstring)")

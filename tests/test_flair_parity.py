"""Parity with Flair 0.15.1 itself: vectors Flair computed for its own files and for skembed's.

The fixtures in tests/data/flair/ were made by make_reference.py there: small random Flair
``LanguageModel``s saved with Flair's ``save`` (2-layer LSTM; 1-layer with projection, saved
after use so its dictionary carries Flair's lookup cache; GRU; a ``save_checkpoint`` file),
files written by skembed (new format with projection, old 0.4.x format, backward) that Flair
loaded, and ``expected.npz``: Flair's ``FlairEmbeddings`` vectors for both ``with_whitespace``
values and ``chars_per_chunk`` 512 and 3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skembed.flair import CharLM, FlairEmbeddings

DATA = Path(__file__).parent / "data" / "flair"
FILES = sorted(p.name for p in DATA.glob("*.pt"))
TOLERANCE = 1e-5  # float32; the largest difference measured is about 2e-8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference():
    return np.load(DATA / "expected.npz"), json.loads((DATA / "sentences.json").read_text("utf-8"))


def test_fixtures_cover_the_formats():
    assert {"flair_fw_2layers.pt", "flair_bw_proj_used.pt", "flair_fw_gru.pt"} <= set(FILES)
    assert {"flair_fw_checkpoint.pt", "skembed_fw_proj.pt", "skembed_bw_legacy.pt"} <= set(FILES)
    assert CharLM.load(DATA / "flair_bw_proj_used.pt").nout == 16
    assert CharLM.load(DATA / "flair_fw_gru.pt").recurrent_type == "gru"


@pytest.mark.parametrize("name", FILES)
def test_vectors_equal_flairs(reference, name):
    expected, sentences = reference
    for with_whitespace in (True, False):
        for chars_per_chunk in (512, 3):
            emb = FlairEmbeddings(
                str(DATA / name),
                with_whitespace=with_whitespace,
                chars_per_chunk=chars_per_chunk,
                device="cpu",
                batch_size=2,
            ).fit()
            out = emb.transform(sentences)
            for i in range(len(sentences)):
                want = expected[f"{name}|{int(with_whitespace)}|{chars_per_chunk}|{i}"]
                assert out[i].shape == want.shape
                np.testing.assert_allclose(out[i], want, atol=TOLERANCE, rtol=0)

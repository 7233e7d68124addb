"""Token outputs are streamed to the host batch by batch (issue: GPU readiness): a call's
device memory holds one batch of token vectors, never the whole output, and the output is
filled in place rather than concatenated at the end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_toy_family import ToyEmbeddings

import skembed
from skembed import StackedEmbeddings, TransformerEmbeddings, base

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_caches")

DOCS = [["a"] * n for n in (3, 9, 1, 0, 7, 2, 5, 4, 6, 8)]


def test_each_batch_goes_to_the_host_once_and_alone(tiny_model, monkeypatch):
    emb = TransformerEmbeddings(tiny_model("bert"), batch_size=3, device="cpu").fit()
    reference = [emb.transform(DOCS)[i].copy() for i in range(len(DOCS))]
    copies = []

    def spy(tensor):
        copies.append(tensor.shape[0])
        return tensor.cpu()

    monkeypatch.setattr(base, "to_host", spy)
    skembed.clear_cache(models=False)
    ragged = emb.embed_documents(DOCS)
    # 9 documents with tokens in batches of 3 (the empty one never reaches the network):
    # three copies, each of one batch's tokens, never the call's 45.
    tokens = sorted(len(d) for d in DOCS if d)[::-1]
    assert copies == [sum(tokens[k : k + 3]) for k in range(0, 9, 3)]
    assert ragged.data.device.type == "cpu" and ragged.data.is_contiguous()
    assert list(ragged.lengths) == [len(d) for d in DOCS]
    for i, expected in enumerate(reference):  # in place, in the documents' order
        np.testing.assert_array_equal(ragged[i], expected)


def test_a_member_giving_the_wrong_rows_is_named():
    class Short(ToyEmbeddings):
        def _combine(self, model, states):
            return [t[:-1] for t in super()._combine(model, states)]

    emb = Short().fit()
    with pytest.raises(
        ValueError, match=r"Short gave a \(1, 8\) block for document 0, which has 2"
    ):
        emb.transform([["ab", "cd"]]).to_numpy()


def test_stacks_concatenate_host_outputs(tiny_model):
    bert = TransformerEmbeddings(tiny_model("bert"), device="cpu")
    stack = StackedEmbeddings([("one", bert), ("two", ToyEmbeddings())]).fit()
    out = stack.transform(DOCS)
    assert out.data.device.type == "cpu"
    assert out.shape == (sum(map(len, DOCS)), bert.fit().n_features_out_ + 8)
    assert torch.equal(out.data[:, -8:], ToyEmbeddings().fit().transform(DOCS).data)

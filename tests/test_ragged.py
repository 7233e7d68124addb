"""RaggedEmbeddings: sizes, indexing, conversions."""

import numpy as np
import pytest
import torch

from skembed import RaggedEmbeddings


@pytest.fixture
def ragged():
    arrays = [torch.arange(6.0).reshape(3, 2), torch.zeros(0, 2), torch.full((1, 2), 7.0)]
    return RaggedEmbeddings.from_list(arrays, [["a", "b", "c"], [], ["d"]], ["f0", "f1"])


def test_sizes(ragged):
    assert len(ragged) == 3
    assert ragged.lengths.tolist() == [3, 0, 1]
    assert ragged.offsets.tolist() == [0, 3, 3, 4]
    assert ragged.dim == 2 and ragged.shape == (4, 2)


def test_int_index(ragged):
    np.testing.assert_array_equal(ragged[0], np.arange(6.0).reshape(3, 2))
    assert ragged[1].shape == (0, 2)
    np.testing.assert_array_equal(ragged[-1], [[7.0, 7.0]])
    with pytest.raises(IndexError):
        ragged[3]


@pytest.mark.parametrize("idx", [slice(1, None), [1, 2], np.array([False, True, True])])
def test_subset_index(ragged, idx):
    sub = ragged[idx]
    assert isinstance(sub, RaggedEmbeddings)
    assert sub.tokens == [[], ["d"]]
    assert sub.lengths.tolist() == [0, 1]
    np.testing.assert_array_equal(sub.to_numpy(), [[7.0, 7.0]])
    assert list(sub.feature_names) == ["f0", "f1"]


def test_reorder(ragged):
    sub = ragged[[2, 0]]
    assert sub.tokens == [["d"], ["a", "b", "c"]]
    np.testing.assert_array_equal(sub[1], ragged[0])


def test_conversions(ragged):
    lst = ragged.to_list()
    assert [a.shape for a in lst] == [(3, 2), (0, 2), (1, 2)]
    assert ragged.to_numpy().shape == (4, 2)
    assert torch.equal(ragged.to_torch(), ragged.data)
    assert ragged.to_torch("cpu").device.type == "cpu"
    padded, mask = ragged.padded()
    assert padded.shape == (3, 3, 2)
    assert mask.tolist() == [[True, True, True], [False] * 3, [True, False, False]]
    np.testing.assert_array_equal(padded[2, 0], [7.0, 7.0])
    assert (padded[1] == 0).all()
    with pytest.raises(TypeError, match="DocumentPoolEmbeddings"):
        np.asarray(ragged)  # not one row per document: see tests/test_first_errors.py


def test_to_frame(ragged):
    frame = ragged.to_frame()
    assert list(frame.columns) == ["token", "f0", "f1"]
    assert frame.index.names == ["doc", "position"]
    assert frame.index.tolist() == [(0, 0), (0, 1), (0, 2), (2, 0)]
    assert frame["token"].tolist() == ["a", "b", "c", "d"]
    assert frame.loc[(0, 2), "f1"] == 5.0


def test_empty_and_validation():
    empty = RaggedEmbeddings.from_list([], [], dim=4)
    assert len(empty) == 0 and empty.dim == 4
    assert empty.padded()[0].shape == (0, 0, 4)
    with pytest.raises(ValueError, match="offsets"):
        RaggedEmbeddings(torch.zeros(3, 2), [0, 2], [["a"]])
    with pytest.raises(ValueError, match="token lists"):
        RaggedEmbeddings(torch.zeros(3, 2), [0, 3], [["a"], ["b"]])


def test_index_labels_kept_through_slicing_and_pickling(ragged):
    import pickle

    import pandas as pd

    assert ragged.index is None  # positions
    labelled = RaggedEmbeddings(ragged.data, ragged.offsets, ragged.tokens, index=["x", "y", "z"])
    frame = labelled.to_frame()
    assert frame.index.get_level_values("doc").tolist() == ["x", "x", "x", "z"]
    assert frame.index.names == ["doc", "position"]
    assert labelled[[2, 0]].to_frame().index.tolist() == [("z", 0), ("x", 0), ("x", 1), ("x", 2)]
    assert labelled[1:].index.tolist() == ["y", "z"]
    assert pickle.loads(pickle.dumps(labelled)).index.equals(pd.Index(["x", "y", "z"]))
    tuples = RaggedEmbeddings(
        ragged.data, ragged.offsets, ragged.tokens, index=pd.MultiIndex.from_tuples([(1, "a")] * 3)
    )
    assert tuples.to_frame().index.get_level_values("doc")[0] == (1, "a")
    with pytest.raises(ValueError, match="2 index labels for 3 documents"):
        RaggedEmbeddings(ragged.data, ragged.offsets, ragged.tokens, index=[1, 2])

"""Copies from a GPU to the host (skembed._host.to_host): chunked through one reused,
bounded pinned buffer, the result in ordinary memory, bit for bit. On a machine without a
GPU the chunking runs on CPU tensors, with the CUDA calls faked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skembed import _host
from skembed._host import staged_copy, to_host


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(7, 5, dtype=torch.float32),
        torch.randn(3, 4, 6).to(torch.bfloat16),
        torch.randn(11).to(torch.float16),
        torch.arange(13, dtype=torch.int64).reshape(13, 1),
        torch.tensor([True, False, True]),
        torch.randn(6, 4).t(),  # not contiguous
        torch.tensor(3.5),  # no dimensions
        torch.zeros((0, 384)),
    ],
    ids=["f32", "bf16", "f16", "i64", "bool", "transposed", "scalar", "empty"],
)
@pytest.mark.parametrize("staging_bytes", [1, 7, 64, 1 << 20])
def test_chunked_copy_is_bit_identical(tensor, staging_bytes):
    waits = []
    staging = torch.empty(staging_bytes, dtype=torch.uint8)
    out = staged_copy(tensor, staging, lambda: waits.append(1))
    assert out.dtype == tensor.dtype and out.shape == tensor.shape and out.is_contiguous()
    expected = tensor.contiguous().reshape(-1).view(torch.uint8)
    assert torch.equal(out.reshape(-1).view(torch.uint8), expected)
    n_bytes = tensor.numel() * tensor.element_size()
    assert len(waits) == -(-n_bytes // staging_bytes)  # one wait per chunk
    assert tensor.numel() == 0 or out.data_ptr() != tensor.data_ptr()  # a copy


class _FakeCudaTensor:
    """What to_host reads of a CUDA tensor: its device, and what staged_copy needs."""

    def __init__(self, data: torch.Tensor):
        self.data = data
        self.device = torch.device("cuda:0")

    def contiguous(self):
        return self.data.contiguous()

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype


def test_to_host_reuses_one_bounded_pinned_buffer(monkeypatch):
    made = []
    real_empty = torch.empty

    def empty(*args, pin_memory=False, **kwargs):
        if pin_memory:  # a CPU-only torch cannot pin: a plain buffer stands for it
            made.append(args)
        return real_empty(*args, **kwargs)

    class Stream:
        def synchronize(self):
            pass

    monkeypatch.setattr(_host, "_staging", {})
    monkeypatch.setattr(_host, "STAGING_BYTES", 64)
    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    results = []
    for n in (10, 100, 3):
        data = torch.randn(n, 3)
        results.append((data, to_host(_FakeCudaTensor(data))))
    assert made == [(64,)]  # one pinned buffer, of STAGING_BYTES, for every copy
    for data, out in results:
        assert torch.equal(out, data) and not out.is_pinned()
        np.testing.assert_array_equal(out.numpy(), data.numpy())


def test_cpu_tensors_are_returned_as_they_are():
    tensor = torch.randn(4, 2)
    assert to_host(tensor) is tensor

"""The ELMo network in torch: character CNN, highway layers, projection, and the biLSTM.

Shapes follow the options file (see :class:`~skembed.elmo.options.ElmoOptions`): C memory cells,
projection size P, ``n_layers`` biLSTM layers. The output of a sentence has ``n_layers + 1``
layers of width 2P: layer 0 is the token vector twice, then each biLSTM layer as
``cat(forward, backward)``.

The LSTM has cell and projection clipping, so it cannot use cuDNN's fused kernel. It is made
fast by batching instead: both directions and every sentence of the batch advance together
(one batched matmul per step), input projections are computed for many steps in one matmul, and
sentences that have ended drop out of the batch (they are sorted longest first). Each
sentence is laid out from its own first token (the backward direction reverses each sentence
within its length), so padding only ever follows a sentence and never enters its recurrence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .chars import batch_char_ids
from .options import ElmoOptions

# Bytes of input projections computed ahead per chunk of time steps (bounds memory on long texts).
_CHUNK_BYTES = 64 * 2**20


class CharEncoder(nn.Module):
    """Token character ids to token vectors: embeddings, convolutions, highway, projection."""

    def __init__(self, options: ElmoOptions):
        super().__init__()
        width = options.n_filters
        # Row 0 stays zero: it is the id of batch padding (published files hold rows 1..261).
        self.embedding = nn.Parameter(torch.zeros(262, options.char_dim), requires_grad=False)
        self.convs = nn.ModuleList(nn.Conv1d(options.char_dim, n, w) for w, n in options.filters)
        # One Linear per highway layer: first half "transform", second half "carry" gate.
        self.highways = nn.ModuleList(nn.Linear(width, 2 * width) for _ in range(options.n_highway))
        self.projection = nn.Linear(width, options.projection_dim)
        self.activation = torch.tanh if options.activation == "tanh" else torch.relu

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """``(n_tokens, max_chars)`` ids to ``(n_tokens, P)`` vectors."""
        x = F.embedding(char_ids, self.embedding).transpose(1, 2)
        h = torch.cat([self.activation(conv(x).amax(dim=-1)) for conv in self.convs], dim=-1)
        for highway in self.highways:
            transform, gate = highway(h).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            h = gate * torch.relu(transform) + (1 - gate) * h
        return self.projection(h)


class BiLSTM(nn.Module):
    """Stacked forward and backward LSTMs with cell/projection clipping and skip connections.

    Per layer, weights are stacked over the two directions (index 0 forward, 1 backward) and
    the gates are ordered (input, forget, output, candidate) so one sigmoid covers three.
    """

    def __init__(self, options: ElmoOptions):
        super().__init__()
        P, C = options.projection_dim, options.cell_dim
        self.options = options

        def param(*shape):
            return nn.Parameter(torch.zeros(*shape), requires_grad=False)

        self.w_input = nn.ParameterList(param(2, P, 4 * C) for _ in range(options.n_layers))
        self.w_state = nn.ParameterList(param(2, P, 4 * C) for _ in range(options.n_layers))
        self.bias = nn.ParameterList(param(2, 4 * C) for _ in range(options.n_layers))
        self.w_proj = nn.ParameterList(param(2, C, P) for _ in range(options.n_layers))
        self._cast: dict = {}

    def _weights(self, layer: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The layer's matrices in the matmul dtype (half copies are made once and kept)."""
        weights = (self.w_input[layer], self.w_state[layer], self.w_proj[layer])
        if dtype == weights[0].dtype:
            return weights
        key = (layer, dtype, weights[0].device)
        if key not in self._cast:
            self._cast[key] = tuple(w.to(dtype) for w in weights)
        return self._cast[key]

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> list[torch.Tensor]:
        """Run every layer on left-aligned sentences.

        Parameters
        ----------
        x : Tensor of shape (batch, time, P)
            Token vectors, sentences sorted longest first, padding after each sentence.
        lengths : LongTensor of shape (batch,)
            Length of each sentence (non-increasing).
        dtype : torch dtype
            The dtype of the matmuls. Gate arithmetic, the memory cells, clipping and the
            outputs stay in the weights' dtype (float32), so float16/bfloat16 only round the
            matmul inputs.

        Returns
        -------
        list of Tensor of shape (batch, time, 2P)
            One per layer, ``cat(forward, backward)``; values at padding positions are undefined.
        """
        batch, time, width = x.shape
        steps = torch.arange(time, device=x.device)
        # Backward direction: each sentence reversed within its own length (padding stays put).
        rev = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
        rev = rev[..., None].expand(-1, -1, width)
        inputs = torch.stack([x, x.gather(1, rev)])
        active = (lengths[None, :] > steps[:, None]).sum(1).tolist()
        outputs = []
        for layer in range(self.options.n_layers):
            out = self._layer(layer, inputs, active, dtype)
            if self.options.skip_connections and layer > 0:
                out = out + inputs
            outputs.append(out)
            inputs = out
        return [torch.cat([o[0], o[1].gather(1, rev)], dim=-1) for o in outputs]

    def _layer(
        self, layer: int, inputs: torch.Tensor, active: list[int], dtype: torch.dtype
    ) -> torch.Tensor:
        """One layer, both directions at once; ``active[t]`` sentences are still running at t."""
        w_input, w_state, w_proj = self._weights(layer, dtype)
        bias = self.bias[layer][:, None]  # broadcast over the rows of each direction
        acc = bias.dtype  # accumulation dtype: the weights' own (float32 unless made double)
        cells = self.options.cell_dim
        cell_clip, proj_clip = self.options.cell_clip, self.options.proj_clip
        _, batch, time, _ = inputs.shape
        out = inputs.new_zeros(2, batch, time, w_proj.shape[-1], dtype=acc)
        h = inputs.new_zeros(2, batch, w_state.shape[1], dtype=acc)
        c = inputs.new_zeros(2, batch, cells, dtype=acc)
        chunk = max(1, _CHUNK_BYTES // (8 * batch * 4 * cells))
        fused = dtype == acc  # baddbmm needs one dtype; half matmuls add in `acc` instead
        for t0 in range(0, time, chunk):
            t1, n0 = min(time, t0 + chunk), active[t0]
            # Input projections of every still-running sentence for the whole chunk, in one
            # matmul, time-major so that each step reads one contiguous block per direction.
            x = inputs[:, :n0, t0:t1].transpose(1, 2).reshape(2, -1, inputs.shape[-1])
            if fused:  # the bias rides along in the matmul: no extra pass over a large tensor
                proj_in = torch.baddbmm(bias, x, w_input)
            else:
                proj_in = torch.bmm(x.to(dtype), w_input).to(acc) + bias
            proj_in = proj_in.view(2, t1 - t0, n0, -1)
            for t in range(t0, t1):
                n = active[t]
                # Sentences are sorted longest first, so the running ones are the first n rows.
                if fused:
                    gates = torch.baddbmm(proj_in[:, t - t0, :n], h[:, :n], w_state)
                else:
                    gates = proj_in[:, t - t0, :n] + torch.bmm(h[:, :n].to(dtype), w_state).to(acc)
                # In-place activations: `gates` is this step's own tensor.
                sig = gates[..., : 3 * cells].sigmoid_()
                candidate = gates[..., 3 * cells :].tanh_()
                c = torch.addcmul(
                    sig[..., cells : 2 * cells] * c[:, :n], sig[..., :cells], candidate
                )
                if cell_clip is not None:
                    c = c.clamp_(-cell_clip, cell_clip)
                h = torch.bmm(torch.tanh(c).mul_(sig[..., 2 * cells :]).to(dtype), w_proj).to(acc)
                if proj_clip is not None:
                    h = h.clamp_(-proj_clip, proj_clip)
                out[:, :n, t] = h
        return out


class ElmoModel(nn.Module):
    """The whole ELMo biLM: token lists in, ``(n_layers + 1, n_tokens, 2P)`` per sentence out.

    Build it with :func:`skembed.elmo.weights.load_elmo` from AllenNLP's files.

    Examples
    --------
    >>> from skembed.elmo.options import ElmoOptions
    >>> opts = ElmoOptions.from_dict({
    ...     "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 4]], "n_highway": 1,
    ...                  "activation": "relu"},
    ...     "lstm": {"dim": 8, "projection_dim": 4, "n_layers": 2, "cell_clip": 3, "proj_clip": 3},
    ... })
    >>> layers = ElmoModel(opts)([["Hello", "world", "!"], ["Hi"]])
    >>> [tuple(t.shape) for t in layers]
    [(3, 3, 8), (3, 1, 8)]
    """

    def __init__(self, options: ElmoOptions):
        super().__init__()
        self.options = options
        self.chars = CharEncoder(options)
        self.lstm = BiLSTM(options)

    @property
    def n_layers(self) -> int:
        """Output layers: the token layer plus one per biLSTM layer."""
        return self.options.n_layers + 1

    def forward(self, docs: list[list[str]]) -> list[torch.Tensor]:
        """Every layer of every (non-empty) sentence, each starting from zero LSTM state."""
        device, acc = self.chars.embedding.device, self.chars.embedding.dtype
        dtype = acc
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
        order = sorted(range(len(docs)), key=lambda i: -len(docs[i]))
        unique, positions, lengths = batch_char_ids(
            [docs[i] for i in order], self.options.max_chars, device
        )
        # The character encoder runs in float32 under any precision: it embeds each distinct
        # token once per batch (cheap), and its convolutions and highways set every layer.
        with torch.autocast(device.type, enabled=False):
            tokens = self.chars(unique).to(acc)[positions]
        # Autocast off: the LSTM casts its matmul inputs itself and keeps the rest in float32.
        with torch.autocast(device.type, enabled=False):
            layers = self.lstm(tokens, lengths, dtype)
        stacked = torch.stack([torch.cat([tokens, tokens], dim=-1), *layers])
        states: list[torch.Tensor] = [None] * len(docs)  # type: ignore[list-item]
        for row, i in enumerate(order):
            # Drop the sentence boundaries; clone so the cache never pins the whole batch.
            states[i] = stacked[:, row, 1 : len(docs[i]) + 1].clone()
        return states

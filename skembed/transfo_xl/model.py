"""The Transformer-XL encoder (Dai et al., 2019) in plain torch, for embeddings.

Words go through adaptive input embeddings (vocabulary clusters of shrinking width, each projected
to ``d_model``), then ``n_layer`` blocks of relative multi-head attention and a feed-forward net,
each with a residual connection and layer norm before (``pre_lnorm``) or after it. Attention is
causal and looks back over a memory: the inputs of each layer at the previous ``mem_len``
positions. A document starts from a fresh memory of zeros, as the Hugging Face implementation
(transformers 4.x) starts one when called without ``mems``; a document longer than ``tgt_len``
words runs segment by segment, each segment's memory coming from the ones before it.

The hidden states are returned as transformers 4.x returned them: index 0 is the embedding
output, index ``l`` the output of block ``l``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import TransfoXLConfig


class AdaptiveInput(nn.Module):
    """Word embeddings by frequency cluster: cluster ``i`` has width ``d_embed // div_val**i``."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        n, d = config.vocab_size, config.d_model
        if config.div_val == 1:
            self.bounds = [0, n]
        else:
            self.bounds = [0, *config.cutoffs, n]
        self.tables = nn.ParameterList()
        self.projs = nn.ParameterList()
        for i in range(len(self.bounds) - 1):
            width = config.d_embed // config.div_val**i
            self.tables.append(
                nn.Parameter(torch.empty(self.bounds[i + 1] - self.bounds[i], width))
            )
            # A single table of width d_model is used as is, without a projection.
            if config.div_val > 1 or config.d_embed != d:
                self.projs.append(nn.Parameter(torch.empty(d, width)))
        self.d_model = d
        self.scale = d**0.5

    def _cluster(self, i: int, ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(ids, self.tables[i])
        return F.linear(out, self.projs[i]) if len(self.projs) else out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if len(self.tables) == 1:
            return self._cluster(0, ids) * self.scale
        out = torch.zeros(*ids.shape, self.d_model, device=ids.device)
        for i, (lo, hi) in enumerate(zip(self.bounds[:-1], self.bounds[1:])):
            mask = (ids >= lo) & (ids < hi)
            if mask.any():
                out[mask] = self._cluster(i, ids[mask] - lo).to(out.dtype)
        return out * self.scale


class RelativeBlock(nn.Module):
    """Relative multi-head attention with learned ``r_w_bias``/``r_r_bias``, then a feed-forward."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        d, h, dh, eps = config.d_model, config.n_head, config.d_head, config.layer_norm_epsilon
        self.n_head, self.d_head, self.pre_lnorm = h, dh, config.pre_lnorm
        self.qkv = nn.Linear(d, 3 * h * dh, bias=False)
        self.r_proj = nn.Linear(d, h * dh, bias=False)
        self.out = nn.Linear(h * dh, d, bias=False)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.r_w_bias = nn.Parameter(torch.empty(h, dh))  # content bias ("u" in the paper)
        self.r_r_bias = nn.Parameter(torch.empty(h, dh))  # position bias ("v")
        self.ff_in = nn.Linear(d, config.d_inner)
        self.ff_out = nn.Linear(config.d_inner, d)
        self.ff_norm = nn.LayerNorm(d, eps=eps)

    def attention(self, x, memory, rel, mask):
        """``memory``: (batch, m, d) vectors, or the number m of fresh (zero) memory positions;
        ``rel``: the projected encodings of the distances k-1, ..., 0 (k = m + q keys)."""
        b, q = x.shape[:2]
        fresh = memory if isinstance(memory, int) else 0
        if isinstance(memory, int):
            # Fresh positions are all zero vectors, so they share one key and one value:
            # project a single zero vector instead of m of them (1600 for transfo-xl-wt103).
            memory = x.new_zeros(b, 1, x.shape[2]) if fresh else None
        context = x if memory is None else torch.cat([memory, x], 1)
        if self.pre_lnorm:
            context = self.attn_norm(context)
        heads = self.qkv(context).view(b, context.shape[1], 3, self.n_head, self.d_head)
        query, key, value = heads[:, -q:, 0], heads[:, :, 1], heads[:, :, 2]
        k = q + fresh if fresh else key.shape[1]
        rel = rel.to(query.dtype).view(k, self.n_head, self.d_head)
        position = torch.einsum("bihd,jhd->bhij", query + self.r_r_bias, rel)
        # rel[p] encodes the distance k-1-p; query i (at key index k-q+i) sees key j at distance
        # k-q+i-j, i.e. rel index q-1-i+j. Indices outside the range only occur where masked.
        i = torch.arange(q, device=x.device)[:, None]
        j = torch.arange(k, device=x.device)[None, :]
        index = (q - 1 - i + j).clamp(0, k - 1).expand(b, self.n_head, q, k)
        scores = position.gather(3, index).float()
        content = torch.einsum("bihd,bjhd->bhij", query + self.r_w_bias, key)
        if fresh:  # column 0 is the key shared by the fresh positions
            scores[..., :fresh] += content[..., :1]
            scores[..., fresh:] += content[..., 1:]
        else:
            scores += content
        scores.mul_(self.d_head**-0.5).masked_fill_(mask, torch.finfo(torch.float32).min)
        weights = scores.softmax(-1).to(value.dtype)
        if fresh:
            shared = weights[..., :fresh].sum(-1)  # total weight on the fresh positions
            attended = torch.einsum("bhij,bjhd->bihd", weights[..., fresh:], value[:, 1:])
            attended = attended + torch.einsum("bhi,bhd->bihd", shared, value[:, 0])
        else:
            attended = torch.einsum("bhij,bjhd->bihd", weights, value)
        return self.out(attended.reshape(b, q, -1))

    def forward(self, x, memory, rel, mask):
        if self.pre_lnorm:
            h = x + self.attention(x, memory, rel, mask)
            return h + self.ff_out(F.relu(self.ff_in(self.ff_norm(h))))
        h = self.attn_norm(x + self.attention(x, memory, rel, mask))
        return self.ff_norm(h + self.ff_out(F.relu(self.ff_in(h))))


class TransfoXL(nn.Module):
    """The Transformer-XL encoder; :meth:`encode` runs whole documents.

    Examples
    --------
    >>> import torch
    >>> config = TransfoXLConfig(vocab_size=10, cutoffs=(4,), d_model=8, d_embed=8, n_head=2,
    ...                          d_head=4, d_inner=16, div_val=2, n_layer=2, mem_len=4, tgt_len=5)
    >>> net = TransfoXL(config)
    >>> _ = [torch.nn.init.normal_(p, std=0.1) for p in net.parameters()]
    >>> [h.shape for h in net.encode([[1, 2, 3], [4, 5, 6, 7, 8, 9, 1]])]
    [torch.Size([3, 3, 8]), torch.Size([3, 7, 8])]
    """

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.config = config
        self.embed = AdaptiveInput(config)
        self.blocks = nn.ModuleList(RelativeBlock(config) for _ in range(config.n_layer))
        d = config.d_model
        self.register_buffer("inv_freq", 1 / (10000 ** (torch.arange(0.0, d, 2.0) / d)))

    @property
    def n_layers(self) -> int:
        """Hidden states per position, the embedding layer included."""
        return self.config.n_layer + 1

    def _relative(self, k: int) -> list[torch.Tensor]:
        """Each block's projected encodings of the distances k-1, ..., 0.

        They depend on the distance only, so each block projects the distances 0 ..
        ``mem_len + tgt_len`` once (in float32) and every call takes a slice: otherwise every
        batch would project ``mem_len + q`` sinusoids per layer again.
        """
        table = self.__dict__.get("_rel_table")
        if table is None or table[0].shape[0] < k or table[0].device != self.inv_freq.device:
            size = max(k, self.config.mem_len + self.config.tgt_len)
            dist = torch.arange(size, dtype=torch.float32, device=self.inv_freq.device)
            if self.config.clamp_len > 0:
                dist = dist.clamp(max=self.config.clamp_len)
            angles = torch.outer(dist, self.inv_freq)
            pos = torch.cat([angles.sin(), angles.cos()], -1)
            with torch.autocast(pos.device.type, enabled=False):
                table = [block.r_proj(pos) for block in self.blocks]
            self.__dict__["_rel_table"] = table
        return [t[:k].flip(0) for t in table]

    def _mask(self, q: int, m: int, device) -> torch.Tensor:
        """True where query i may not see key j: the future and, with ``same_length``, keys
        more than ``mem_len`` positions back (so every query sees as many keys)."""
        ones = torch.ones(q, q + m, dtype=torch.bool, device=device)
        mask = torch.triu(ones, 1 + m)
        if self.config.same_length:
            overflow = q + m - self.config.mem_len
            mask = mask | torch.tril(ones, -(q - overflow if overflow > 0 else q))
        return mask

    def forward(self, ids: torch.Tensor, memory: list[torch.Tensor] | None = None, carry=True):
        """One segment: ``ids`` (batch, q), right-padded; ``memory`` one (batch, m, d) per layer.

        Without ``memory`` the segment starts fresh, as transformers 4.x does without ``mems``:
        from ``mem_len`` zero vectors per layer. Returns every hidden state (``n_layer + 1``
        tensors of shape (batch, q, d)) and the memory for the next segment (None when
        ``mem_len`` is 0 or ``carry`` is false). Padding after a document's last word never reaches its words:
        attention only looks back.
        """
        b, q = ids.shape
        keep = max(self.config.mem_len, 0)
        m = memory[0].shape[1] if memory is not None else keep
        rel = self._relative(q + m)
        mask = self._mask(q, m, ids.device)
        hidden = [self.embed(ids)]
        for i, block in enumerate(self.blocks):
            hidden.append(block(hidden[-1], m if memory is None else memory[i], rel[i], mask))
        if keep == 0 or not carry:
            return hidden, None
        if memory is None:
            memory = [h.new_zeros(b, keep, h.shape[2]) for h in hidden[:-1]]
        # The memory holds each layer's input at the last mem_len positions.
        return hidden, [torch.cat([mem, h], 1)[:, -keep:] for mem, h in zip(memory, hidden)]

    def encode(self, documents: list[list[int]]) -> list[torch.Tensor]:
        """Every hidden state of every document: one (n_layer + 1, n_words, d_model) tensor each.

        Documents run together, ``tgt_len`` words at a time; each carries its own memory from
        segment to segment and starts from a fresh one, so results do not depend on the batch.
        """
        device, size = self.inv_freq.device, self.config.tgt_len
        parts: list[list[torch.Tensor]] = [[] for _ in documents]
        active = [i for i, doc in enumerate(documents) if doc]
        memory = None  # fresh
        start = 0
        while active:
            segments = [documents[i][start : start + size] for i in active]
            ids = torch.zeros(len(active), max(map(len, segments)), dtype=torch.long)
            for row, seg in enumerate(segments):
                ids[row, : len(seg)] = torch.tensor(seg)
            carry = any(len(documents[i]) > start + size for i in active)
            hidden, memory = self(ids.to(device), memory, carry)
            hidden = torch.stack(hidden, 1)  # (batch, n_layer + 1, q, d)
            for row, (i, seg) in enumerate(zip(active, segments)):
                parts[i].append(hidden[row, :, : len(seg)])
            start += size
            going = [row for row, i in enumerate(active) if len(documents[i]) > start]
            active = [active[row] for row in going]
            if memory is not None and active:
                rows = torch.tensor(going, device=device)
                memory = [mem.index_select(0, rows) for mem in memory]
        d = self.config.d_model
        empty = torch.zeros(self.n_layers, 0, d, device=device)
        return [torch.cat(p, 1) if p else empty for p in parts]

    @classmethod
    def from_state_dict(cls, config: TransfoXLConfig, state: dict, source="checkpoint"):
        """Build the encoder from Hugging Face weight names (``word_emb.*``, ``layers.N.*``).

        ``r_w_bias``/``r_r_bias`` are per layer when ``untie_r`` is set, else shared at the top.
        """
        net = cls(config)
        names = {"inv_freq": "pos_emb.inv_freq"}
        for i in range(len(net.embed.tables)):
            names[f"embed.tables.{i}"] = f"word_emb.emb_layers.{i}.weight"
        for i in range(len(net.embed.projs)):
            names[f"embed.projs.{i}"] = f"word_emb.emb_projs.{i}"
        block = {
            "qkv.weight": "dec_attn.qkv_net.weight",
            "r_proj.weight": "dec_attn.r_net.weight",
            "out.weight": "dec_attn.o_net.weight",
            "attn_norm.weight": "dec_attn.layer_norm.weight",
            "attn_norm.bias": "dec_attn.layer_norm.bias",
            "r_w_bias": "dec_attn.r_w_bias",
            "r_r_bias": "dec_attn.r_r_bias",
            "ff_in.weight": "pos_ff.CoreNet.0.weight",
            "ff_in.bias": "pos_ff.CoreNet.0.bias",
            "ff_out.weight": "pos_ff.CoreNet.3.weight",
            "ff_out.bias": "pos_ff.CoreNet.3.bias",
            "ff_norm.weight": "pos_ff.layer_norm.weight",
            "ff_norm.bias": "pos_ff.layer_norm.bias",
        }
        for i in range(config.n_layer):
            for ours, theirs in block.items():
                key = f"layers.{i}.{theirs}"
                if ours.startswith("r_") and key not in state:
                    key = ours  # shared biases (untie_r false)
                names[f"blocks.{i}.{ours}"] = key
        mine = net.state_dict()
        missing = [
            theirs for ours, theirs in names.items() if theirs not in state and ours != "inv_freq"
        ]
        if missing:
            raise ValueError(
                f"{source} is missing {len(missing)} Transformer-XL weight(s), e.g. {missing[:3]}; "
                "is config.json the one saved with these weights?"
            )
        loaded = {}
        for ours, theirs in names.items():
            if theirs not in state:
                continue  # inv_freq: recomputed above
            tensor = state[theirs]
            if tuple(tensor.shape) != tuple(mine[ours].shape):
                raise ValueError(
                    f"{source}: weight {theirs} has shape {tuple(tensor.shape)}, config.json "
                    f"implies {tuple(mine[ours].shape)}; the config and weights do not match."
                )
            loaded[ours] = tensor.float()
        net.load_state_dict(loaded, strict=False)
        return net.eval().requires_grad_(False)

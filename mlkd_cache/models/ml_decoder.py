"""ML-Decoder classification head (Ridnik et al., 2023) with one query per class.

This is the head L2D (ICCV 2023) puts on every teacher and student: backbone tokens are
projected to the decoder width, a fixed (untrained) query per class cross-attends to them in a
single decoder layer without self-attention, and each class's output embedding is scored by
its own linear classifier. With ``num_of_groups == num_classes`` ML-Decoder's "group fully
connected" layer is exactly a per-class dot product, done here in one ``einsum``.

Shapes: ``N`` batch, ``L`` tokens, ``T`` token_dim, ``C`` classes, ``E`` embed_dim.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from ..errors import ModelError


class MLDecoderHead(nn.Module):
    """ML-Decoder head: tokens ``[N, L, T]`` -> (label embeddings ``[N, C, E]``, logits ``[N, C]``).

    Args:
        token_dim: ``T``, channels of the backbone tokens.
        num_classes: ``C``, one query (and one classifier row) per class.
        embed_dim: ``E``, decoder width; must be divisible by ``heads``.
        ff_dim: hidden width of the decoder's feed-forward block.
        heads: attention heads.
        dropout: dropout in the decoder layer (residual branches, attention, feed-forward).

    Attributes:
        queries: buffer ``[C, E]``, fixed class queries drawn from N(0, 1) (like
            ``nn.Embedding``) with the global torch RNG; never trained, saved in the state dict.
        weight: ``[C, E]`` per-class classifier (xavier-normal); ``bias``: ``[C]`` (zeros).
    """

    queries: Tensor  # a registered buffer [C, E]

    def __init__(
        self,
        token_dim: int,
        num_classes: int,
        embed_dim: int = 768,
        ff_dim: int = 2048,
        heads: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for label, value in (
            ("token_dim", token_dim),
            ("num_classes", num_classes),
            ("embed_dim", embed_dim),
            ("ff_dim", ff_dim),
            ("heads", heads),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelError(f"ML-Decoder {label} must be a positive integer, got {value!r}")
        if embed_dim % heads:
            raise ModelError(f"ML-Decoder embed_dim ({embed_dim}) must be divisible by heads ({heads})")
        if not 0.0 <= float(dropout) < 1.0:
            raise ModelError(f"ML-Decoder dropout must be in [0, 1), got {dropout!r}")
        self.token_dim = token_dim
        self.num_classes = num_classes
        self.embed_dim = embed_dim

        # token projection ("embed_standart" in ML-Decoder), followed by ReLU in forward
        self.embed = nn.Linear(token_dim, embed_dim)

        # fixed class queries: N(0, 1) like nn.Embedding's init, not a Parameter -> never trained
        self.register_buffer("queries", torch.randn(num_classes, embed_dim), persistent=True)

        # one decoder layer without self-attention (ML-Decoder's TransformerDecoderLayerOptimal)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn = nn.MultiheadAttention(embed_dim, heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, ff_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, embed_dim),
        )
        self.dropout3 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(embed_dim)

        # per-class classifier (ML-Decoder's group FC with one class per group)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.xavier_normal_(self.weight)

    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens ``[N, L, T]`` -> label-wise embeddings ``[N, C, E]``."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"MLDecoderHead expects tokens [N, L, {self.token_dim}], got {tuple(tokens.shape)}")
        memory = torch.relu(self.embed(tokens))  # [N, L, E]
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # [N, C, E]
        q = self.norm1(q + self.dropout1(q))
        attn, _ = self.cross_attn(q, memory, memory, need_weights=False)
        q = self.norm2(q + self.dropout2(attn))
        q = self.norm3(q + self.dropout3(self.ffn(q)))
        return q

    def classify(self, emb: Tensor) -> Tensor:
        """Label-wise embeddings ``[N, C, E]`` -> logits ``[N, C]`` (per-class dot product)."""
        weight = self.weight.to(emb.dtype)
        return torch.einsum("nce,ce->nc", emb, weight) + self.bias.to(emb.dtype)

    def forward(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """Tokens ``[N, L, T]`` -> (label embeddings ``[N, C, E]``, logits ``[N, C]``)."""
        emb = self.decode(tokens)
        return emb, self.classify(emb)

    def extra_repr(self) -> str:
        return f"token_dim={self.token_dim}, num_classes={self.num_classes}, embed_dim={self.embed_dim}"

"""Multi-head self-attention with separate q/k/v/o projections, shared by the face ViT and the conv-stem ViT.

The projections are separate ``nn.Linear`` layers named ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj`` so that
adapters can target each one by name (the default quality-gated targets are the first three).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MultiHeadSelfAttention"]


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention over tokens ``[B, N, D]`` (PyTorch's fused kernel where available)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = float(dropout)
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    @classmethod
    def from_config(cls, config) -> MultiHeadSelfAttention:
        """From a ViT-style config: ``hidden_size``, ``num_attention_heads``, ``attention_probs_dropout_prob`` and
        ``qkv_bias``."""
        return cls(config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob, config.qkv_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = hidden_states.shape
        shape = (batch, tokens, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        attended = F.scaled_dot_product_attention(query, key, value, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(attended.transpose(1, 2).reshape(batch, tokens, dim))

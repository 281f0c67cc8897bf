"""An independent plain-torch re-implementation of the authors' SLSTT network (spec section 7), with
their parameter names (PyTorch-Pretrained-ViT layout: separate q/k/v, `pwff`, `positional_embedding`).

Used by the tests as ground truth for checkpoint conversion; sizes are configurable so it runs fast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadedSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.proj_q = nn.Linear(dim, dim)
        self.proj_k = nn.Linear(dim, dim)
        self.proj_v = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, d // self.heads).transpose(1, 2) for p in (self.proj_q, self.proj_k, self.proj_v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        scores = self.drop(F.softmax(scores, dim=-1))
        return (scores @ v).transpose(1, 2).reshape(b, n, d)


class PositionWiseFeedForward(nn.Module):
    def __init__(self, dim: int, ff_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, ff_dim)
        self.fc2 = nn.Linear(ff_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.attn = MultiHeadedSelfAttention(dim, heads, dropout)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pwff = PositionWiseFeedForward(dim, ff_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.proj(self.attn(self.norm1(x))))
        return x + self.drop(self.pwff(self.norm2(x)))


class Transformer(nn.Module):
    def __init__(self, depth: int, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, ff_dim, dropout) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class PositionalEmbedding1D(nn.Module):
    def __init__(self, seq_len: int, dim: int):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.zeros(1, seq_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos_embedding


class ViT(nn.Module):
    def __init__(self, num_classes: int, dim: int = 768, depth: int = 12, heads: int = 12,
                 image_size: int = 384, patch: int = 16, dropout: float = 0.1):
        super().__init__()
        grid = image_size // patch
        self.patch_embedding = nn.Conv2d(3, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_embedding = PositionalEmbedding1D(1 + grid * grid, dim)
        self.transformer = Transformer(depth, dim, heads, 4 * dim, dropout)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, dim) class token after the final norm."""
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.transformer(self.positional_embedding(x))
        return self.norm(x)[:, 0]


class AuthorsSLSTT(nn.Module):
    """aggregator 'lstm': LSTM over the T tokens -> fc1 -> ReLU -> fc2; 'mean': vit.fc per frame, averaged."""

    def __init__(self, num_classes: int, aggregator: str = "lstm", dim: int = 192, depth: int = 2,
                 heads: int = 3, image_size: int = 32, patch: int = 16, hidden: int = 32, layers: int = 3,
                 head_hidden: int = 16):
        super().__init__()
        self.aggregator = aggregator
        self.vit = ViT(num_classes, dim, depth, heads, image_size, patch)
        if aggregator == "lstm":
            self.lstm = nn.LSTM(dim, hidden, layers)  # sequence-first, as nn.LSTM's default
            self.fc1 = nn.Linear(hidden, head_hidden)
            self.fc2 = nn.Linear(head_hidden, num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        tokens = self.vit.features(frames.flatten(0, 1)).view(b, t, -1)
        if self.aggregator == "lstm":
            out, _ = self.lstm(tokens.transpose(0, 1))  # (T, B, hidden)
            return self.fc2(F.relu(self.fc1(out[-1])))
        return self.vit.fc(tokens).mean(dim=1)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial random values for every parameter (zeros would hide mapping mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model

"""An independent plain-torch re-implementation of the authors' SLSTT network (spec section 7), with
their parameter names (PyTorch-Pretrained-ViT layout: separate q/k/v, `pwff`, `positional_embedding`).

Faithful to what their files hold: `AuthorsSLSTT` ALWAYS builds `vit.fc`, `lstm`, `fc1` and `fc2`
(the aggregation is only a forward flag), initialised as the authors' code does (Linear weights
Xavier-uniform, biases N(0, 1e-6), `vit.fc` zero, nn.LSTM's own uniform init). `pretend_pretrained`
stands in for loading ImageNet weights into the ViT (its fc excluded), `train_like_authors` runs
their recipe (SGD, lr 0.01, momentum 0.9, weight decay 1e-4, blocks frozen, cross-entropy) so only
what their training changes changes, and `save_like_authors` writes their `model_best_*.pth.tar`
layout. Used by the tests as ground truth; sizes are configurable so it runs fast.
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


def _init_linear(layer: nn.Linear) -> None:
    nn.init.xavier_uniform_(layer.weight)
    nn.init.normal_(layer.bias, std=1e-6)


class AuthorsSLSTT(nn.Module):
    """aggregator 'lstm': LSTM over the T tokens -> fc1 -> ReLU -> fc2; 'mean': vit.fc per frame, averaged.
    Every module is built whatever the aggregator, as in the authors' class."""

    def __init__(self, num_classes: int, aggregator: str = "lstm", dim: int = 192, depth: int = 2,
                 heads: int = 3, image_size: int = 32, patch: int = 16, hidden: int = 32, layers: int = 3,
                 head_hidden: int = 16):
        super().__init__()
        self.aggregator = aggregator
        self.vit = ViT(num_classes, dim, depth, heads, image_size, patch)
        for module in self.vit.modules():
            if isinstance(module, nn.Linear):
                _init_linear(module)
        nn.init.zeros_(self.vit.fc.weight)  # the authors' ViT zero-initialises its classifier
        nn.init.zeros_(self.vit.fc.bias)
        self.lstm = nn.LSTM(dim, hidden, layers)  # sequence-first, as nn.LSTM's default; its own init
        self.fc1 = nn.Linear(hidden, head_hidden)
        self.fc2 = nn.Linear(head_hidden, num_classes)
        _init_linear(self.fc1)
        _init_linear(self.fc2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        tokens = self.vit.features(frames.flatten(0, 1)).view(b, t, -1)
        if self.aggregator == "lstm":
            out, _ = self.lstm(tokens.transpose(0, 1))  # (T, B, hidden)
            return self.fc2(F.relu(self.fc1(out[-1])))
        return self.vit.fc(tokens).mean(dim=1)

    def trained_parameters(self) -> list[nn.Parameter]:
        """What the authors' training updates: blocks run frozen, so the final norm and the aggregation's head."""
        head = [self.lstm, self.fc1, self.fc2] if self.aggregator == "lstm" else [self.vit.fc]
        return [p for m in (self.vit.norm, *head) for p in m.parameters()]


def pretend_pretrained(model: AuthorsSLSTT, seed: int = 0) -> AuthorsSLSTT:
    """Stand-in for loading ImageNet weights into the ViT without its fc (as the authors do): non-trivial
    values for every ViT tensor but `vit.fc`, which keeps its zero init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.vit.named_parameters():
            if name.startswith("fc."):
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def train_like_authors(model: AuthorsSLSTT, steps: int = 4, frames: int = 11, seed: int = 0,
                       lr: float = 0.01) -> AuthorsSLSTT:
    """A few steps of the authors' recipe on random clips: SGD (momentum 0.9, weight decay 1e-4) on
    the parameters their training updates, cross-entropy, dropout on. The rest keeps its values.
    The default lr is the paper's; a larger one makes the trained head's logits clearly non-trivial."""
    g = torch.Generator().manual_seed(seed)
    size = model.vit.patch_embedding.stride[0] * math.isqrt(model.vit.positional_embedding.pos_embedding.shape[1] - 1)
    classes = model.vit.fc.out_features
    trained = {id(p) for p in model.trained_parameters()}
    for p in model.parameters():  # their blocks run without gradients: autograd stops at the final norm
        p.requires_grad_(id(p) in trained)
    optimizer = torch.optim.SGD(model.trained_parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        x = torch.randn(2, frames, 3, size, size, generator=g)
        y = torch.randint(0, classes, (2,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def authors_model(num_classes: int, aggregator: str, seed: int = 0, steps: int = 4, lr: float = 0.01,
                  **sizes) -> AuthorsSLSTT:
    """Built, 'pretrained' and trained as the authors' code would leave it."""
    torch.manual_seed(seed)  # the random init of lstm/fc1/fc2 (and of the ViT before its weights load)
    model = pretend_pretrained(AuthorsSLSTT(num_classes, aggregator, **sizes), seed)
    return train_like_authors(model, steps=steps, seed=seed, lr=lr)


def save_like_authors(model: AuthorsSLSTT, path, epoch: int = 12, best_acc1: float = 61.5, best_f1=None) -> None:
    """Their `model_best_*.pth.tar`: torch.save of epoch, arch, state_dict (DataParallel `module.`
    prefix), best_acc1, best_f1 (a numpy scalar from scikit-learn) and the optimizer state."""
    import numpy as np

    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": epoch, "arch": "vit_b16", "state_dict": state, "best_acc1": torch.tensor(best_acc1),
                "best_f1": np.float64(0.47) if best_f1 is None else best_f1,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}}, path)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values for what the authors' ViT loads and their training of `model.aggregator`
    changes; every other tensor keeps its initial value (as in their files)."""
    if isinstance(model, AuthorsSLSTT):
        pretend_pretrained(model, seed)
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.trained_parameters():
                if p is model.vit.norm.weight:
                    continue  # pretend_pretrained set it
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        return model
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model

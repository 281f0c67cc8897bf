"""The SLSTT network (spec section 2): a timm ViT encodes each frame to its class token, then a
temporal aggregator (LSTM or Mean) turns the T tokens into class logits.

Freezing follows the authors' code: every transformer block runs without gradients, only the
final LayerNorm and the aggregator learn. Dropout inside the blocks (attention and projection
dropout, cfg.drop_rate) is still active in train mode, exactly as in the authors' code, so a frozen
backbone is not deterministic while training. A feature cache (see `trunk`) therefore trades that
dropout noise for speed; callers decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from slstt.config import ModelConfig

if TYPE_CHECKING:  # timm is imported lazily (slow import); the backbone is built in slstt.models.factory
    from timm.models.vision_transformer import VisionTransformer


def init_linear(layer: nn.Linear) -> None:
    """Spec section 2: Xavier-uniform weights, biases ~ N(0, 1e-6)."""
    nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.normal_(layer.bias, std=1e-6)


class SLSTT(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: VisionTransformer):
        super().__init__()
        self.cfg = cfg
        self.backbone: VisionTransformer = backbone  # built with num_classes=0
        dim = backbone.embed_dim
        if cfg.aggregator == "lstm":
            self.lstm = nn.LSTM(dim, cfg.lstm_hidden, cfg.lstm_layers, batch_first=True)
            self.head = nn.Sequential(
                nn.Linear(cfg.lstm_hidden, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, cfg.num_classes)
            )
            for layer in self.head:
                if isinstance(layer, nn.Linear):
                    init_linear(layer)
        else:
            # The authors' `vit.fc`: one Linear per frame on the class token, zero-initialised.
            self.frame_fc = nn.Linear(dim, cfg.num_classes)
            nn.init.zeros_(self.frame_fc.weight)
            nn.init.zeros_(self.frame_fc.bias)
        self.set_trainable(cfg.freeze_backbone, cfg.finetune_blocks)

    # ---- freezing -------------------------------------------------------------------------
    def set_trainable(self, freeze_backbone: bool, finetune_blocks: int = 0) -> None:
        """Frozen: no backbone parameter learns except the final LayerNorm and the last
        `finetune_blocks` transformer blocks. Not frozen: everything learns."""
        blocks = self.backbone.blocks
        if finetune_blocks > len(blocks):
            from slstt.errors import SlsttError

            raise SlsttError(
                f"model.finetune_blocks={finetune_blocks} but {self.cfg.backbone} has only {len(blocks)} blocks"
            )
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze_backbone)
        if freeze_backbone:
            for p in self.backbone.norm.parameters():
                p.requires_grad_(True)
            for block in list(blocks)[len(blocks) - finetune_blocks :]:
                for p in block.parameters():
                    p.requires_grad_(True)

    @property
    def num_frozen_blocks(self) -> int:
        """Leading blocks (after a frozen stem) that have no trainable parameter; they run under no_grad."""
        if self._stem_needs_grad():
            return 0
        count = 0
        for block in self.backbone.blocks:
            if any(p.requires_grad for p in block.parameters()):
                break
            count += 1
        return count

    @property
    def backbone_frozen(self) -> bool:
        """True when everything before the final LayerNorm is frozen, so `trunk` outputs can be cached."""
        return self.num_frozen_blocks == len(self.backbone.blocks)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def _stem_parameters(self) -> list[nn.Parameter]:
        bb = self.backbone
        return [p for name, p in bb.named_parameters() if not name.startswith(("blocks.", "norm."))]

    # ---- forward --------------------------------------------------------------------------
    def trunk(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, D) class tokens BEFORE the final LayerNorm.

        LayerNorm acts per token, so with a frozen backbone these tokens can be cached and
        `aggregate_trunk` gives the same logits as `forward` (in eval mode). Cache these, not
        `encode` outputs: the final LayerNorm is trainable. Frozen blocks run under no_grad, so
        no gradient reaches the input frames through them."""
        b, t = frames.shape[:2]
        x = frames.flatten(0, 1)
        bb = self.backbone
        n_frozen = self.num_frozen_blocks
        # Frozen parts run without autograd: the authors' memory saving, same numbers.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._stem_needs_grad()):
            x = bb.patch_embed(x)
            x = bb._pos_embed(x)
            x = bb.patch_drop(x)
            x = bb.norm_pre(x)
        blocks = list(bb.blocks)
        if n_frozen:
            with torch.no_grad():
                for block in blocks[:n_frozen]:
                    x = block(x)
        for block in blocks[n_frozen:]:
            x = block(x)
        return x[:, 0].reshape(b, t, -1)

    def _stem_needs_grad(self) -> bool:
        return any(p.requires_grad for p in self._stem_parameters())

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, D): each frame's class token after the final LayerNorm."""
        return self.backbone.norm(self.trunk(frames))

    def aggregate(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, D) normalised class tokens -> (B, C) logits."""
        if self.cfg.aggregator == "lstm":
            out, _ = self.lstm(features)
            return self.head(out[:, -1])
        return self.frame_fc(features).mean(dim=1)

    def aggregate_trunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits from cached `trunk` tokens: final LayerNorm (trainable) then the aggregator."""
        return self.aggregate(self.backbone.norm(tokens))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.encode(frames))

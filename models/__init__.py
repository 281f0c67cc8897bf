"""slstt.models: the SLSTT network, its creation (timm ViT + weights) and checkpoints (project + authors')."""

from slstt.models.authors import load_authors_checkpoint
from slstt.models.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from slstt.models.factory import create_model
from slstt.models.slstt import SLSTT

__all__ = ["SLSTT", "LoadedCheckpoint", "create_model", "load_authors_checkpoint", "load_checkpoint", "save_checkpoint"]

"""The heads of both methods under mmdet's usual name (each lives in its paper's package)."""
from .instalign.instalign_head import InstAlignHead
from .latent_vg.latentvg_head import LatentVGHead

__all__ = ['LatentVGHead', 'InstAlignHead']

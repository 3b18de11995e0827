"""The heads of both methods under mmdet's usual name (each lives in its paper's package) and
their shared skeleton, :class:`BaseRefHead`."""
from .base_ref_head import BaseRefHead
from .instalign.instalign_head import InstAlignHead
from .latent_vg.latentvg_head import LatentVGHead

__all__ = ['BaseRefHead', 'LatentVGHead', 'InstAlignHead']

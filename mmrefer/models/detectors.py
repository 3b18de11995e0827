"""The detectors of both methods under mmdet's usual name (each lives in its paper's package)."""
from .instalign.instalign import InstAlign
from .latent_vg.latent_vg import LatentVG

__all__ = ['LatentVG', 'InstAlign']

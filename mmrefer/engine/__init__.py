"""Runner hooks (the visualisation hook lives in mmrefer.visualization)."""
from .rng_state_hook import RNGStateHook

__all__ = ['RNGStateHook']

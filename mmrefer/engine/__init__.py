"""Runner hooks (the visualisation hook lives in mmrefer.visualization)."""
from .autocast_optim_wrapper import AutocastOptimWrapper
from .rng_state_hook import RNGStateHook

__all__ = ['AutocastOptimWrapper', 'RNGStateHook']

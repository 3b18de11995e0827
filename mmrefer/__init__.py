"""mmrefer: referring-expression grounding (RIS / REC / GRES) for OpenMMLab."""
from .version import __version__
from .utils.checkpoint_compat import install_checkpoint_shim

# torch>=2.6 loads with weights_only=True; mmengine 0.10.7 calls torch.load bare. Allow-list the
# globals mmengine checkpoints hold, once, at import (see utils/checkpoint_compat.py).
install_checkpoint_shim()

__all__ = ['__version__']

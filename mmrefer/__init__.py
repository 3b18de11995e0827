"""mmrefer: referring-expression grounding (RIS / REC / GRES) for OpenMMLab.

Importing it registers nothing outside mmrefer's own registries and patches nothing in torch,
mmengine or mmdet; safe checkpoint loading is installed where mmrefer loads checkpoints
(``mmrefer.utils.safe_checkpoint_loading``).
"""
from .version import __version__

__all__ = ['__version__']

"""mmrefer models: the shared encoders and one package per paper.

    from mmrefer.models import LatentVG, InstAlign, BEiT3, LatentVGHead, InstAlignHead
"""
import mmdet.models  # noqa: F401  (mmdet's registry entries: SwinTransformer, losses, costs)

from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .base_ref_head import BaseRefHead
from .data_preprocessor import RefDataPreprocessor
from .instalign import *  # noqa: F401,F403
from .instalign import __all__ as _instalign
from .language_models import *  # noqa: F401,F403
from .language_models import __all__ as _language_models
from .latent_vg import *  # noqa: F401,F403
from .latent_vg import __all__ as _latent_vg

__all__ = _backbones + _language_models + _latent_vg + _instalign + ['RefDataPreprocessor',
                                                                     'BaseRefHead']

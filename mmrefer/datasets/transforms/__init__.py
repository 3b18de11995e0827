from .formatting import PackRefInputs
from .loading import LoadRefAnnotations, LoadRefImageFromFile, decode_ref_mask
from .resize import RefResize
from .tokenize import TokenizeText

__all__ = ['LoadRefImageFromFile', 'LoadRefAnnotations', 'decode_ref_mask', 'RefResize',
           'TokenizeText', 'PackRefInputs']

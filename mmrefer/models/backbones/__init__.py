from .beit3 import BEiT3
from .swin import SDPASwinTransformer, SDPAWindowMSA

__all__ = ['BEiT3', 'SDPASwinTransformer', 'SDPAWindowMSA']

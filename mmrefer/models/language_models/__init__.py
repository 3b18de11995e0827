from .beit3_tokenizer import BEiT3Tokenizer
from .text_encoder import HFTextEncoder

__all__ = ['BEiT3Tokenizer', 'HFTextEncoder']

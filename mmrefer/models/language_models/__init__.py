"""Shared text side: the BEiT-3 sentencepiece and transformers tokenizer components, the
transformers text encoder, and the one text path both detectors call."""
from .beit3_tokenizer import BEiT3Tokenizer
from .hf_tokenizer import HFTokenizer
from .text_encoder import HFTextEncoder
from .text_path import build_tokenizer, model_tokenizer, token_words, tokenize_samples

__all__ = ['BEiT3Tokenizer', 'HFTokenizer', 'HFTextEncoder', 'build_tokenizer',
           'model_tokenizer', 'tokenize_samples', 'token_words']

"""``TokenizeText``: optional pre-tokenisation of ``results['text']`` in the pipeline.

Two tokenizer kinds, each read from a local path (never a hub download):

* ``sentencepiece`` (a ``.spm`` / ``.model`` file, BEiT-3 / XLM-R layout): ids are
  ``[<s>=0] + (piece id + 1, <unk>=3) + [</s>=2]``, padded with ``<pad>=1`` (fairseq offset).
* ``hf`` (a transformers tokenizer directory, e.g. RoBERTa ``vocab.json`` + ``merges.txt``):
  ``AutoTokenizer.from_pretrained(dir, local_files_only=True)`` with ``truncation`` and
  ``padding='max_length'``.

Stores ``input_ids`` (int64 [max_length]) and ``attention_mask`` (int64 [max_length], 1 = real
token). Over-long sentences are truncated (keeping the end token); the first truncation warns
and the running count is reported again at 10, 100, 1000, ... truncations.
"""
import logging
import os.path as osp
from typing import Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmrefer.registry import TRANSFORMS

__all__ = ['TokenizeText', 'build_text_tokenizer']


class _SentencePieceTokenizer:
    """BEiT-3 style ids from a sentencepiece model (version-proof, no transformers)."""
    bos, pad, eos, unk = 0, 1, 2, 3

    def __init__(self, path: str):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=path)

    def __call__(self, text: str, max_length: int):
        unk = self.sp.unk_id()
        ids = [self.unk if p == unk else p + 1 for p in self.sp.encode(text)]
        truncated = len(ids) > max_length - 2
        ids = [self.bos] + ids[:max_length - 2] + [self.eos]
        return ids, truncated, self.pad


class _HFTokenizer:

    def __init__(self, path: str):
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)

    def __call__(self, text: str, max_length: int):
        full = self.tok(text, add_special_tokens=True)['input_ids']
        ids = self.tok(text, add_special_tokens=True, truncation=True,
                       max_length=max_length)['input_ids']
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        return list(ids), len(full) > max_length, pad


def build_text_tokenizer(tokenizer: Union[str, dict]):
    """``tokenizer``: a path (a file -> sentencepiece, a directory -> transformers) or
    ``dict(type='sentencepiece'|'hf', path=...)``."""
    if isinstance(tokenizer, str):
        tokenizer = dict(type='sentencepiece' if osp.isfile(tokenizer) else 'hf', path=tokenizer)
    kind, path = tokenizer.get('type'), tokenizer.get('path')
    if path is None or not osp.exists(path):
        raise FileNotFoundError(f'TokenizeText: tokenizer path {path!r} does not exist')
    if kind == 'sentencepiece':
        if not osp.isfile(path):
            raise ValueError(f'TokenizeText: sentencepiece tokenizer needs a model file, got '
                             f'directory {path!r}')
        return _SentencePieceTokenizer(path)
    if kind == 'hf':
        return _HFTokenizer(path)
    raise ValueError(f"TokenizeText: unknown tokenizer type {kind!r}; use 'sentencepiece' or "
                     "'hf'")


@TRANSFORMS.register_module()
class TokenizeText(BaseTransform):
    """Tokenize ``results['text']`` to fixed-length ``input_ids`` / ``attention_mask``.

    Args:
        tokenizer (str | dict): see :func:`build_text_tokenizer`; loaded lazily.
        max_length (int): output length including the begin/end tokens.
        lower_case (bool): lower-case the sentence first (as the models' ``lower_case``).
    """

    def __init__(self, tokenizer: Union[str, dict], max_length: int = 20,
                 lower_case: bool = False):
        if max_length < 3:
            raise ValueError(f'TokenizeText: max_length must be >= 3, got {max_length}')
        self.tokenizer_cfg = tokenizer
        self.max_length = max_length
        self.lower_case = lower_case
        self._tok = None
        self.num_truncated = 0

    def transform(self, results: dict) -> dict:
        if 'text' not in results:
            raise KeyError('TokenizeText: results has no "text"')
        if self._tok is None:
            self._tok = build_text_tokenizer(self.tokenizer_cfg)
        text = results['text'].lower() if self.lower_case else results['text']
        ids, truncated, pad = self._tok(text, self.max_length)
        if truncated:
            self.num_truncated += 1
            n = self.num_truncated
            if n == 1 or (n >= 10 and np.log10(n).is_integer()):
                print_log(f'TokenizeText: {n} sentence(s) truncated to max_length='
                          f'{self.max_length} so far (latest: {results["text"]!r})',
                          logger='current', level=logging.WARNING)
        n = len(ids)
        input_ids = np.full(self.max_length, pad, np.int64)
        input_ids[:n] = ids
        mask = np.zeros(self.max_length, np.int64)
        mask[:n] = 1
        results['input_ids'] = input_ids
        results['attention_mask'] = mask
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(tokenizer={self.tokenizer_cfg!r}, ' \
               f'max_length={self.max_length}, lower_case={self.lower_case})'

"""``TokenizeText``: optional tokenisation of ``results['text']`` in the pipeline, with the model's
own tokenizer component (so the id rule and ``lower_case`` are written once, in the tokenizer).

``tokenizer`` is a tokenizer config dict (``dict(type='BEiT3Tokenizer', spm_path=...,
lower_case=...)`` or ``dict(type='HFTokenizer', path=..., lower_case=...)``, as in the model
config) or a local path (a sentencepiece file -> :class:`BEiT3Tokenizer`, a transformers
tokenizer directory -> :class:`HFTokenizer`); never a hub download.

Stores ``input_ids`` and ``attention_mask`` (int64 ``[max_length]``, 1 = token) and
``token_offsets`` (int64 ``[max_length, 2]``: each token's character span in the sentence).
Over-long sentences are truncated (keeping the end token); the first truncation warns and the
running count is reported again at 10, 100, 1000, ... truncations.
"""
import logging
import os.path as osp
import warnings
from typing import Union

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmrefer.registry import TRANSFORMS

__all__ = ['TokenizeText']


@TRANSFORMS.register_module()
class TokenizeText(BaseTransform):
    """Tokenize ``results['text']`` to fixed-length ``input_ids`` / ``attention_mask``.

    Args:
        tokenizer (str | dict): the model's tokenizer config, or a path (see module doc);
            built lazily (the file is read at the first sample).
        max_length (int): output length including the begin/end tokens (overrides the
            config's).
    """

    def __init__(self, tokenizer: Union[str, dict], max_length: int = 20):
        if max_length < 3:
            raise ValueError(f'TokenizeText: max_length must be >= 3, got {max_length}')
        if isinstance(tokenizer, str) and not osp.exists(tokenizer):
            raise FileNotFoundError(f'TokenizeText: tokenizer path {tokenizer!r} does not exist')
        self.tokenizer_cfg = tokenizer
        self.max_length = max_length
        self._tok = None
        self._warned_at = 0

    @property
    def num_truncated(self) -> int:
        return 0 if self._tok is None else self._tok.num_truncated

    def transform(self, results: dict) -> dict:
        if 'text' not in results:
            raise KeyError('TokenizeText: results has no "text"')
        if self._tok is None:
            from mmrefer.models.language_models import build_tokenizer
            self._tok = build_tokenizer(self.tokenizer_cfg, self.max_length)
        with warnings.catch_warnings():  # reported below through the logger instead
            warnings.simplefilter('ignore', UserWarning)
            out = self._tok([results['text']])
        n = self._tok.num_truncated
        if n > self._warned_at and (n == 1 or (n >= 10 and np.log10(n).is_integer())):
            self._warned_at = n
            print_log(f'TokenizeText: {n} sentence(s) truncated to max_length='
                      f'{self.max_length} so far (latest: {results["text"]!r})',
                      logger='current', level=logging.WARNING)
        results['input_ids'] = out['input_ids'][0].numpy().astype(np.int64)
        results['attention_mask'] = out['attention_mask'][0].numpy().astype(np.int64)
        results['token_offsets'] = np.asarray(out['offsets'][0], np.int64).reshape(-1, 2)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(tokenizer={self.tokenizer_cfg!r}, ' \
               f'max_length={self.max_length})'

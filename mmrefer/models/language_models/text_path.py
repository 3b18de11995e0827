"""The one text path of both detectors: data samples -> token ids on the device.

A sample's sentence is its ``text`` metainfo; ``TokenizeText`` may already have tokenized it in
the pipeline (``input_ids``, ``attention_mask``, ``token_offsets`` in the metainfo), with the same
tokenizer component the model uses (:class:`BEiT3Tokenizer` or :class:`HFTokenizer`), so the id
rule and ``lower_case`` are set once, in the tokenizer's config.

:func:`tokenize_samples` returns ``input_ids`` / ``attention_mask`` ``[B, L]`` (1 = token),
``offsets`` (per token ``(start, end)`` in the sentence) and ``texts``; :func:`token_words` turns
offsets into the words shown next to a prediction.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from mmrefer.registry import TASK_UTILS
from .beit3_tokenizer import BEiT3Tokenizer
from .hf_tokenizer import HFTokenizer

__all__ = ['build_tokenizer', 'model_tokenizer', 'tokenize_samples', 'token_words']


def build_tokenizer(tokenizer: Union[str, dict], max_length: Optional[int] = None):
    """A tokenizer component from a config dict (``type='BEiT3Tokenizer'`` / ``'HFTokenizer'``)
    or a path (a file: a BEiT-3 sentencepiece model; a directory: a transformers tokenizer).
    ``max_length`` overrides the config's."""
    if isinstance(tokenizer, str):
        tokenizer = (dict(type='BEiT3Tokenizer', spm_path=tokenizer) if osp.isfile(tokenizer)
                     else dict(type='HFTokenizer', path=tokenizer))
    if not isinstance(tokenizer, dict) or 'type' not in tokenizer:
        raise TypeError(f'tokenizer must be a path or a config dict with a type, got '
                        f'{tokenizer!r}')
    if TASK_UTILS.get(tokenizer['type']) not in (BEiT3Tokenizer, HFTokenizer):
        raise ValueError(f"tokenizer type {tokenizer['type']!r} is not a tokenizer component; "
                         "use dict(type='BEiT3Tokenizer', spm_path=...) or "
                         "dict(type='HFTokenizer', path=...)")
    cfg = dict(tokenizer)
    if max_length is not None:
        cfg['max_length'] = max_length
    return TASK_UTILS.build(cfg)


def model_tokenizer(model):
    """A detector's tokenizer component: Latent-VG's ``model.tokenizer``, InstAlign's
    ``model.text_encoder.tokenizer`` (None for a model with neither)."""
    tok = getattr(model, 'tokenizer', None)
    if tok is None:
        tok = getattr(getattr(model, 'text_encoder', None), 'tokenizer', None)
    return tok


def _metainfo_ids(metas: List[dict], pad_token_id: int, length: int):
    ids, masks, offsets = [], [], []
    for i, m in enumerate(metas):
        row = torch.as_tensor(m['input_ids'], dtype=torch.long).flatten()
        if row.numel() != length:
            raise ValueError(f'data sample {i} has {row.numel()} input_ids but the model reads '
                             f'{length} (its tokenizer max_length); tokenize with the same '
                             'max_length in TokenizeText')
        if 'attention_mask' in m:
            mask = torch.as_tensor(m['attention_mask']).flatten().long()
        elif 'padding_mask' in m:
            mask = (~torch.as_tensor(m['padding_mask']).flatten().bool()).long()
        else:
            mask = (row != pad_token_id).long()
        ids.append(row)
        masks.append(mask)
        spans = m.get('token_offsets')
        offsets.append(None if spans is None else [tuple(int(v) for v in s) for s in spans])
    return torch.stack(ids), torch.stack(masks), (None if any(o is None for o in offsets)
                                                  else offsets)


def tokenize_samples(tokenizer, data_samples: Sequence, device=None) -> Dict[str, object]:
    """Token ids of the samples' sentences, from their metainfo ``input_ids`` when every sample
    has them, else by running ``tokenizer`` on their ``text``.

    Returns:
        dict: ``input_ids`` / ``attention_mask`` LongTensor ``[B, L]`` on ``device``,
        ``offsets`` (list of ``L`` spans per sample, or None when pre-tokenized ids came without
        them) and ``texts`` (list of str or None).
    """
    metas = [ds.metainfo for ds in data_samples]
    texts = [m.get('text') for m in metas]
    if metas and all('input_ids' in m for m in metas):
        ids, mask, offsets = _metainfo_ids(metas, tokenizer.pad_token_id, tokenizer.max_length)
    else:
        missing = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if missing:
            raise KeyError(f'data samples {missing} have no str metainfo "text" (nor input_ids); '
                           f'img_path={metas[missing[0]].get("img_path")}')
        out = tokenizer(texts)
        ids, mask, offsets = out['input_ids'], out['attention_mask'], out['offsets']
    # non-blocking: a blocking host -> device copy waits for the whole CUDA stream
    return dict(input_ids=ids.to(device, non_blocking=True),
                attention_mask=mask.to(device, non_blocking=True), offsets=offsets, texts=texts)


def token_words(texts: Sequence[Optional[str]],
                offsets: Optional[Sequence[Sequence[Tuple[int, int]]]]) -> Optional[List[List[str]]]:
    """Per sample, the text of every token position (``''`` for special tokens and pads), cut
    from the sentence by the token offsets; None when offsets or texts are unknown."""
    if offsets is None or any(t is None for t in texts):
        return None
    return [[t[a:b].strip() for a, b in spans] for t, spans in zip(texts, offsets)]

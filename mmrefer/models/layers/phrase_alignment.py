"""Phrase-Object Alignment (InstAlign section 3.3.1, Eq. 1-3).

For queries Q [B, N, C] and word features T [B, L, C] of one Phrase-Object Transformer block:

    R = softmax(Q T^T / sqrt(C))        [B, N, L]  (softmax over the valid words)
    P = R T                             [B, N, C]  soft phrase feature of every query
    L_phrase(i) = 1 - cos(P_i, Q_i)     [B, N]

No parser is involved: ``R`` picks, per query, the words that describe it; its argmax rows give the
``aligned_words`` shown for visualisation.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def phrase_object_alignment(queries: Tensor, words: Tensor,
                            word_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Compute ``R``, ``P`` and the per-query alignment cost ``1 - cos(P_i, Q_i)``.

    Args:
        queries (Tensor): Q, shape [B, N, C].
        words (Tensor): T, shape [B, L, C].
        word_mask (Tensor, optional): [B, L], nonzero for real tokens (padding is excluded).

    Returns:
        tuple: ``R`` [B, N, L], ``P`` [B, N, C], ``cost`` [B, N].
    """
    if queries.dim() != 3 or words.dim() != 3 or queries.shape[-1] != words.shape[-1] \
            or queries.shape[0] != words.shape[0]:
        raise ValueError('phrase_object_alignment: need queries [B,N,C] and words [B,L,C], got '
                         f'{tuple(queries.shape)} and {tuple(words.shape)}')
    logits = torch.einsum('bnc,blc->bnl', queries, words) / math.sqrt(queries.shape[-1])
    if word_mask is not None:
        logits = logits.masked_fill(~word_mask.bool()[:, None, :], float('-inf'))
    relevance = logits.softmax(-1)
    phrases = torch.einsum('bnl,blc->bnc', relevance, words)
    cost = 1 - F.cosine_similarity(phrases, queries, dim=-1)
    return relevance, phrases, cost

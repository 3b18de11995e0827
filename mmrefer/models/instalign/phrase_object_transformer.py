"""Phrase-Object Transformer (InstAlign section 3.3).

K blocks refine N object queries Q [B, N, C] and the word features T [B, L, C]. Block k reads the
pixel features V_k [B, H_k*W_k, C] of scale ``k % num_levels`` (round robin, low to high res as in
Mask2Former) and runs, in order:

    1. Q <- LN(Q + CrossAttn(Q, V_k))                (optionally masked by the previous masks)
    2. Object-Text Cross Attention (bidirectional, both from this layer's inputs: the queries
       of step 1 and the block's input text):
           Q <- LN(Q + Attn(Q, T, T)),   T <- LN(T + Attn(T, Q, Q))
    3. Q <- LN(Q + SelfAttn(Q))
    4. Q <- LN(Q + FFN(Q))

``text_mode`` switches step 2 for the decoder ablation: ``'bidirectional'`` (POT), ``'query_only'``
(ReLA-style: queries read the text, the text is never updated) and ``'none'`` (the plain
Mask2Former decoder, no text at all).

Phrase-Object Alignment (section 3.3.1, Eq. 1-3), computed on the queries and words after every
block (:func:`phrase_object_alignment`)::

    R = softmax(Q T^T / sqrt(C))        [B, N, L]  (softmax over the valid words)
    P = R T                             [B, N, C]  soft phrase feature of every query
    L_phrase(i) = 1 - cos(P_i, Q_i)     [B, N]

No parser is involved: ``R`` picks, per query, the words that describe it; its largest entries
give the ``aligned_words`` shown for visualisation (:func:`aligned_words`).
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrefer.registry import MODELS
from ..mixed_precision import fp32_island

TEXT_MODES = ('bidirectional', 'query_only', 'none')


@fp32_island
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



def aligned_words(relevance: Tensor, words: Optional[List[List[str]]],
                  topk: int) -> List[List[List[str]]]:
    """The words each query aligns to: per image and query its ``topk`` non-empty words of
    highest relevance, best first.

    Args:
        relevance (Tensor): R of the queries to describe, [B, k, L].
        words (list[list[str]], optional): per image and token position the word
            (``token_words``: ``''`` for special tokens and pads, which never count).
        topk (int): words per query.

    Returns:
        list: ``[B][k]`` lists of at most ``topk`` words; ``[]`` per image without ``words``.
    """
    if words is None:
        return [[] for _ in range(len(relevance))]
    L = relevance.shape[-1]
    bad = [i for i, row in enumerate(words) if len(row) != L]
    if bad:
        raise ValueError(f'aligned_words: words of sample {bad[0]} have '
                         f'{len(words[bad[0]])} positions, the text has {L} tokens')
    valid = torch.tensor([[bool(w) for w in row] for row in words], dtype=torch.bool)
    n_valid = valid.sum(1).tolist()  # a host tensor: no device sync
    rel = relevance.masked_fill(~valid.to(relevance.device, non_blocking=True)[:, None], -1)
    idx = rel.topk(min(topk, L), dim=-1).indices.cpu()
    return [[[words[b][j] for j in row[:n_valid[b]].tolist()] for row in idx[b]]
            for b in range(len(words))]

class PhraseObjectTransformerLayer(nn.Module):
    """One POT block. Args: embed_dims C, num_heads, ffn_dims, dropout, text_mode."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, ffn_dims: int = 2048,
                 dropout: float = 0.0, text_mode: str = 'bidirectional'):
        super().__init__()
        if text_mode not in TEXT_MODES:
            raise ValueError(f'PhraseObjectTransformer: text_mode must be one of {TEXT_MODES}, '
                             f'got {text_mode!r}')
        self.text_mode = text_mode

        def mha():
            return nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)

        self.pixel_attn, self.pixel_norm = mha(), nn.LayerNorm(embed_dims)
        if text_mode != 'none':
            self.q2t_attn, self.q2t_norm = mha(), nn.LayerNorm(embed_dims)
        if text_mode == 'bidirectional':
            self.t2q_attn, self.t2q_norm = mha(), nn.LayerNorm(embed_dims)
        self.self_attn, self.self_norm = mha(), nn.LayerNorm(embed_dims)
        self.ffn = nn.Sequential(nn.Linear(embed_dims, ffn_dims), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(ffn_dims, embed_dims))
        self.ffn_norm = nn.LayerNorm(embed_dims)

    def forward(self, query: Tensor, query_pos: Tensor, pixels: Tensor, pixel_pos: Tensor,
                text: Tensor, text_mask: Tensor,
                attn_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Args:
            query, query_pos: [B, N, C]; pixels, pixel_pos: [B, HW, C];
            text: [B, L, C]; text_mask: [B, L] (nonzero = valid word);
            attn_mask: bool [B*heads, N, HW], True = not attended (Mask2Former masked attention).
        Returns: refined (query [B, N, C], text [B, L, C]).
        """
        q = query
        q = self.pixel_norm(q + self.pixel_attn(
            q + query_pos, pixels + pixel_pos, pixels, attn_mask=attn_mask,
            need_weights=False)[0])
        if self.text_mode != 'none':
            pad = ~text_mask.bool()
            q_in = q
            q = self.q2t_norm(q + self.q2t_attn(q_in + query_pos, text, text,
                                                key_padding_mask=pad, need_weights=False)[0])
            if self.text_mode == 'bidirectional':
                text = self.t2q_norm(text + self.t2q_attn(text, q_in + query_pos, q_in,
                                                          need_weights=False)[0])
        qk = q + query_pos
        q = self.self_norm(q + self.self_attn(qk, qk, q, need_weights=False)[0])
        q = self.ffn_norm(q + self.ffn(q))
        return q, text


@MODELS.register_module()
class PhraseObjectTransformer(nn.Module):
    """Stack of K :class:`PhraseObjectTransformerLayer` blocks (round robin over scales).

    It holds the blocks; :class:`InstAlignHead` runs them (block k reads scale
    ``level_of(k)`` and the head's prediction hook runs after each block), as mmdet's
    ``Mask2FormerHead`` runs the layers of its decoder.

    Args:
        num_layers (int): K (9 in the paper).
        num_levels (int): number of pixel-decoder scales fed round robin (3).
        embed_dims, num_heads, ffn_dims, dropout, text_mode: see the layer.
    """

    def __init__(self, num_layers: int = 9, num_levels: int = 3, embed_dims: int = 256,
                 num_heads: int = 8, ffn_dims: int = 2048, dropout: float = 0.0,
                 text_mode: str = 'bidirectional'):
        super().__init__()
        if num_layers < 1 or num_levels < 1:
            raise ValueError('PhraseObjectTransformer: num_layers and num_levels must be >= 1, '
                             f'got {num_layers}, {num_levels}')
        self.num_layers, self.num_levels = num_layers, num_levels
        self.embed_dims, self.num_heads, self.text_mode = embed_dims, num_heads, text_mode
        self.layers = nn.ModuleList(
            PhraseObjectTransformerLayer(embed_dims, num_heads, ffn_dims, dropout, text_mode)
            for _ in range(num_layers))

    def init_weights(self) -> None:
        """Xavier-uniform on every weight matrix (called by the head's ``init_weights``)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def level_of(self, k: int) -> int:
        """Scale index read by block k (0-based)."""
        return k % self.num_levels

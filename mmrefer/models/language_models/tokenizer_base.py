"""What both tokenizer components share: argument checks, truncation to ``max_length`` keeping
the closing special token, the warned-once truncation count, and packing the rows into
``input_ids`` / ``attention_mask`` ``[B, max_length]`` (1 = token) with per-token character
offsets (``(0, 0)`` for special tokens and pads)."""
import warnings
from typing import Dict, List, Sequence, Tuple, Union

import torch

Span = Tuple[int, int]


class BaseRefTokenizer:
    """Base of :class:`BEiT3Tokenizer` and :class:`HFTokenizer`.

    Subclasses implement ``encode_rows(texts) -> (rows, spans)``: per sentence the ids *with* the
    begin / end special tokens and one character span per id; and ``pad_token_id``.
    """

    def __init__(self, max_length: int, lower_case: bool, min_length: int = 3):
        if not isinstance(max_length, int) or max_length < min_length:
            raise ValueError(f'{type(self).__name__}: max_length must be an int >= {min_length} '
                             f'(room for the special tokens), got {max_length!r}')
        self.max_length = max_length
        self.lower_case = lower_case
        self.num_truncated = 0  # sentences cut to max_length so far

    @staticmethod
    def as_texts(texts: Union[str, Sequence[str]], owner: str) -> List[str]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f'{owner}: texts[{i}] is {type(t).__name__}, not str')
        return texts

    def __call__(self, texts: Union[str, Sequence[str]]) -> Dict[str, object]:
        """Returns ``input_ids`` / ``attention_mask`` LongTensor ``[B, max_length]`` and
        ``offsets`` (per sentence, ``max_length`` character spans)."""
        rows, spans = self.encode_rows(self.as_texts(texts, type(self).__name__))
        n = self.max_length
        cut = sum(len(r) > n for r in rows)
        if cut:
            if self.num_truncated == 0:
                warnings.warn(f'{type(self).__name__}: sentences longer than max_length={n} '
                              'tokens are truncated (warned once; the count is in '
                              '.num_truncated)')
            self.num_truncated += cut
        ids = torch.full((len(rows), n), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        offsets: List[List[Span]] = []
        for i, (row, span) in enumerate(zip(rows, spans)):
            if len(row) > n:  # keep the closing special token
                row, span = row[:n - 1] + row[-1:], span[:n - 1] + span[-1:]
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
            offsets.append([tuple(int(v) for v in s) for s in span] + [(0, 0)] * (n - len(span)))
        return dict(input_ids=ids, attention_mask=mask, offsets=offsets)

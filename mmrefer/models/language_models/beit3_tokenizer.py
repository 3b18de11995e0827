"""BEiT-3 tokenizer: XLM-R sentencepiece (``beit3.spm``) with fairseq ids, no transformers.

Id rule (fairseq dictionary on top of the sentencepiece model, as ``XLMRobertaTokenizer``)::

    <s> = 0, <pad> = 1, </s> = 2, <unk> = 3, piece p -> p + 1 (p != sp.unk_id()), <mask> = |sp| + 1

A sentence becomes ``[<s>] pieces[:max_length - 2] [</s>]`` padded with ``<pad>`` to
``max_length``; ``padding_mask`` is True at pads (BEiT-3's ``text_padding_position``),
``attention_mask`` is its complement (1 = token, the transformers convention) and ``offsets``
gives each token's ``(start, end)`` character span in the sentence (``(0, 0)`` for ``<s>``,
``</s>`` and pads), so words for display come from the sentence itself.

This is the one place the BEiT-3 id rule is written: the detector (``LatentVG``) and the
pipeline (``TokenizeText``) both call it.
"""
import os.path as osp
from typing import Dict, List, Sequence, Tuple, Union

import torch

from mmrefer.registry import MODELS, TASK_UTILS
from .tokenizer_base import BaseRefTokenizer


@TASK_UTILS.register_module()
class BEiT3Tokenizer(BaseRefTokenizer):
    """Tokenize sentences for :class:`~mmrefer.models.backbones.BEiT3`.

    Args:
        spm_path (str): local sentencepiece model (the official ``beit3.spm``). Read lazily on
            the first call, so building a config never needs the file.
        max_length (int): output length ``L`` including ``<s>`` and ``</s>`` (>= 2).
        lower_case (bool): lower-case sentences before encoding. The official model is cased
            (default False); the from-scratch SynthRef configs set it so that "Red circle" and
            "red circle" share pieces.
    """
    bos_token_id = 0
    pad_token_id = 1
    eos_token_id = 2
    unk_token_id = 3
    fairseq_offset = 1

    def __init__(self, spm_path: str, max_length: int = 20, lower_case: bool = False):
        super().__init__(max_length, lower_case, min_length=2)
        self.spm_path = spm_path
        self._sp = None

    @property
    def sp(self):
        """The sentencepiece processor, loaded on first use."""
        if self._sp is None:
            path = osp.expanduser(str(self.spm_path))
            if not osp.isfile(path):
                raise FileNotFoundError(f'BEiT3Tokenizer: sentencepiece model not found: '
                                        f'{self.spm_path!r} (spm_path; the official file is '
                                        'beit3.spm from microsoft/unilm beit3)')
            import sentencepiece as spm
            self._sp = spm.SentencePieceProcessor(model_file=path)
        return self._sp

    @property
    def mask_token_id(self) -> int:
        return self.sp.get_piece_size() + self.fairseq_offset

    def __len__(self) -> int:
        """Number of ids in use (pieces + ``<pad>`` + ``<mask>``), e.g. 64002 for beit3.spm."""
        return self.mask_token_id + 1

    def encode(self, text: str) -> List[int]:
        """Piece ids of one sentence (fairseq numbering, no ``<s>``/``</s>``)."""
        return self.encode_with_offsets(text)[0]

    def encode_with_offsets(self, text: str) -> Tuple[List[int], List[Tuple[int, int]]]:
        """Piece ids (fairseq numbering) and each piece's ``(start, end)`` character span."""
        unk = self.sp.unk_id()
        proto = self.sp.encode(text.lower() if self.lower_case else text,
                               out_type='proto')
        # sentencepiece spans are byte offsets into the UTF-8 text: map them to characters
        char_of_byte = [i for i, ch in enumerate(text) for _ in ch.encode('utf-8')]
        char_of_byte.append(len(text))
        ids, spans = [], []
        for piece in proto.pieces:
            ids.append(self.unk_token_id if piece.id == unk else piece.id + self.fairseq_offset)
            spans.append((char_of_byte[min(piece.begin, len(char_of_byte) - 1)],
                          char_of_byte[min(piece.end, len(char_of_byte) - 1)]))
        return ids, spans

    def encode_rows(self, texts: List[str]):
        """``[<s>] pieces [</s>]`` and their character spans per sentence."""
        rows, spans = [], []
        for i, text in enumerate(texts):
            pieces, span = self.encode_with_offsets(text) if text.strip() else ([], [])
            if not pieces:
                raise ValueError(f'BEiT3Tokenizer: texts[{i}] is empty ({text!r})')
            rows.append([self.bos_token_id] + pieces + [self.eos_token_id])
            spans.append([(0, 0)] + span + [(0, 0)])
        return rows, spans

    def __call__(self, texts: Union[str, Sequence[str]]) -> Dict[str, torch.Tensor]:
        """Returns ``input_ids`` LongTensor[B, L], ``attention_mask`` LongTensor[B, L] (1 at
        tokens), ``padding_mask`` BoolTensor[B, L] (True at pads: BEiT-3's
        ``text_padding_position``) and ``offsets`` (``L`` character spans per sentence)."""
        out = super().__call__(texts)
        out['padding_mask'] = out['attention_mask'] == 0
        return out


MODELS.register_module(module=BEiT3Tokenizer)

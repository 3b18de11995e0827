"""Tokenizer of the transformers text encoders (RoBERTa / BERT), read from a local directory.

One sentence becomes ``[<s>] tokens [</s>]`` (BERT: ``[CLS] ... [SEP]``) padded to
``max_length``; an over-long sentence keeps its first ``max_length - 2`` tokens and its closing
special token. Returns ``input_ids`` and ``attention_mask`` ``[B, L]`` (1 = token) and, for every
token, its ``(start, end)`` character span in the sentence (``(0, 0)`` for special tokens and
pads), from the fast tokenizer's offset mapping.

This is the one place transformers tokenization is written: ``HFTextEncoder`` (InstAlign) and the
pipeline's ``TokenizeText`` both call it.
"""
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from mmrefer.registry import TASK_UTILS

__all__ = ['HFTokenizer']


@TASK_UTILS.register_module()
class HFTokenizer:
    """A ``transformers`` tokenizer from a local directory, loaded on first use.

    Args:
        path (str): tokenizer directory (RoBERTa: ``vocab.json`` + ``merges.txt`` or
            ``tokenizer.json``; BERT: ``vocab.txt``). Never downloaded.
        max_length (int): tokens per sentence including the two special tokens.
        lower_case (bool): lower-case sentences first (RoBERTa is cased; the from-scratch
            SynthRef configs set it).
        model_type (str, optional): ``'roberta'`` or ``'bert'``; picks the tokenizer class when
            the directory has no ``tokenizer_config.json``.
        vocab_size (int, optional): rows of the embedding the ids index; a tokenizer with more
            tokens is refused when it is loaded (the text encoder sets it).
    """

    def __init__(self, path: Optional[str], max_length: int = 20, lower_case: bool = False,
                 model_type: Optional[str] = None, vocab_size: Optional[int] = None):
        if not isinstance(max_length, int) or max_length < 3:
            raise ValueError(f'HFTokenizer: max_length must be an int >= 3, got {max_length!r}')
        self.path = path
        self.max_length = max_length
        self.lower_case = lower_case
        self.model_type = model_type
        self.vocab_size = vocab_size
        self.num_truncated = 0  # sentences cut to max_length so far
        self._tok = None

    @property
    def tok(self):
        """The transformers tokenizer (fast when the files allow it)."""
        if self._tok is None:
            if not self.path or not os.path.isdir(self.path):
                raise FileNotFoundError(
                    f'HFTokenizer: tokenizer directory {self.path!r} does not exist; set the '
                    "config's tokenizer_dir to a local RoBERTa/BERT tokenizer directory (check "
                    'it with tools/model_converters/check_text_encoder_dir.py)')
            import transformers
            files = set(os.listdir(self.path))
            needed = dict(roberta=({'vocab.json', 'merges.txt'}, ), bert=({'vocab.txt'}, ))
            if self.model_type in needed and 'tokenizer.json' not in files and not any(
                    req <= files for req in needed[self.model_type]):
                raise FileNotFoundError(
                    f'HFTokenizer: {self.path} has no {self.model_type} tokenizer files (needs '
                    f'{" + ".join(sorted(needed[self.model_type][0]))} or tokenizer.json; found '
                    f'{sorted(files)})')
            has_cfg = 'tokenizer_config.json' in files
            if has_cfg or self.model_type is None:
                cls = transformers.AutoTokenizer
            else:
                cls = getattr(transformers, dict(roberta='RobertaTokenizerFast',
                                                 bert='BertTokenizerFast')[self.model_type])
            tok = cls.from_pretrained(self.path, local_files_only=True)
            if self.vocab_size is not None and len(tok) > self.vocab_size:
                raise ValueError(f'HFTokenizer: the tokenizer in {self.path} has {len(tok)} tokens '
                                 f'but the text encoder embeds {self.vocab_size} (arch.vocab_size)')
            self._tok = tok
        return self._tok

    @property
    def pad_token_id(self) -> int:
        pad = self.tok.pad_token_id
        return 0 if pad is None else int(pad)

    @property
    def special_ids(self) -> List[int]:
        return list(self.tok.all_special_ids)

    def __len__(self) -> int:
        return len(self.tok)

    def __call__(self, texts: Union[str, Sequence[str]]) -> Dict[str, object]:
        """Returns ``input_ids`` / ``attention_mask`` LongTensor ``[B, max_length]`` and
        ``offsets`` (per sentence, ``max_length`` character spans)."""
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f'HFTokenizer: texts[{i}] is {type(t).__name__}, not str')
        shown = [t.lower() for t in texts] if self.lower_case else list(texts)
        fast = getattr(self.tok, 'is_fast', False)
        enc = self.tok(shown, return_offsets_mapping=fast)
        ids_list = enc['input_ids']
        spans_list = enc['offset_mapping'] if fast else [[(0, 0)] * len(x) for x in ids_list]
        cut = sum(len(x) > self.max_length for x in ids_list)
        if cut:
            if self.num_truncated == 0:
                warnings.warn(f'HFTokenizer: sentences longer than max_length={self.max_length} '
                              'tokens are truncated (warned once; the count is in '
                              '.num_truncated)')
            self.num_truncated += cut
        n = self.max_length
        ids = torch.full((len(texts), n), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(texts), n), dtype=torch.long)
        offsets: List[List[Tuple[int, int]]] = []
        for i, (row, spans) in enumerate(zip(ids_list, spans_list)):
            spans = [tuple(int(v) for v in s) for s in spans]
            if len(row) > n:  # keep the closing special token
                row, spans = row[:n - 1] + row[-1:], spans[:n - 1] + spans[-1:]
            ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
            offsets.append(spans + [(0, 0)] * (n - len(spans)))
        return dict(input_ids=ids, attention_mask=mask, offsets=offsets)

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
from typing import List, Optional

from mmrefer.registry import TASK_UTILS
from .tokenizer_base import BaseRefTokenizer

__all__ = ['HFTokenizer']


@TASK_UTILS.register_module()
class HFTokenizer(BaseRefTokenizer):
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
        super().__init__(max_length, lower_case)
        self.path = path
        self.model_type = model_type
        self.vocab_size = vocab_size
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
            try:
                tok = cls.from_pretrained(self.path, local_files_only=True)
            except Exception as e:  # noqa: BLE001  (the tokenizers library raises its own types)
                raise ValueError(f'HFTokenizer: cannot load the tokenizer files in {self.path} '
                                 f'({sorted(files)}): {type(e).__name__}: {e}') from e
            if self.vocab_size is not None and len(tok) > self.vocab_size:
                raise ValueError(f'HFTokenizer: the tokenizer in {self.path} has {len(tok)} tokens '
                                 f'but the text encoder embeds {self.vocab_size} (arch.vocab_size)')
            self._tok = tok
        return self._tok

    @property
    def pad_token_id(self) -> int:
        pad = self.tok.pad_token_id
        return 0 if pad is None else int(pad)

    def __len__(self) -> int:
        return len(self.tok)

    def encode_rows(self, texts: List[str]):
        """Ids with the special tokens and, from the fast tokenizer's offset mapping, their
        character spans (``(0, 0)`` when the tokenizer is not a fast one)."""
        shown = [t.lower() for t in texts] if self.lower_case else list(texts)
        fast = getattr(self.tok, 'is_fast', False)
        enc = self.tok(shown, return_offsets_mapping=fast)
        rows = [list(r) for r in enc['input_ids']]
        spans = enc['offset_mapping'] if fast else [[(0, 0)] * len(r) for r in rows]
        return rows, [list(s) for s in spans]

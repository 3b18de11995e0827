"""Text encoder (InstAlign section 3.2): a ``transformers`` RoBERTa/BERT wrapper.

Word features ``T_0`` [B, L, C], the attention mask [B, L] (1 = real token) and a sentence feature
[B, C] (mean of the valid word features) for a batch of raw sentences.

The architecture is built from an inline config dict, so ``MODELS.build`` needs no file. Its
tokenizer component (:class:`~.hf_tokenizer.HFTokenizer`, ``self.tokenizer``) is loaded lazily from
``tokenizer_dir`` on first use and the pretrained weights from ``pretrained`` in
:meth:`init_weights` (both local directories in Hugging Face layout).
"""
import os
from typing import Dict, Optional, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor

from mmrefer.registry import MODELS
from .hf_tokenizer import HFTokenizer

# roberta-base / bert-base-uncased shapes (their hub ``config.json``); any key can be overridden
# through ``arch``.
ROBERTA_BASE = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
    bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
BERT_BASE = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
    layer_norm_eps=1e-12)
_ARCHS = dict(roberta=ROBERTA_BASE, bert=BERT_BASE)


def _hf_classes(model_type: str):
    if model_type == 'roberta':
        from transformers import RobertaConfig, RobertaModel
        return RobertaConfig, RobertaModel
    if model_type == 'bert':
        from transformers import BertConfig, BertModel
        return BertConfig, BertModel
    raise ValueError(f"HFTextEncoder: model_type must be 'roberta' or 'bert', got {model_type!r}")


@MODELS.register_module()
class HFTextEncoder(BaseModule):
    """RoBERTa (default) or BERT text encoder from ``transformers``.

    Args:
        model_type (str): ``'roberta'`` or ``'bert'``.
        arch (dict, optional): overrides of the base-size architecture (e.g. a tiny test model).
        tokenizer_dir (str, optional): local dir of the tokenizer (``vocab.json`` + ``merges.txt``
            for RoBERTa, ``vocab.txt`` for BERT). Loaded on first use.
        pretrained (str, optional): local dir with ``config.json`` + weights, loaded in
            :meth:`init_weights`. ``None`` keeps the random init.
        max_length (int): tokens per sentence incl. specials (20: ReLA's; InstAlign's paper
            states none).
        freeze (bool): stop gradients into the encoder.
        lower_case (bool): lower-case sentences before tokenizing (default False: RoBERTa is
            cased; a BERT-uncased tokenizer lower-cases by itself). The from-scratch SynthRef
            configs set it.
    """

    def __init__(self,
                 model_type: str = 'roberta',
                 arch: Optional[dict] = None,
                 tokenizer_dir: Optional[str] = None,
                 pretrained: Optional[str] = None,
                 max_length: int = 20,
                 freeze: bool = False,
                 lower_case: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        config_cls, model_cls = _hf_classes(model_type)
        cfg = dict(_ARCHS[model_type])
        cfg.update(arch or {})
        if max_length < 3:
            raise ValueError(f'HFTextEncoder: max_length must be >= 3, got {max_length}')
        offset = cfg.get('pad_token_id', 0) + 1 if model_type == 'roberta' else 0
        if max_length + offset > cfg['max_position_embeddings']:
            raise ValueError(
                f'HFTextEncoder: max_length={max_length} needs max_position_embeddings >= '
                f"{max_length + offset}, arch has {cfg['max_position_embeddings']}")
        self.model_type = model_type
        self.model = model_cls(config_cls(**cfg), add_pooling_layer=False)
        self.tokenizer_dir = tokenizer_dir
        self.pretrained = pretrained
        self.max_length = max_length
        self.freeze = freeze
        # the one tokenizer component of this encoder (lazy: building needs no file)
        self.tokenizer = HFTokenizer(tokenizer_dir, max_length, lower_case, model_type,
                                     vocab_size=self.model.config.vocab_size)
        if freeze:
            self.model.requires_grad_(False)

    @property
    def embed_dims(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_truncated(self) -> int:
        """Sentences cut to ``max_length`` so far (by :attr:`tokenizer`)."""
        return self.tokenizer.num_truncated

    def init_weights(self) -> None:
        super().init_weights()
        if self.pretrained is None:
            return
        if not os.path.isdir(self.pretrained):
            raise FileNotFoundError(
                f'HFTextEncoder: pretrained={self.pretrained!r} is not a directory '
                '(model.text_encoder.pretrained)')
        _, model_cls = _hf_classes(self.model_type)
        src = model_cls.from_pretrained(
            self.pretrained, add_pooling_layer=False, local_files_only=True)
        state = src.state_dict()
        own = self.model.state_dict()
        bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if bad:
            raise ValueError(f'HFTextEncoder: {self.pretrained} does not match arch; '
                             f'shape mismatch for {bad[:5]}')
        missing, _ = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if 'position_ids' not in k]
        if missing:
            raise KeyError(f'HFTextEncoder: {self.pretrained} lacks weights {missing[:5]}')

    def forward(self, texts: Optional[Sequence[str]] = None,
                input_ids: Optional[Tensor] = None,
                attention_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Encode sentences (raw ``texts`` or pre-tokenized ``input_ids``).

        Returns:
            dict: ``word_feats`` [B, L, C], ``attention_mask`` [B, L] (long, 1 = valid; a row
            with no valid token gets its first position marked valid), ``input_ids`` [B, L].
        """
        device = next(self.model.parameters()).device
        if input_ids is None:
            if texts is None:
                raise ValueError('HFTextEncoder.forward needs texts or input_ids')
            if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
                raise ValueError(f'HFTextEncoder expects a list of str, got {texts!r}')
            enc = self.tokenizer(texts)
            input_ids = enc['input_ids'].to(device, non_blocking=True)
            attention_mask = enc['attention_mask'].to(device, non_blocking=True)
        elif attention_mask is None:
            attention_mask = (input_ids != self.model.config.pad_token_id).long()
        # A row with no valid token (hand-made all-pad input_ids) would make every attention
        # over words a softmax over nothing (NaN) downstream: keep its first position valid.
        # (no branch on the data: no device -> host read)
        empty = (attention_mask.sum(1) == 0).to(attention_mask.dtype)
        attention_mask = torch.cat([attention_mask[:, :1] | empty[:, None],
                                    attention_mask[:, 1:]], dim=1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            words = self.model(input_ids=input_ids,
                               attention_mask=attention_mask).last_hidden_state
        return dict(word_feats=words, attention_mask=attention_mask, input_ids=input_ids)

"""InstAlign detector (section 3.1): Swin backbone -> text encoder -> :class:`InstAlignHead`.

Thin glue in the style of mmdet's ``MaskFormer``: ``loss`` / ``predict`` / ``_forward`` take the
normalised image batch from ``DetDataPreprocessor`` and ``DetDataSample``s whose metainfo holds
``text`` (or pre-tokenized ``input_ids`` / ``attention_mask`` from ``TokenizeText``).
"""
import copy
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.detectors.base import BaseDetector
from torch import Tensor

from mmrefer.registry import MODELS
from ..language_models.text_path import token_words, tokenize_samples


@MODELS.register_module()
class InstAlign(BaseDetector):
    """Args:
        backbone (dict): visual encoder (mmdet ``SwinTransformer``).
        text_encoder (dict): :class:`HFTextEncoder` config.
        head (dict): :class:`InstAlignHead` config (``text_channels`` is filled in).
        train_cfg, test_cfg (dict, optional): passed to the head.
        data_preprocessor (dict, optional): mmdet ``DetDataPreprocessor`` config.
    """

    def __init__(self, backbone: dict, text_encoder: dict, head: dict,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.text_encoder = MODELS.build(text_encoder)
        head = copy.deepcopy(dict(head))
        head.update(text_channels=self.text_encoder.embed_dims, train_cfg=train_cfg,
                    test_cfg=test_cfg)
        self.head = MODELS.build(head)

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.backbone(batch_inputs))

    def encode_text(self, batch_data_samples, allow_dummy: bool = False) -> Dict[str, Tensor]:
        """Tokenize (the one text path: metainfo ``input_ids`` from ``TokenizeText`` or the
        samples' ``text``) and run the text encoder. Returns the encoder's dict plus ``offsets``
        and ``texts`` for the words shown next to a prediction.

        ``allow_dummy`` (only for ``_forward``, e.g. FLOPs counting without a tokenizer dir)
        replaces a missing tokenizer by a ``max_length`` sequence of dummy ids."""
        device = next(self.text_encoder.parameters()).device
        try:
            tok = tokenize_samples(self.text_encoder.tokenizer, batch_data_samples, device)
        except FileNotFoundError:
            if not allow_dummy:
                raise
            warnings.warn('InstAlign._forward: no tokenizer dir, using dummy token ids of '
                          'length max_length (fine for FLOPs/shape checks only)')
            n = self.text_encoder.max_length
            ids = torch.full((len(batch_data_samples), n), 3, dtype=torch.long, device=device)
            tok = dict(input_ids=ids, attention_mask=torch.ones_like(ids), offsets=None,
                       texts=[None] * len(ids))
        out = self.text_encoder(input_ids=tok['input_ids'], attention_mask=tok['attention_mask'])
        out.update(offsets=tok['offsets'], texts=tok['texts'])
        return out

    def loss(self, batch_inputs: Tensor, batch_data_samples) -> Dict[str, Tensor]:
        return self.head.loss(self.extract_feat(batch_inputs), self.encode_text(batch_data_samples),
                              batch_data_samples)

    def predict(self, batch_inputs: Tensor, batch_data_samples, rescale: bool = True):
        """Fills the contract's prediction fields at ``img_shape`` (``rescale`` is handled by
        ``mmrefer.structures.geometry`` in the metrics / inferencer)."""
        text = self.encode_text(batch_data_samples)
        words = token_words(text['texts'], text['offsets'])
        valid = None
        if words is not None:
            valid = torch.tensor([[bool(w) for w in row] for row in words],
                                 device=text['input_ids'].device) & text['attention_mask'].bool()
        return self.head.predict(self.extract_feat(batch_inputs), text, batch_data_samples,
                                 words=words, word_valid=valid)

    def _forward(self, batch_inputs: Tensor, batch_data_samples=None) -> Tuple[List[Tensor], Tensor]:
        """Tensor mode (FLOPs counting, export): merged logits of every block and the no-target
        logit. Without data samples a one-word dummy text is used."""
        if batch_data_samples is None:
            from mmdet.structures import DetDataSample
            batch_data_samples = [DetDataSample(metainfo=dict(text='object'))
                                  for _ in range(batch_inputs.shape[0])]
        text = self.encode_text(batch_data_samples, allow_dummy=True)
        outs, nt_logit = self.head(self.extract_feat(batch_inputs), text['word_feats'],
                                   text['attention_mask'])
        return [o['merged'] for o in outs], nt_logit

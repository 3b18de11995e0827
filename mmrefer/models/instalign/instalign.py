"""InstAlign detector (section 3.1): Swin backbone + text encoder -> :class:`InstAlignHead`.

    x = extract_feat(images [B, 3, H, W], samples)      (tokenize, then encode(images, ids, mask))
      = dict(img_feats  = Swin features, tuple of [B, C_i, H_i, W_i] (1/4 .. 1/32),
             word_feats = T_0 [B, L, C_t], word_mask [B, L] (1 = token),
             words      = per sample and token position the text ('' for specials / pads);
                          predict only, for the aligned-word extras)
    loss / predict / _forward: the head on x.

The text path is the shared one (``tokenize_samples``: metainfo ``input_ids`` from
``TokenizeText`` or the samples' ``text``).
"""
import copy
import os.path as osp
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.detectors.base import BaseDetector
from torch import Tensor

from mmrefer.registry import MODELS
from ..language_models.text_path import token_words, tokenize_samples
from ..mixed_precision import fp32_submodules
from .pixel_decoder import HostShapeMultiScaleDeformableAttention


@MODELS.register_module()
class InstAlign(BaseDetector):
    """Args:
        backbone (dict): visual encoder (mmdet ``SwinTransformer``).
        text_encoder (dict): :class:`HFTextEncoder` config.
        head (dict): :class:`InstAlignHead` config (``text_channels`` is filled in).
        train_cfg, test_cfg (dict, optional): passed to the head.
        data_preprocessor (dict, optional): ``RefDataPreprocessor`` config.
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
        # mmcv's deformable-attention CUDA kernel takes no bf16: a plain mmcv module (another
        # pixel decoder in the config) runs in fp32 under autocast; the host-shape one of
        # HostShapeMSDeformAttnPixelDecoder keeps only its sampling in fp32
        fp32_submodules(self.head.pixel_decoder, MultiScaleDeformableAttention,
                        exclude=HostShapeMultiScaleDeformableAttention)

    def init_weights(self) -> None:
        """Check the Swin file of ``model.backbone.init_cfg`` first: mmdet's Swin loads it
        non-strictly and says nothing when no key fits (another model's checkpoint), and an
        unconverted official file ends in an ``IndexError`` inside mmdet."""
        cfg = getattr(self.backbone, 'init_cfg', None)
        if (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'
                and not getattr(self.backbone, 'convert_weights', False)
                and not getattr(self.backbone, '_is_init', False)):
            self._check_swin_file(str(cfg['checkpoint']))
        super().init_weights()

    def _check_swin_file(self, path: str) -> None:
        import zipfile

        from mmrefer.utils import safe_torch_load
        from mmrefer.utils.checkpoint_report import checkpoint_report
        what = f'InstAlign: the Swin file {path} (model.backbone.init_cfg.checkpoint)'
        # keys and shapes only: memory-mapped, so mmdet's own load stays the one full read
        ckpt = safe_torch_load(path, map_location='cpu',
                               mmap=osp.isfile(path) and zipfile.is_zipfile(path))
        state = ckpt.get('state_dict', ckpt.get('model', ckpt)) if isinstance(ckpt, dict) else {}
        sub = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        if not sub:
            raise ValueError(f"{what} has no 'backbone.*' keys (first keys: {list(state)[:3]}): "
                             'convert an official Swin release once with '
                             'tools/model_converters/swin_to_mmrefer.py, or load it with '
                             'model.backbone.convert_weights=True')
        checkpoint_report(self.backbone, sub).check_loaded(what)

    def extract_feat(self, inputs: Tensor, data_samples: List, allow_dummy: bool = False,
                     with_words: bool = False) -> Dict:
        """The head's input ``x`` (see the module docstring). ``allow_dummy`` (``_forward``
        only: FLOPs counting without a tokenizer directory) replaces a missing tokenizer by
        ``max_length`` dummy ids. ``with_words`` (``predict``) adds ``words``, which only the
        aligned-word extras of the predictions read."""
        try:
            tok = tokenize_samples(self.text_encoder.tokenizer, data_samples, inputs.device)
        except FileNotFoundError:
            if not allow_dummy:
                raise
            warnings.warn('InstAlign._forward: no tokenizer dir, using dummy token ids of '
                          'length max_length (fine for FLOPs/shape checks only)')
            ids = torch.full((len(data_samples), self.text_encoder.max_length), 3,
                             dtype=torch.long, device=inputs.device)
            tok = dict(input_ids=ids, attention_mask=torch.ones_like(ids), offsets=None,
                       texts=[None] * len(ids))
        x = self.encode(inputs, tok['input_ids'], tok['attention_mask'])
        if with_words:
            x['words'] = token_words(tok['texts'], tok['offsets'])
        return x

    def encode(self, inputs: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Dict:
        """Images ``[B, 3, H, W]`` and token ids / attention mask ``[B, L]`` (1 = token) -> the
        head's tensor inputs ``dict(img_feats, word_feats, word_mask)`` (without ``words``; the
        ONNX export wrapper ``mmrefer.models.deployment`` calls it)."""
        text = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return dict(img_feats=tuple(self.backbone(inputs)), word_feats=text['word_feats'],
                    word_mask=text['attention_mask'])

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        return self.head.loss(self.extract_feat(inputs, data_samples), data_samples)

    def predict(self, inputs: Tensor, data_samples: List, rescale: bool = True) -> List:
        """Fill the prediction fields at ``img_shape`` (docs/contracts.md section 3).

        ``rescale`` (mmdet's signature) is not used: predictions stay at the input size, and
        the metrics and ``RefInferencer`` map them back with ``mmrefer.structures.geometry``."""
        return self.head.predict(self.extract_feat(inputs, data_samples, with_words=True),
                                 data_samples)

    def _forward(self, inputs: Tensor, data_samples: Optional[List] = None
                 ) -> Tuple[List[Tensor], Tensor]:
        """Tensor mode (FLOPs counting, export): the merged logits of every layer and the
        no-target logit. Without data samples a one-word dummy text is used."""
        if data_samples is None:
            from mmdet.structures import DetDataSample
            data_samples = [DetDataSample(metainfo=dict(text='object')) for _ in inputs]
        outs = self.head(self.extract_feat(inputs, data_samples, allow_dummy=True), data_samples)
        return outs[2], outs[-1]

"""Latent-VG detector (ICCV 2025): one BEiT-3 encoder over image, text and latent expressions.

Pipeline for a batch of images ``[B, 3, H, W]`` and sentences (``data_sample.text``)::

    ids, mask         = tokenize_samples(tokenizer, samples)            [B, L]
    Z^1..Z^N, s       = latent_init(backbone.embed_text_tokens(ids), pad)
    x_vis, x_txt      = backbone.embed(ids, img, visual_cls=s)          [B, 1+P, C], [B, L, C]
                        (the subject s takes the visual CLS slot)
    layout            = TokenLayout(1+P, L, k_i+2 ...)
    X = backbone.forward_layers([x_vis | x_txt | Z^1 .. Z^N], layout,
                                layer_hook = VCI o SD after every layer)
    head(dict(patch_feats, class_tokens, memory=X, memory_mask, subject_index))

``latent_init=None`` gives the no-latent baseline; ``subject_distributor`` / ``concept_injector``
set to None switch those modules off (ablations; GRES drops the distributor).
"""
import os.path as osp
from typing import Dict, List, Optional

import torch
from mmdet.models.detectors.base import BaseDetector
from torch import Tensor

from mmrefer.registry import MODELS, TASK_UTILS
from ..language_models.text_path import tokenize_samples
from .token_layout import TokenLayout, take_tokens


@MODELS.register_module()
class LatentVG(BaseDetector):
    """Args:
        backbone (dict): ``BEiT3`` config (``num_latent_groups`` must equal ``N``).
        head (dict): ``LatentVGHead`` config (``num_class_tokens`` must equal ``N + 1``).
        tokenizer (dict): ``BEiT3Tokenizer`` config (read lazily; its ``max_length`` is the
            text length ``L``); samples may instead carry ``input_ids`` from ``TokenizeText``.
        latent_init (dict, optional): ``LatentExpressionInitializer`` config.
        subject_distributor (dict, optional): ``SubjectDistributor`` config.
        concept_injector (dict, optional): ``VisualConceptInjector`` config.
        replace_visual_cls (bool): put the subject token in the visual CLS slot.
        pretrained (str, optional): backbone checkpoint (official BEiT-3 ``.pth``), loaded in
            :meth:`init_weights`; a missing file raises ``FileNotFoundError``.
        data_preprocessor (dict): ``RefDataPreprocessor`` config (the loss reads the ground
            truth it pads and moves to the device).
        test_cfg (dict): the head's ``mask_thr`` / ``nt_thr`` (0.5 / 0.5).
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 tokenizer: dict,
                 latent_init: Optional[dict] = None,
                 subject_distributor: Optional[dict] = None,
                 concept_injector: Optional[dict] = None,
                 replace_visual_cls: bool = True,
                 pretrained: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone, head = dict(backbone), dict(head)
        if pretrained is not None:
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        self.pretrained = pretrained
        self.tokenizer_cfg = dict(tokenizer)
        self.tokenizer = TASK_UTILS.build(self.tokenizer_cfg)
        text_len = self.tokenizer.max_length
        attr_lengths = tuple(latent_init.get('attr_lengths', (4, 10))) if latent_init else ()
        if backbone.get('num_latent_groups', 0) != len(attr_lengths):
            raise ValueError(f'LatentVG: backbone.num_latent_groups='
                             f'{backbone.get("num_latent_groups", 0)} but latent_init defines '
                             f'{len(attr_lengths)} latent expressions (latent_init.attr_lengths)')
        if head.get('num_class_tokens', 3) != len(attr_lengths) + 1:
            raise ValueError(f'LatentVG: head.num_class_tokens={head.get("num_class_tokens", 3)}'
                             f' must be number of latent expressions + 1 = '
                             f'{len(attr_lengths) + 1}')
        if latent_init is not None:
            latent_init = dict(latent_init)
            if latent_init.setdefault('text_len', text_len) != text_len:
                raise ValueError(f'LatentVG: latent_init.text_len={latent_init["text_len"]} != '
                                 f'tokenizer.max_length={text_len}')
        # the subject token takes the visual CLS slot: the backbone then builds no CLS token
        # (it would get no gradient); an official checkpoint's one is reported as skipped
        subject_in_cls = (latent_init is not None and replace_visual_cls
                          and latent_init.get('mode', 'latent') == 'latent')
        backbone.setdefault('with_cls_token', not subject_in_cls)
        if subject_in_cls and backbone['with_cls_token']:
            raise ValueError('LatentVG: backbone.with_cls_token=True but the subject token '
                             'replaces the visual CLS (replace_visual_cls=True): that token '
                             'would never be used; drop backbone.with_cls_token')
        self.backbone = MODELS.build(backbone)
        self.latent_init = MODELS.build(latent_init) if latent_init else None
        self.subject_distributor = (MODELS.build(subject_distributor)
                                    if subject_distributor and self.latent_init else None)
        self.concept_injector = (MODELS.build(concept_injector)
                                 if concept_injector and self.latent_init else None)
        head.setdefault('test_cfg', test_cfg)
        self.head = MODELS.build(head)
        self.replace_visual_cls = replace_visual_cls
        self.layout = TokenLayout.build(self.backbone.vision_embed.num_patches, text_len,
                                        attr_lengths)
        self.train_cfg, self.test_cfg = train_cfg, test_cfg

    def init_weights(self):
        for what, path in (('pretrained', self.pretrained),
                           ('tokenizer.spm_path', self.tokenizer_cfg.get('spm_path'))):
            if path is not None and not osp.isfile(osp.expanduser(str(path))):
                raise FileNotFoundError(f'LatentVG: model.{what} file not found: {path!r} '
                                        '(set it in the config or with --cfg-options)')
        super().init_weights()

    def _layer_hook(self, i: int, x: Tensor) -> Tensor:
        """Sec. 3.2 after every encoder layer: subject distributor, then concept injector."""
        if self.subject_distributor is not None:
            x = self.subject_distributor(x, self.layout)
        if self.concept_injector is not None:
            x = self.concept_injector(x, self.layout, i)
        return x

    def _check_vocab(self) -> None:
        """Once: the tokenizer's ids must fit the backbone's text embedding (else an
        ``IndexError`` in ``torch.embedding`` that names neither)."""
        spm = self.tokenizer_cfg.get('spm_path')
        if getattr(self, '_vocab_checked', False) or spm is None or not osp.isfile(
                osp.expanduser(str(spm))):
            return  # without the file the samples bring their ids (TokenizeText, FLOPs counts)
        n, rows = len(self.tokenizer), self.backbone.text_embed.num_embeddings
        if n > rows:
            raise ValueError(f'LatentVG: the tokenizer {spm!r} '
                             f'uses {n} ids but the backbone embeds {rows} '
                             '(model.backbone.vocab_size): set vocab_size to at least the '
                             "tokenizer's size (the official model: 64010 rows for beit3.spm's "
                             '64002 ids)')
        self._vocab_checked = True

    def extract_feat(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        """Tokenize the samples' sentences (:func:`tokenize_samples`), then :meth:`encode`."""
        self._check_vocab()
        text = tokenize_samples(self.tokenizer, data_samples, inputs.device)
        return self.encode(inputs, text['input_ids'], text['attention_mask'])

    def encode(self, inputs: Tensor, input_ids: Tensor,
               attention_mask: Tensor) -> Dict[str, Tensor]:
        """Run the encoder on images ``[B, 3, H, W]`` and token ids / attention mask ``[B, L]``
        (1 = token); returns the head's input ``dict(patch_feats [B, C, h, w], class_tokens
        [B, N+1, C], memory [B, T, C], memory_mask [B, T], subject_index [B])``. Tensors only:
        the ONNX export wrapper (``mmrefer.models.deployment``) calls it."""
        ids, pad = input_ids, attention_mask == 0
        latents, subject_index, visual_cls = [], None, None
        if self.latent_init is not None:
            lat = self.latent_init(self.backbone.embed_text_tokens(ids), pad)
            if lat['subject'] is not None and self.replace_visual_cls:
                visual_cls = lat['subject']
            latents = lat['expressions']
            subject_index = lat['subject_index']
        x_vis, x_txt = self.backbone.embed(ids, inputs, visual_cls=visual_cls)
        x = torch.cat([x_vis, x_txt] + [z.to(x_vis) for z in latents], dim=1)
        b = pad.shape[0]  # not len(): a symbolic batch size under torch.export stays symbolic
        memory_mask = torch.cat([pad.new_zeros(b, self.layout.num_vis), pad,
                                 pad.new_zeros(b, sum(self.layout.latent_sizes))], dim=1)
        hook = (self._layer_hook if self.subject_distributor is not None
                or self.concept_injector is not None else None)
        x = self.backbone.forward_layers(x, self.layout.group_sizes, memory_mask, hook)
        h, w = self.backbone.patch_grid
        patch_feats = x[:, self.layout.patches].transpose(1, 2).reshape(b, -1, h, w)
        return dict(patch_feats=patch_feats,
                    class_tokens=take_tokens(x, self.layout.class_tokens),
                    memory=x, memory_mask=memory_mask, subject_index=subject_index)

    def plain_backbone_inputs(self, data: dict):
        """``(args, kwargs)`` of the plain BEiT-3 forward on the same images and sentences (no
        latent tokens, no per-layer modules): the reference ``tools/analysis_tools/benchmark.py``
        times the full model against."""
        inputs = data['inputs']
        text = tokenize_samples(self.tokenizer, data['data_samples'], inputs.device)
        kwargs = dict(textual_tokens=text['input_ids'], visual_tokens=inputs,
                      text_padding_position=text['attention_mask'] == 0)
        if self.backbone.vision_embed.cls_token is None:  # the subject's slot: a zero token
            kwargs['visual_cls'] = inputs.new_zeros(len(inputs), 1, self.backbone.embed_dims)
        return (), kwargs

    def loss(self, inputs: Tensor, data_samples: List) -> Dict[str, Tensor]:
        return self.head.loss(self.extract_feat(inputs, data_samples), data_samples)

    def predict(self, inputs: Tensor, data_samples: List, rescale: bool = True) -> List:
        """Fill the prediction fields at ``img_shape`` (docs/contracts.md section 3).

        ``rescale`` (mmdet's signature) is not used: predictions stay at the input size, and
        the metrics and ``RefInferencer`` map them back with ``mmrefer.structures.geometry``."""
        return self.head.predict(self.extract_feat(inputs, data_samples), data_samples)

    def _forward(self, inputs: Tensor, data_samples: Optional[List] = None):
        if data_samples is None:
            raise ValueError('LatentVG._forward needs data_samples (the sentences)')
        return self.head(self.extract_feat(inputs, data_samples))

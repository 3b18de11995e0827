"""Latent-VG detector (ICCV 2025): one BEiT-3 encoder over image, text and latent expressions.

Pipeline for a batch of images ``[B, 3, H, W]`` and sentences (``data_sample.text``)::

    ids, pad          = tokenizer(texts)                               [B, L]
    x_vis, x_txt      = backbone.embed(ids, img)                       [B, 1+P, C], [B, L, C]
    Z^1..Z^N, s       = latent_init(backbone.embed_text_tokens(ids), pad)
    x_vis[:, 0]       = s                                  (the subject replaces the visual CLS)
    X = backbone.forward_layers([x_vis | x_txt | Z^1 .. Z^N],
                                layer_hook = VCI o SD after every layer)
    head(patches of X, [t_o, z_o^1 .. z_o^N], X) -> mask maps, (no-target logit)

``latent_init=None`` gives the no-latent baseline; ``subject_distributor`` / ``concept_injector``
set to None switch those modules off (ablations, GRES drops the distributor).
"""
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.detectors.base import BaseDetector

from mmrefer.registry import MODELS, TASK_UTILS


@MODELS.register_module()
class LatentVG(BaseDetector):
    """Args:
        backbone (dict): ``BEiT3`` config (``num_latent_groups`` must equal ``N``).
        head (dict): ``LatentVGHead`` config (``num_class_tokens`` must equal ``N + 1``).
        tokenizer (dict, optional): ``BEiT3Tokenizer`` config (lazy); may be None when every
            data sample carries ``input_ids`` in its metainfo.
        latent_init (dict, optional): ``LatentExpressionInitializer`` config.
        subject_distributor (dict, optional): ``SubjectDistributor`` config.
        concept_injector (dict, optional): ``VisualConceptInjector`` config.
        text_len (int): text length ``L`` fed to the encoder (ids are padded to it).
        pad_token_id (int): id used to pad to ``text_len`` (BEiT-3: 1).
        replace_visual_cls (bool): put the subject token in the visual CLS slot.
        pretrained (str, optional): backbone checkpoint (official BEiT-3 ``.pth``), loaded in
            :meth:`init_weights`; a missing file raises ``FileNotFoundError``.
        data_preprocessor (dict): mmdet ``DetDataPreprocessor`` config.
    """

    def __init__(self,
                 backbone: dict,
                 head: dict,
                 tokenizer: Optional[dict] = None,
                 latent_init: Optional[dict] = None,
                 subject_distributor: Optional[dict] = None,
                 concept_injector: Optional[dict] = None,
                 text_len: int = 20,
                 pad_token_id: int = 1,
                 replace_visual_cls: bool = True,
                 pretrained: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = dict(backbone)
        if pretrained is not None:
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        self.pretrained = pretrained
        num_latent = len(latent_init.get('attr_lengths', (4, 10))) if latent_init else 0
        if backbone.get('num_latent_groups', 0) != num_latent:
            raise ValueError(f'LatentVG: backbone.num_latent_groups='
                             f'{backbone.get("num_latent_groups", 0)} but latent_init defines '
                             f'{num_latent} latent expressions (model.latent_init.attr_lengths)')
        if head.get('num_class_tokens', 3) != num_latent + 1:
            raise ValueError(f'LatentVG: head.num_class_tokens={head.get("num_class_tokens", 3)}'
                             f' must be number of latent expressions + 1 = {num_latent + 1}')
        if latent_init is not None:
            latent_init = dict(latent_init)
            if latent_init.setdefault('text_len', text_len) != text_len:
                raise ValueError(f'LatentVG: latent_init.text_len={latent_init["text_len"]} != '
                                 f'text_len={text_len}')
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
        self.head = MODELS.build(head)
        self.latent_init = MODELS.build(latent_init) if latent_init else None
        self.subject_distributor = (MODELS.build(subject_distributor)
                                    if subject_distributor and self.latent_init else None)
        self.concept_injector = (MODELS.build(concept_injector)
                                 if concept_injector and self.latent_init else None)
        self.tokenizer_cfg = tokenizer
        self.tokenizer = TASK_UTILS.build(tokenizer) if tokenizer is not None else None
        self.text_len = text_len
        self.pad_token_id = pad_token_id
        self.replace_visual_cls = replace_visual_cls
        self.train_cfg, self.test_cfg = train_cfg, test_cfg

    # ------------------------------------------------------------------ weights
    def init_weights(self):
        for what, path in (('pretrained', self.pretrained),
                           ('tokenizer.spm_path',
                            (self.tokenizer_cfg or {}).get('spm_path'))):
            if path is not None and not osp.isfile(osp.expanduser(str(path))):
                raise FileNotFoundError(f'LatentVG: model.{what} file not found: {path!r} '
                                        '(set it in the config or with --cfg-options)')
        super().init_weights()

    # ------------------------------------------------------------------ text
    def tokenize(self, data_samples: List, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """``input_ids [B, text_len]`` and ``padding_mask [B, text_len]`` (True = pad), from the
        metainfo ``input_ids`` when every sample has them, else from ``text``."""
        metas = [ds.metainfo for ds in data_samples]
        if all('input_ids' in m for m in metas):
            ids, pads = [], []
            for m in metas:
                row = torch.as_tensor(m['input_ids'], dtype=torch.long).flatten()
                if 'padding_mask' in m:
                    pad = torch.as_tensor(m['padding_mask']).flatten().bool()
                elif 'attention_mask' in m:
                    pad = ~torch.as_tensor(m['attention_mask']).flatten().bool()
                else:
                    pad = row == self.pad_token_id
                ids.append(row)
                pads.append(pad)
        else:
            if self.tokenizer is None:
                raise KeyError('LatentVG: data samples carry no input_ids and model.tokenizer is '
                               'None; configure a BEiT3Tokenizer')
            texts = []
            for i, m in enumerate(metas):
                if 'text' not in m:
                    raise KeyError(f'LatentVG: data sample {i} has no metainfo text')
                texts.append(m['text'])
            out = self.tokenizer(texts)
            ids, pads = list(out['input_ids']), list(out['padding_mask'].bool())
        input_ids = torch.full((len(ids), self.text_len), self.pad_token_id, dtype=torch.long)
        padding = torch.ones(input_ids.shape, dtype=torch.bool)
        for i, (row, pad) in enumerate(zip(ids, pads)):
            if row.numel() > self.text_len:
                raise ValueError(f'LatentVG: sample {i} has {row.numel()} tokens but '
                                 f'model.text_len={self.text_len}; raise text_len or lower the '
                                 'tokenizer max_length')
            input_ids[i, :row.numel()] = row
            padding[i, :row.numel()] = pad
        return input_ids.to(device), padding.to(device)

    # ------------------------------------------------------------------ encoder
    def _layer_hook(self, group_sizes):
        def hook(i, x):
            if self.subject_distributor is not None:
                x = self.subject_distributor(x, group_sizes)
            if self.concept_injector is not None:
                x = self.concept_injector(x, group_sizes)
            return x
        return hook

    def extract_feat(self, inputs: torch.Tensor, data_samples: List) -> Dict:
        """Run the encoder; returns dict(x, group_sizes, padding_mask, patch_feats,
        class_tokens, subject_index)."""
        ids, pad = self.tokenize(data_samples, inputs.device)
        latents, subject_index, visual_cls = [], None, None
        if self.latent_init is not None:
            lat = self.latent_init(self.backbone.embed_text_tokens(ids), pad)
            if lat['subject'] is not None and self.replace_visual_cls:
                visual_cls = lat['subject']
            latents = lat['expressions']
            subject_index = lat['subject_index']
        x_vis, x_txt = self.backbone.embed(ids, inputs, visual_cls=visual_cls)
        latents = [z.to(x_vis) for z in latents]
        sizes = [x_vis.shape[1], x_txt.shape[1]] + [z.shape[1] for z in latents]
        x = torch.cat([x_vis, x_txt] + latents, dim=1)
        padding_mask = torch.cat(
            [pad.new_zeros(pad.shape[0], sizes[0]), pad,
             pad.new_zeros(pad.shape[0], sum(sizes[2:]))], dim=1)
        hook = (self._layer_hook(sizes)
                if self.subject_distributor is not None or self.concept_injector is not None
                else None)
        x = self.backbone.forward_layers(x, sizes, padding_mask, hook)
        h, w = self.backbone.patch_grid
        B, _, C = x.shape
        patch_feats = x[:, 1:sizes[0]].transpose(1, 2).reshape(B, C, h, w)
        starts = [sizes[0]]
        for n in sizes[1:-1]:
            starts.append(starts[-1] + n)
        class_tokens = x[:, starts]  # text <s> and each latent z_cls
        return dict(x=x, group_sizes=sizes, padding_mask=padding_mask, patch_feats=patch_feats,
                    class_tokens=class_tokens, subject_index=subject_index)

    def _run(self, inputs, data_samples):
        feats = self.extract_feat(inputs, data_samples)
        outs = self.head(feats['patch_feats'], feats['class_tokens'], feats['x'],
                         feats['padding_mask'])
        return feats, outs

    # ------------------------------------------------------------------ modes
    def loss(self, inputs: torch.Tensor, data_samples: List) -> Dict[str, torch.Tensor]:
        _, outs = self._run(inputs, data_samples)
        return self.head.loss(outs, data_samples)

    def predict(self, inputs: torch.Tensor, data_samples: List, rescale: bool = True) -> List:
        """Fill ``pred_mask``, ``pred_no_target``, ``pred_box``, ``pred_score`` and
        ``pred_extras`` (at ``img_shape``; see docs/contracts.md)."""
        feats, outs = self._run(inputs, data_samples)
        return self.head.predict(outs, data_samples, feats['subject_index'])

    def _forward(self, inputs: torch.Tensor, data_samples: Optional[List] = None):
        if data_samples is None:
            raise ValueError('LatentVG._forward needs data_samples (the sentences)')
        return self._run(inputs, data_samples)[1]

"""A tiny deterministic stand-in for a referring model, for the inferencer/visualizer/demo tests.

``FakeRefModel`` follows docs/contracts.md section 3: ``pred_prob`` = first channel (B of BGR)
of the network input / 255, ``pred_mask_thr`` = ``threshold`` / 255, ``pred_mask`` =
``pred_prob > pred_mask_thr`` (``with_prob=False`` leaves out ``pred_prob`` and
``pred_mask_thr``, as old checkpoints / third-party models do); ``pred_box`` = box of the mask;
``pred_no_target`` = the sentence contains "nothing"; ``pred_score`` = mask fraction;
``pred_extras`` = Latent-VG-like ``expr_maps`` [2, H, W] and ``subject_index`` = number of words.
Import this module (or name it in ``custom_imports``) to register it.
"""
import os.path as osp

import torch
from mmengine.model import BaseModel

from mmrefer.registry import MODELS

HERE = osp.dirname(osp.abspath(__file__))


@MODELS.register_module(force=True)
class FakeRefModel(BaseModel):
    calls = []  # batch size of every predict call (class-level record)

    def __init__(self, threshold: float = 127.0, with_prob: bool = True, data_preprocessor=None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='mmdet.DetDataPreprocessor', mean=[0., 0., 0.],
                                     std=[1., 1., 1.], bgr_to_rgb=False)
        super().__init__(data_preprocessor=data_preprocessor)
        self.threshold = torch.nn.Parameter(torch.tensor(float(threshold)))
        self.backbone = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.with_prob = with_prob

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode != 'predict':
            raise ValueError(f'FakeRefModel only predicts, got mode={mode!r}')
        FakeRefModel.calls.append(len(data_samples))
        self.backbone(inputs.float())
        for img, ds in zip(inputs, data_samples):
            h, w = ds.metainfo['img_shape'][:2]
            prob = img[0, :h, :w].float() / 255
            thr = float(self.threshold) / 255
            mask = prob > thr
            no_target = 'nothing' in ds.metainfo['text']
            if self.with_prob:
                ds.pred_prob = prob
                ds.pred_mask_thr = thr
            if no_target:
                ds.pred_mask_ungated = mask
                mask = torch.zeros_like(mask)
            if mask.any():
                ys, xs = torch.nonzero(mask, as_tuple=True)
                box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            else:
                box = torch.zeros(4)
            ds.pred_mask = mask
            ds.pred_box = box
            ds.pred_no_target = no_target
            ds.pred_score = float(mask.float().mean())
            ds.pred_extras = dict(expr_maps=torch.stack([img[0, :h, :w].float() / 255,
                                                         mask.float()]),
                                  subject_index=len(ds.metainfo['text'].split()))
        return data_samples


def fake_config_text(scale=(32, 32), extra_imports=True, with_prob=True) -> str:
    """A config using ``FakeRefModel`` and mmdet transforms (stretch resize to ``scale``)."""
    imports = "custom_imports = dict(imports=['_fake_ref_model'], allow_failed_imports=False)\n" \
        if extra_imports else ''
    return imports + f"""default_scope = 'mmrefer'
model = dict(type='FakeRefModel', with_prob={with_prob!r})
test_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='mmdet.Resize', scale={tuple(scale)!r}, keep_ratio=False, interpolation='nearest'),
    dict(type='mmdet.PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
         'scale_factor', 'text', 'sent_id', 'no_target')),
]
test_dataloader = dict(batch_size=2, dataset=dict(type='NotOnDisk', pipeline=test_pipeline))
"""


def letterbox_config_text(scale=(32, 32)) -> str:
    """``FakeRefModel`` behind mmrefer's own pipeline: RefResize(letterbox=True, nearest) and
    PackRefInputs(keep_ori_gt=True), as the SynthRef configs use."""
    return f"""default_scope = 'mmrefer'
model = dict(type='FakeRefModel')
test_pipeline = [
    dict(type='LoadRefImageFromFile'),
    dict(type='LoadRefAnnotations'),
    dict(type='RefResize', scale={tuple(scale)!r}, letterbox=True, interpolation='nearest'),
    dict(type='PackRefInputs', keep_ori_gt=True),
]
test_dataloader = dict(dataset=dict(type='NotOnDisk', pipeline=test_pipeline))
"""


def write_fake_config(folder, scale=(32, 32), letterbox=False, with_prob=True) -> str:
    name = 'fake_ref_letterbox_config.py' if letterbox else \
        f'fake_ref_config{"" if with_prob else "_noprob"}.py'
    path = osp.join(str(folder), name)
    with open(path, 'w') as f:
        f.write(letterbox_config_text(scale) if letterbox else
                fake_config_text(scale, with_prob=with_prob))
    return path

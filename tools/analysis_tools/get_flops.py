"""Parameters and FLOPs of any mmrefer model, on a dummy image and sentence.

    python tools/analysis_tools/get_flops.py CONFIG [--shape 480 480] [--text-len 20]
        [--cfg-options k=v ...]

The model is built from ``cfg.model`` (no weights, tokenizer or data needed: the sentence is
passed as ``input_ids`` of ``--text-len`` tokens in the data sample's metainfo, as
``TokenizeText`` would). Counted with ``torch.utils.flop_counter.FlopCounterMode`` in
``mode='tensor'`` (the network forward without post-processing); that counter reports
2 FLOPs per multiply-add, so both numbers are printed:

* ``MACs``  = multiply-adds  (the convention of e.g. MDETR / Grounding-DINO tables),
* ``FLOPs`` = 2 x MACs.

Element-wise ops (softmax, norms, activations) are not counted by the counter. Fused attention
(``F.scaled_dot_product_attention``, used by BEiT-3 and ``nn.MultiheadAttention``) is invisible
to the counter on CPU, so the forward runs with the math SDPA backend, whose ``q k^T`` and
``attn v`` matmuls are counted.
"""
import argparse
import copy

import torch
from mmengine.config import Config, DictAction
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def parse_args():
    parser = argparse.ArgumentParser(description='Count parameters and FLOPs of a model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H W (default: the config img_scale, else 480 480)')
    parser.add_argument('--text-len', type=int, default=20, help='tokens in the dummy sentence')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args()


def input_shape(cfg, shape):
    if shape:
        if len(shape) == 1:
            return shape[0], shape[0]
        if len(shape) != 2:
            raise ValueError(f'--shape takes H [W], got {shape}')
        return tuple(shape)
    scale = cfg.get('img_scale', (480, 480))
    return int(scale[1]), int(scale[0])  # img_scale is (w, h)


def set_input_size(model_cfg, h, w):
    """A backbone built for a fixed input size (its config has ``img_size``, e.g. BEiT-3's
    position table) is built for ``(h, w)``."""
    backbone = model_cfg.get('backbone', {})
    if isinstance(backbone, dict) and 'img_size' in backbone:
        backbone['img_size'] = (h, w)


def count(cfg, h, w, text_len):
    """Returns dict(params, flops, macs) of ``cfg.model`` on a 1-image batch."""
    from mmdet.structures import DetDataSample

    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    model_cfg = copy.deepcopy(cfg.model)  # the caller's config stays as it is
    set_input_size(model_cfg, h, w)
    if 'pretrained' in model_cfg:  # no weights needed to count
        model_cfg.pretrained = None
    model = MODELS.build(model_cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.full((text_len, ), 5, dtype=torch.long)
    ids[0], ids[-1] = 0, 2  # <s> ... </s>
    ds = DetDataSample(metainfo=dict(
        text='dummy', input_ids=ids, attention_mask=torch.ones(text_len, dtype=torch.long),
        padding_mask=torch.zeros(text_len, dtype=torch.bool), img_shape=(h, w), ori_shape=(h, w),
        pad_shape=(h, w), batch_input_shape=(h, w), scale_factor=(1.0, 1.0), no_target=False))
    inputs = torch.randn(1, 3, h, w)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(inputs, [ds], mode='tensor')
    flops = counter.get_total_flops()
    return dict(params=params, flops=flops, macs=flops / 2)


def main():
    args = parse_args()
    torch.set_num_threads(1)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    h, w = input_shape(cfg, args.shape)
    res = count(cfg, h, w, args.text_len)
    print(f'config: {args.config}')
    print(f'input: image {h}x{w}, text {args.text_len} tokens, batch 1')
    print(f'Params: {res["params"] / 1e6:.2f} M')
    print(f'GMACs (multiply-adds): {res["macs"] / 1e9:.2f}')
    print(f'GFLOPs (2 x multiply-adds): {res["flops"] / 1e9:.2f}')


if __name__ == '__main__':
    main()

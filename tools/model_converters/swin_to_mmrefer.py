"""Convert an official Swin Transformer checkpoint (ImageNet-22K release, e.g.
``swin_base_patch4_window12_384_22k.pth``) to mmdet's ``SwinTransformer`` key names.

    python tools/model_converters/swin_to_mmrefer.py SRC.pth DST.pth [--arch swin-b] [--no-check]
        [--final-norm-to-norm3]

The key rules are mmdet's own ``swin_converter`` (imported from the mmdet wheel: ``layers`` ->
``stages``, ``attn`` -> ``attn.w_msa``, ``mlp.fc1/fc2`` -> ``ffn.layers.0.0/1``,
``patch_embed.proj`` -> ``patch_embed.projection``, the unfold order of ``downsample``, classifier
``head.*`` dropped, ``backbone.`` prefix). The official final ``norm.*`` (the classifier's input
norm) is dropped as well, as mmdet's ``convert_weights=True``, the official detection backbone
(Swin-Transformer-Object-Detection) and ReLA / Mask2Former drop it: all four output norms
``norm0``-``norm3`` start at weight 1, bias 0, so the converted file and the official file with
``convert_weights=True`` give the same features. ``--final-norm-to-norm3`` writes it as
``backbone.norm3.*`` instead (an affine change of the stage-4 output at initialisation).

The result is ``{'state_dict': {...}}``; use it with ``convert_weights=False`` and
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` (configs/_base_/models/
instalign_swin-b_roberta.py). Unless ``--no-check``, the keys are loaded into a freshly built
mmdet SwinTransformer of ``--arch`` and the script fails when a weight is missing or mis-shaped.
"""
import argparse
import re
import sys
from collections import OrderedDict

import torch

ARCHS = {
    'swin-b': dict(pretrain_img_size=384, embed_dims=128, depths=[2, 2, 18, 2],
                   num_heads=[4, 8, 16, 32], window_size=12),
    'swin-l': dict(pretrain_img_size=384, embed_dims=192, depths=[2, 2, 18, 2],
                   num_heads=[6, 12, 24, 48], window_size=12),
    'swin-t': dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
}


def convert(ckpt: dict, final_norm_to_norm3: bool = False) -> 'OrderedDict[str, torch.Tensor]':
    """Official Swin state dict (or a dict holding it under ``model``/``state_dict``) ->
    mmdet keys with the ``backbone.`` prefix (the final ``norm`` dropped unless
    ``final_norm_to_norm3``)."""
    from mmdet.models.backbones.swin import swin_converter
    if not isinstance(ckpt, dict):
        raise ValueError(f'swin_to_mmrefer: expected a dict checkpoint, got {type(ckpt).__name__}')
    state = ckpt.get('model', ckpt.get('state_dict', ckpt))
    if not any(k.startswith('layers.') for k in state):
        raise KeyError('swin_to_mmrefer: no "layers.*" keys - not an official Swin checkpoint '
                       f'(first keys: {list(state)[:5]})')
    out = swin_converter(state)
    # the shifted-window attention masks of the official release are buffers mmdet recomputes
    # for the input size: not weights
    for k in [k for k in out if k.endswith('.attn_mask')]:
        out.pop(k)
    # the official final norm (mmdet's swin_converter keeps it as backbone.norm.*, a key no
    # mmdet Swin has): dropped, or on request given to the last stage's output norm
    last = max(int(k.split('.')[2]) for k in out if k.startswith('backbone.stages.'))
    for suffix in ('weight', 'bias'):
        v = out.pop(f'backbone.norm.{suffix}', None)
        if v is not None and final_norm_to_norm3:
            out[f'backbone.norm{last}.{suffix}'] = v
    return out


def check(state: dict, arch: str, final_norm_to_norm3: bool = False) -> None:
    """Check ``state`` against mmdet's SwinTransformer(**ARCHS[arch]); raise on any gap."""
    from mmdet.models.backbones import SwinTransformer
    model = SwinTransformer(**ARCHS[arch])
    own = model.state_dict()
    sub = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    # the output norms have no official counterpart (the last one takes the final norm with
    # --final-norm-to-norm3): they keep their fresh init, as with mmdet's own conversion
    last = len(ARCHS[arch]['depths']) - 1
    fresh = rf'norm[0-{last - 1}]\.' if final_norm_to_norm3 else r'norm\d+\.'
    missing = [k for k in own if k not in sub and 'relative_position_index' not in k
               and not re.match(fresh, k)]
    unexpected = [k for k in sub if k not in own]
    bad = [k for k in sub if k in own and own[k].shape != sub[k].shape
           and 'relative_position_bias_table' not in k]
    if missing or unexpected or bad:
        raise ValueError(f'swin_to_mmrefer: {arch} check failed: missing={missing[:5]} '
                         f'unexpected={unexpected[:5]} shape-mismatch={bad[:5]}')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--arch', default='swin-b', choices=sorted(ARCHS))
    p.add_argument('--no-check', action='store_true')
    p.add_argument('--final-norm-to-norm3', action='store_true',
                   help='write the official final norm as backbone.norm3 (default: drop it, '
                        'as mmdet, the official detection code and ReLA do)')
    args = p.parse_args(argv)
    from mmrefer.utils import safe_torch_load
    try:  # names the file; refuses what is not a plain checkpoint
        ckpt = safe_torch_load(args.src, map_location='cpu')
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    if isinstance(ckpt, dict) and 'state_dict' in ckpt and any(
            k.startswith(('backbone.', 'head.')) for k in ckpt['state_dict']):
        p.error(f'{args.src} is an mmengine training checkpoint (keys backbone.*, head.*), not '
                'an official Swin release file: nothing to convert')
    try:
        state = convert(ckpt, args.final_norm_to_norm3)
        if not args.no_check:
            check(state, args.arch, args.final_norm_to_norm3)
    except (KeyError, ValueError) as e:
        p.error(f'{args.src}: {e.args[0] if e.args else e}')
    torch.save({'state_dict': state}, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

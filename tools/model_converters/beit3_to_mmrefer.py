"""Convert an official BEiT-3 checkpoint (microsoft/unilm ``beit3_*.pth``) for mmrefer.

Takes ``ckpt['model']`` (or ``module``/``state_dict``), keeps the ``beit3.`` keys, resizes the
vision position table to ``--img-size`` (bicubic on the patch grid, the 3 leading rows kept),
and writes a plain state dict whose keys are ``<prefix><our key>`` (default prefix
``backbone.``, the detector attribute holding :class:`mmrefer.models.backbones.BEiT3`).

Example::

    python tools/model_converters/beit3_to_mmrefer.py beit3_base_patch16_224.pth \
        beit3_base_480_mmrefer.pth --img-size 480
"""
import argparse
import os
import os.path as osp
import sys

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', help='official checkpoint (.pth / .zip saved by torch.save)')
    p.add_argument('dst', help='output file')
    p.add_argument('--img-size', type=int, nargs='+', default=[480],
                   help='target image size: one int or H W (default 480)')
    p.add_argument('--patch-size', type=int, default=16)
    p.add_argument('--prefix', default='backbone.',
                   help="prefix of the written keys ('' for a bare backbone state dict)")
    p.add_argument('--src-prefix', default=None,
                   help='prefix of the backbone keys in SRC (default: detect beit3./backbone.)')
    return p.parse_args(argv)


def convert(src: str, dst: str, img_size=(480, ), patch_size: int = 16,
            prefix: str = 'backbone.', src_prefix=None) -> dict:
    """Convert ``src`` and save to ``dst``; returns the written state dict."""
    from mmrefer.models.backbones._beit3_checkpoint import POS_KEY, convert_official
    from mmrefer.utils import safe_torch_load
    from mmrefer.utils.checkpoint_report import format_groups, group_keys
    hw = tuple(img_size) * 2 if len(img_size) == 1 else tuple(img_size)
    if len(hw) != 2 or hw[0] % patch_size or hw[1] % patch_size:
        raise ValueError(f'--img-size {img_size} must be 1 or 2 ints divisible by '
                         f'--patch-size {patch_size}')
    grid = (hw[0] // patch_size, hw[1] // patch_size)
    ckpt = safe_torch_load(src, map_location='cpu')
    sd, dropped = convert_official(ckpt, grid, src_prefix, src)
    if POS_KEY not in sd:
        raise KeyError(f'{src}: no {POS_KEY} after prefix stripping; is it a BEiT-3 checkpoint?')
    out = {prefix + k: v.contiguous() for k, v in sd.items()}
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(out, dst)
    print(f'{src} -> {dst}: {len(out)} tensors, vision positions '
          f'{tuple(sd[POS_KEY].shape)} for grid {grid}')
    if dropped:
        print(f'dropped {len(dropped)} keys outside the backbone: '
              f'{format_groups(group_keys(dropped, others=[]))}')
    return out


def main(argv=None):
    args = parse_args(argv)
    convert(args.src, args.dst, args.img_size, args.patch_size, args.prefix, args.src_prefix)


if __name__ == '__main__':
    sys.exit(main())

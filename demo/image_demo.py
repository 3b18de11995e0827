"""Ground one or more sentences in an image and write a picture per sentence.

    python demo/image_demo.py IMAGE "SENTENCE" CONFIG --weights CKPT --out-dir DIR \
        [--show-extras] [--device cpu] [--overwrite] [--cfg-options model.tokenizer.spm_path=...]

CONFIG is a config file or a config name under configs/ (e.g. ``latentvg_tiny_synthref``);
several sentences may be given separated by ``|``. Writes ``DIR/<image>_<k>.png`` (mask overlay,
box, sentence as title, "no target" when the model says so; ``--show-extras`` adds the Latent-VG
per-expression maps or the InstAlign per-instance masks) and prints each answer. The arguments
(sentences, image, output folder) are checked before the model is built, and existing pictures
are kept unless ``--overwrite``.
"""
import argparse
import os.path as osp
import sys

import matplotlib
from mmengine.config import DictAction

matplotlib.use('Agg')  # no display needed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='mmrefer image demo')
    p.add_argument('image', help='image file')
    p.add_argument('sentence', help='referring sentence; several separated by "|"')
    p.add_argument('config', help='config file or config name')
    p.add_argument('--weights', default=None, help='checkpoint (random init when omitted)')
    p.add_argument('--out-dir', default='outputs/demo', help='folder for the PNG files')
    p.add_argument('--show-extras', action='store_true',
                   help='add per-expression (Latent-VG) / per-instance (InstAlign) panels')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:0, ...')
    p.add_argument('--overwrite', action='store_true', help='replace existing <image>_<k>.png')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config settings, key=value pairs (e.g. a tokenizer path)')
    args = p.parse_args(argv)
    args.sentences = [s.strip() for s in args.sentence.split('|') if s.strip()]
    if not args.sentences:
        p.error(f'SENTENCE {args.sentence!r} holds no sentence (separate several with "|")')
    if not osp.isfile(args.image):
        p.error(f'image file not found: {args.image}')
    from mmrefer.utils.paths import output_folder_problem
    problem = output_folder_problem(args.out_dir)
    if problem:
        p.error(f'--out-dir {args.out_dir}: {problem}')
    stem = osp.splitext(osp.basename(args.image))[0]
    args.outputs = [osp.join(args.out_dir, f'{stem}_{k}.png') for k in range(len(args.sentences))]
    taken = [o for o in args.outputs if osp.exists(o)]
    if taken and not args.overwrite:
        p.error(f'{", ".join(taken[:3])} exist(s); use --overwrite or another --out-dir')
    return args


def main(argv=None):
    args = parse_args(argv)
    import numpy as np

    from mmrefer.apis import RefInferencer
    from mmrefer.visualization import RefLocalVisualizer, write_png

    image = RefInferencer.load_image(args.image)  # BGR; an undecodable file fails here
    inferencer = RefInferencer(args.config, weights=args.weights, device=args.device,
                               cfg_options=args.cfg_options)
    results = inferencer(image, args.sentences)
    vis = RefLocalVisualizer.get_instance('mmrefer_image_demo')
    for k, res in enumerate(results):
        canvas = vis.draw_ref(image[..., ::-1], res['text'], pred=res,
                              show_extras=args.show_extras)
        out = write_png(canvas, args.outputs[k])
        box = ', '.join(f'{v:.1f}' for v in res['box'])
        score = 'n/a' if res['score'] is None else f"{res['score']:.3f}"
        print(f"[{k}] {res['text']!r}: no_target={res['no_target']} score={score} "
              f"box=[{box}] mask_pixels={int(np.count_nonzero(res['mask']))} -> {out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())

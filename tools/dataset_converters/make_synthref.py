"""Generate SynthRef, the small synthetic referring dataset in the official file formats.

    python tools/dataset_converters/make_synthref.py --out data/synthref [--small] [--seed 0]
        [--image-sizes 640x427,427x640,... | --coco-sizes]

Writes images/train2014/*.jpg, refcoco/{instances.json,refs(unc).p},
grefcoco/{instances.json,grefs(unc).json}, refzom/{instances.json,refs(final).p} and
tokenizers/{beit3.spm,roberta/} (see mmrefer/datasets/synthetic.py). By default the images are
96-160 px; ``--image-sizes`` cycles through the given WIDTHxHEIGHT sizes with everything drawn
scaled by min(w, h) / 128, and ``--coco-sizes`` is that option with COCO's common photo sizes
(640x427, 427x640, 500x333, 640x480, 480x640).
"""
import argparse
import json

from mmrefer.datasets.safe_pickle import load_refs
from mmrefer.datasets.synthetic import (SYNTHREF_COCO_IMAGE_SIZES, SYNTHREF_DEFAULT_SIZES,
                                        SYNTHREF_SMALL_SIZES, make_synthref, parse_image_sizes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/synthref', help='output folder')
    parser.add_argument('--small', action='store_true',
                        help=f'test-fixture size {SYNTHREF_SMALL_SIZES} instead of '
                        f'{SYNTHREF_DEFAULT_SIZES}')
    parser.add_argument('--num-images', type=json.loads, default=None,
                        help='images per split as JSON, e.g. \'{"train": 100, "val": 20}\'')
    parser.add_argument('--seed', type=int, default=0)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument('--image-sizes', default=None,
                       help='comma-separated WIDTHxHEIGHT image sizes, cycled over the images '
                       '(default: random 96-160 px)')
    sizes.add_argument('--coco-sizes', action='store_true',
                       help='--image-sizes ' + ','.join(f'{w}x{h}'
                                                        for w, h in SYNTHREF_COCO_IMAGE_SIZES))
    args = parser.parse_args(argv)
    try:
        args.image_sizes = (SYNTHREF_COCO_IMAGE_SIZES if args.coco_sizes else
                            parse_image_sizes(args.image_sizes))
    except ValueError as e:
        parser.error(f'--image-sizes: {e}')
    return args


def main(argv=None):
    args = parse_args(argv)
    sizes = args.num_images or (SYNTHREF_SMALL_SIZES if args.small else SYNTHREF_DEFAULT_SIZES)
    paths = make_synthref(args.out, num_images=sizes, seed=args.seed,
                          image_sizes=args.image_sizes)
    print(f'SynthRef written to {args.out} (images per split: {sizes}; image sizes: '
          f'{args.image_sizes or "random 96-160 px"})')
    for key in ('refcoco_refs', 'grefcoco_refs', 'refzom_refs'):
        refs = load_refs(paths[key])
        n_sent = sum(len(r['sentences']) for r in refs)
        print(f'  {paths[key]}: {len(refs)} refs, {n_sent} sentences')
    print(f'  tokenizers: {paths["beit3_spm"]}, {paths["roberta_dir"]}')
    return paths


if __name__ == '__main__':
    main()

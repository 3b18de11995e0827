"""Generate SynthRef, the small synthetic referring dataset in the official file formats.

    python tools/dataset_converters/make_synthref.py --out data/synthref [--small] [--seed 0]

Writes images/train2014/*.jpg, refcoco/{instances.json,refs(unc).p},
grefcoco/{instances.json,grefs(unc).json}, refzom/{instances.json,refs(final).p} and
tokenizers/{beit3.spm,roberta/} (see mmrefer/datasets/synthetic.py).
"""
import argparse
import json

from mmrefer.datasets.safe_pickle import load_refs
from mmrefer.datasets.synthetic import (SYNTHREF_DEFAULT_SIZES, SYNTHREF_SMALL_SIZES,
                                        make_synthref)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/synthref', help='output folder')
    parser.add_argument('--small', action='store_true',
                        help=f'test-fixture size {SYNTHREF_SMALL_SIZES} instead of '
                        f'{SYNTHREF_DEFAULT_SIZES}')
    parser.add_argument('--num-images', type=json.loads, default=None,
                        help='images per split as JSON, e.g. \'{"train": 100, "val": 20}\'')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    sizes = args.num_images or (SYNTHREF_SMALL_SIZES if args.small else SYNTHREF_DEFAULT_SIZES)
    paths = make_synthref(args.out, num_images=sizes, seed=args.seed)
    print(f'SynthRef written to {args.out} (images per split: {sizes})')
    for key in ('refcoco_refs', 'grefcoco_refs', 'refzom_refs'):
        refs = load_refs(paths[key])
        n_sent = sum(len(r['sentences']) for r in refs)
        print(f'  {paths[key]}: {len(refs)} refs, {n_sent} sentences')
    print(f'  tokenizers: {paths["beit3_spm"]}, {paths["roberta_dir"]}')


if __name__ == '__main__':
    main()

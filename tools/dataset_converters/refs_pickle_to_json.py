"""Convert a refs pickle (``refs(unc).p``, ``refs(final).p``, ``grefs(unc).p``) to JSON.

    python tools/dataset_converters/refs_pickle_to_json.py data/refcoco/refs(unc).p \
        [--out data/refcoco/refs(unc).json]

The pickle is read with mmrefer's restricted unpickler (builtin containers and scalars only; any
other global is refused and nothing runs). Prints the number of refs and sentences per split and,
for Ref-ZOM, per ``source``. The datasets accept the JSON in place of the pickle
(``split_file=...json``): the format is decided by content.
"""
import argparse
import json
import os.path as osp
from collections import Counter

from tqdm import tqdm

from mmrefer.datasets.safe_pickle import load_refs


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode('latin1')
    return obj


def convert(src: str, dst: str) -> dict:
    """Convert ``src`` to ``dst``; return counts ``{(split, source): (refs, sentences)}``."""
    refs = load_refs(src)
    out, counts = [], Counter()
    for ref in tqdm(refs, desc=osp.basename(src), unit='ref'):
        out.append(_jsonable(ref))
        key = (str(ref.get('split')), str(ref.get('source', '-')))
        counts[key + ('refs', )] += 1
        counts[key + ('sentences', )] += len(ref.get('sentences', []))
    with open(dst, 'w') as f:
        json.dump(out, f)
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='refs pickle')
    parser.add_argument('--out', help='output JSON (default: src with .json extension)')
    args = parser.parse_args()
    dst = args.out or osp.splitext(args.src)[0] + '.json'
    counts = convert(args.src, dst)
    print(f'wrote {dst}')
    print(f'{"split":<8} {"source":<6} {"refs":>8} {"sentences":>10}')
    keys = sorted({k[:2] for k in counts})
    for split, source in keys:
        print(f'{split:<8} {source:<6} {counts[(split, source, "refs")]:>8} '
              f'{counts[(split, source, "sentences")]:>10}')
    print(f'{"total":<15} {sum(v for k, v in counts.items() if k[2] == "refs"):>8} '
          f'{sum(v for k, v in counts.items() if k[2] == "sentences"):>10}')


if __name__ == '__main__':
    main()

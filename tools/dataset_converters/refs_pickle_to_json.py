"""Convert a refs pickle (``refs(unc).p``, ``refs(final).p``, ``grefs(unc).p``) to JSON.

    python tools/dataset_converters/refs_pickle_to_json.py data/refcoco/refs(unc).p \
        [--out data/refcoco/refs(unc).json] [--trust-pickle] [--overwrite]

The pickle is read with mmrefer's restricted unpickler (builtin containers and scalars only; any
other global is refused and nothing runs). A pickle the datasets refuse because it holds other
objects (numpy integers, say) converts with ``--trust-pickle``, which loads it with plain
``pickle``: loading a pickle can run code, so use it only on a file from a source you trust.
numpy scalars and arrays become JSON numbers and lists. Prints the number of refs and sentences
per split and, for Ref-ZOM, per ``source``. The datasets accept the JSON in place of the pickle
(``split_file=...json``): the format is decided by content. The output never replaces the
input, an existing output is kept unless ``--overwrite``, and it is written to a temporary file
first and renamed, so an interrupted run leaves no half-written JSON.
"""
import argparse
import json
import os
import os.path as osp
import pickle
from collections import Counter

from tqdm import tqdm

from mmrefer.datasets.safe_pickle import (check_refs, load_refs, read_annotation_file,
                                          unpickle_py2_text)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode('latin1')
    if type(obj).__module__ == 'numpy' and hasattr(obj, 'tolist'):  # numpy scalar or array
        return _jsonable(obj.tolist())
    return obj


def load_trusted_refs(path: str) -> list:
    """Refs from a pickle loaded with plain ``pickle`` (runs whatever the file asks for)."""
    data = read_annotation_file(path, 'refs')
    return check_refs(unpickle_py2_text(lambda enc: pickle.loads(data, encoding=enc)), path)


def convert(src: str, dst: str, trust_pickle: bool = False) -> dict:
    """Convert ``src`` to ``dst``; return counts ``{(split, source): (refs, sentences)}``.
    ``trust_pickle``: load with plain ``pickle`` instead of the restricted unpickler."""
    refs = load_trusted_refs(src) if trust_pickle else load_refs(src)
    out, counts = [], Counter()
    for ref in tqdm(refs, desc=osp.basename(src), unit='ref'):
        out.append(_jsonable(ref))
        key = (str(ref.get('split')), str(ref.get('source', '-')))
        counts[key + ('refs', )] += 1
        counts[key + ('sentences', )] += len(ref.get('sentences', []))
    tmp = dst + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(out, f)
    os.replace(tmp, dst)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='refs pickle')
    parser.add_argument('--out', help='output JSON (default: src with .json extension)')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='load with plain pickle (it can run code: trusted files only), for '
                        'pickles holding objects the restricted unpickler refuses (numpy ints)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output')
    args = parser.parse_args(argv)
    dst = args.out or osp.splitext(args.src)[0] + '.json'
    if not osp.isfile(args.src):
        parser.error(f'refs file not found: {args.src}')
    if osp.exists(dst) and osp.samefile(dst, args.src):
        parser.error(f'the output {dst} is the input itself'
                     + ('' if args.out else ' (it is JSON already: nothing to convert)')
                     + '; give another --out')
    if osp.exists(dst) and not args.overwrite:
        parser.error(f'{dst} exists; use --overwrite to replace it, or another --out')
    folder = osp.dirname(osp.abspath(dst))
    if not osp.isdir(folder):
        parser.error(f'--out {dst}: folder {folder} does not exist')
    counts = convert(args.src, dst, trust_pickle=args.trust_pickle)
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

"""Batch inference: many images x sentences -> ``results.jsonl`` (resumable), optional overlays.

    python tools/inference.py CONFIG --weights CKPT --input FILE.jsonl --out-dir DIR \
        [--batch-size 8] [--device cpu] [--show [--show-extras]] [--overwrite] \
        [--cfg-options KEY=VALUE ...]
    python tools/inference.py CONFIG --weights CKPT --input FOLDER --sentences FILE.txt \
        --out-dir DIR [...]

Input: a ``.jsonl`` file, one JSON object per line, ``{"image": path, "sentences": [...]}`` (a
relative image path is relative to the jsonl's folder; blank lines are skipped), or a folder of
images (``.jpg .jpeg .png .bmp .ppm .pgm .tif .tiff .webp``, sorted by name, not recursive)
with ``--sentences`` a text file of sentences, one per line, every image getting every sentence.

Output ``DIR/results.jsonl``: one record per input line, in input order::

    {"line": n, "image": path, "height": h, "width": w,
     "results": [{"sentence": s, "mask": {"size": [h, w], "counts": RLE str},
                  "box": [x1, y1, x2, y2], "no_target": bool, "score": float}, ...],
     "input_sha1": ...}
    {"line": n, "image": path, "error": "<file> line n: <cause>", "input_sha1": ...}

``n`` is the 1-based line number in the jsonl (in folder mode, the image's rank); ``image`` is
the path as written in the jsonl (folder mode: the file name); the mask is pycocotools' RLE of
the answer at the image's own size; ``input_sha1`` fingerprints the line's image and sentences
for the resume check. ``--show`` also writes ``DIR/vis/<n>_<image stem>_<k>.png`` per sentence
(``RefLocalVisualizer.draw_ref``; ``--show-extras`` adds the extras panels).

Resume: every record is appended as one complete line, flushed and fsync'ed. Rerunning the same
command reads ``results.jsonl``, drops a torn last line, checks that each record still matches
its input line (line number and image / sentences; a changed input is an error) and goes on
with the next input line; ``DIR/run.json`` keeps the config, weights and input of the run, and
a rerun with other ones is refused (so are records whose ``run.json`` is missing or unreadable).
``--overwrite`` starts again: once the model, its weights and its tokenizer have loaded, it
deletes ``results.jsonl``, ``run.json`` and the ``vis/`` pictures this tool drew (other files in
``DIR`` stay).

Exit status: 0 when every line has results, 1 when some are error records, 2 for usage errors
(bad arguments, missing input / config / checkpoint, changed input), 130 when interrupted.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import re
import sys
from collections import deque
from typing import List, Optional

import numpy as np
from mmengine.config import DictAction

VIS_NAME = re.compile(r'\d{6}_.+_\d+\.png')  # vis/<line>_<image stem>_<k>.png
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
RESULTS = 'results.jsonl'
RUN_META = 'run.json'
MAX_LISTED_ERRORS = 20


class UsageError(Exception):
    """A problem with the command line or the run's files: exit status 2."""


class InputLine:
    """One input line: ``line`` number, ``image`` as written, resolved ``path``,
    ``sentences``, the fingerprint ``key`` and, for a bad line, ``error``."""

    def __init__(self, line: int, where: str, key: str, image: Optional[str] = None,
                 path: Optional[str] = None, sentences: Optional[List[str]] = None,
                 error: Optional[str] = None) -> None:
        self.line, self.where, self.key = line, where, key
        self.image, self.path, self.sentences, self.error = image, path, sentences, error
        self.img = None  # BGR array while it is being answered
        self.answers = None  # list of answers once queued for the model


# ---------------------------------------------------------------------------------- input
def fingerprint(image, sentences) -> str:
    """SHA-1 of the canonical JSON of ``{"image": image, "sentences": sentences}``."""
    text = json.dumps({'image': image, 'sentences': sentences}, sort_keys=True,
                      ensure_ascii=False, separators=(',', ':'), default=repr)
    return hashlib.sha1(text.encode('utf-8')).hexdigest()


def check_sentences(sentences, where: str) -> Optional[str]:
    """The error text for a bad ``sentences`` value, ``None`` when it is a non-empty list of
    non-blank strings."""
    if not isinstance(sentences, list):
        return (f"{where}: field 'sentences' must be a list of strings, got "
                f'{type(sentences).__name__} {sentences!r:.80}')
    if not sentences:
        return f"{where}: field 'sentences' is empty"
    for k, s in enumerate(sentences):
        if not isinstance(s, str):
            return f"{where}: field 'sentences'[{k}] must be a string, got {s!r:.80}"
        if not s.strip():
            return f"{where}: field 'sentences'[{k}] is an empty sentence ({s!r})"
    return None


def parse_jsonl_line(n: int, raw: bytes, base: str, name: str) -> InputLine:
    """Line ``n`` (bytes, without the newline) of the jsonl ``name`` -> :class:`InputLine`;
    relative image paths are joined to ``base`` (the jsonl's folder). A bad line becomes an
    :class:`InputLine` with ``error`` set (naming the file, the line and the field)."""
    where = f'{name} line {n}'
    raw_key = hashlib.sha1(raw).hexdigest()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        return InputLine(n, where, raw_key, error=f'{where}: not UTF-8 text ({e})')
    try:
        obj = json.loads(text)
    except ValueError as e:
        msg = getattr(e, 'msg', str(e))
        col = getattr(e, 'colno', None)
        at = f' at column {col}' if col is not None else ''
        return InputLine(n, where, raw_key,
                         error=f'{where}: malformed JSON ({msg}{at}): {text.strip()[:80]!r}')
    if not isinstance(obj, dict):
        return InputLine(n, where, raw_key,
                         error=f'{where}: expected a JSON object {{"image": ..., "sentences": '
                         f'[...]}}, got {type(obj).__name__}')
    image, sentences = obj.get('image'), obj.get('sentences')
    key = fingerprint(image, sentences)
    missing = [k for k in ('image', 'sentences') if k not in obj]
    if missing:
        fields = ' and '.join(f"'{k}'" for k in missing)
        return InputLine(n, where, key, image=image if isinstance(image, str) else None,
                         error=f'{where}: missing field {fields}')
    if not isinstance(image, str) or not image.strip():
        return InputLine(n, where, key, error=f"{where}: field 'image' must be a non-empty "
                         f'path string, got {image!r:.80}')
    if isinstance(sentences, str):  # one sentence, as RefInferencer accepts it
        sentences = [sentences]
    bad = check_sentences(sentences, where)
    if bad:
        return InputLine(n, where, key, image=image, error=bad)
    path = osp.join(base, osp.expanduser(image))
    return InputLine(n, where, key, image=image, path=path, sentences=sentences)


def read_jsonl(path: str) -> List[InputLine]:
    """Every non-blank line of the jsonl file ``path`` as an :class:`InputLine` (physical,
    1-based line numbers)."""
    with open(path, 'rb') as f:
        data = f.read()
    base = osp.dirname(osp.abspath(path))
    items = []
    if data.startswith(b'\xef\xbb\xbf'):  # a UTF-8 byte order mark (some Windows editors)
        data = data[3:]
    for n, raw in enumerate(data.split(b'\n'), 1):
        raw = raw.rstrip(b'\r')
        if raw.strip():
            items.append(parse_jsonl_line(n, raw, base, path))
    return items


def read_folder(folder: str, sentences_file: str) -> List[InputLine]:
    """Every image of ``folder`` (by name) with every sentence of ``sentences_file``."""
    if not osp.isfile(sentences_file):
        raise UsageError(f'--sentences file not found: {sentences_file}')
    try:
        with open(sentences_file, encoding='utf-8') as f:
            sentences = [s.strip() for s in f.read().splitlines() if s.strip()]
    except UnicodeDecodeError as e:
        raise UsageError(f'--sentences file {sentences_file} is not UTF-8 text ({e})') from e
    if not sentences:
        raise UsageError(f'--sentences file {sentences_file} has no sentence (one per line)')
    files = sorted(n for n in os.listdir(folder) if osp.isfile(osp.join(folder, n)))
    names = [n for n in files if n.lower().endswith(IMG_EXTENSIONS)]
    if not names:
        raise UsageError(f'--input folder {folder} has no image file ({" ".join(IMG_EXTENSIONS)})')
    skipped = [n for n in files if n not in names]
    if skipped:
        print(f'--input {folder}: {len(skipped)} file(s) skipped, not {" ".join(IMG_EXTENSIONS)}:'
              f' {", ".join(skipped[:5])}{" ..." if len(skipped) > 5 else ""}', file=sys.stderr)
    return [InputLine(n, f'{osp.join(folder, name)} (image {n})', fingerprint(name, sentences),
                      image=name, path=osp.join(folder, name), sentences=sentences)
            for n, name in enumerate(names, 1)]


# ---------------------------------------------------------------------------------- output
def encode_mask(mask: np.ndarray) -> dict:
    """bool ``[h, w]`` -> COCO RLE ``{"size": [h, w], "counts": str}`` (pycocotools
    ``encode``; ``counts`` decoded from bytes)."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {'size': [int(v) for v in rle['size']], 'counts': rle['counts'].decode('ascii')}


def answer_record(sentence: str, ans: dict) -> dict:
    """One RefInferencer answer -> ``{"sentence", "mask" (RLE), "box", "no_target",
    "score"}``."""
    score = ans.get('score')
    return {'sentence': sentence, 'mask': encode_mask(ans['mask']),
            'box': [float(v) for v in ans['box']], 'no_target': bool(ans['no_target']),
            'score': None if score is None else float(score)}


def append_record(f, record: dict) -> None:
    """Append ``record`` as one JSON line, flushed and fsync'ed (complete on disk on return)."""
    f.write((json.dumps(record, ensure_ascii=False, separators=(',', ':')) + '\n')
            .encode('utf-8'))
    f.flush()
    os.fsync(f.fileno())


def fsync_dir(path: str) -> None:
    """fsync a folder so that a file created in it survives a power loss (POSIX only)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_record(rec) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get('line'), int)
            and isinstance(rec.get('input_sha1'), str) and ('results' in rec or 'error' in rec))


def read_done(results: str, inputs: List[InputLine], input_name: str) -> List[dict]:
    """The records already in ``results`` (a torn last line is cut off the file), checked
    against the input lines they answer.

    Raises:
        UsageError: a record in the middle is not a result record, or a record does not
            match its input line (line number, image and sentences): the input changed.
    """
    if not osp.isfile(results):
        return []
    with open(results, 'rb+') as f:
        data = f.read()
        lines = data[:data.rfind(b'\n') + 1].split(b'\n')[:-1]  # complete lines only
        records, keep = [], 0
        for i, raw in enumerate(lines):
            try:
                rec = json.loads(raw.decode('utf-8'))
            except ValueError:  # UnicodeDecodeError is a ValueError
                rec = None
            if not is_record(rec):
                if i == len(lines) - 1:  # garbage after a crash: torn
                    break
                raise UsageError(f'{results} line {i + 1} is not a result record: {raw[:80]!r};'
                                 ' fix or delete the file, or use --overwrite to start again')
            records.append(rec)
            keep += len(raw) + 1
        if keep < len(data):
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            print(f'repaired {results}: dropped a torn last line ({len(data) - keep} bytes)',
                  file=sys.stderr)
    if len(records) > len(inputs):
        raise UsageError(f'{results} has {len(records)} records but {input_name} has only '
                         f'{len(inputs)} input lines: the input changed since the run started; '
                         'rerun with the original input, or use --overwrite to start again')
    for rec, item in zip(records, inputs):
        if rec['line'] != item.line or rec['input_sha1'] != item.key:
            raise UsageError(f'{input_name}: {item.where} (image {item.image!r}) does not match '
                             f'the record of line {rec["line"]} in {results}: the input changed '
                             'since the run started (image or sentences differ); rerun with the '
                             'original input, or use --overwrite to start again')
    return records


def check_run_meta(out_dir: str, meta: dict) -> None:
    """On a rerun, refuse other config / weights / input / sentences / cfg-options than the
    run that wrote ``DIR/results.jsonl``, and refuse to add to records whose ``run.json`` is
    missing or unreadable (their settings are unknown)."""
    path = osp.join(out_dir, RUN_META)
    results = osp.join(out_dir, RESULTS)
    if not (osp.isfile(results) and osp.getsize(results) > 0):
        return
    old = None
    if osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            try:
                old = json.load(f)
            except ValueError:
                old = None
    if not isinstance(old, dict):
        state = 'unreadable' if osp.isfile(path) else 'missing'
        raise UsageError(f'{results} holds records but {path} is {state}, so the settings of '
                         'that run are unknown: restore run.json, use another --out-dir, or '
                         '--overwrite to start again')
    for k, v in meta.items():
        if old.get(k) != v:
            raise UsageError(f'{out_dir} holds the results of a run with {k} = '
                             f'{old.get(k)!r}, not {v!r}: rerun with the same arguments,'
                             ' use another --out-dir, or --overwrite to start again')


def write_run_meta(out_dir: str, meta: dict) -> None:
    """``DIR/run.json`` (atomically): the settings of the run that writes ``results.jsonl``."""
    path = osp.join(out_dir, RUN_META)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def clear_outputs(out_dir: str) -> None:
    """``--overwrite``: delete this tool's files in ``DIR`` (``results.jsonl``, ``run.json`` and
    the ``vis/<n>_<image>_<k>.png`` it drew); anything else there is kept."""
    for name in (RESULTS, RUN_META):
        if osp.isfile(osp.join(out_dir, name)):
            os.remove(osp.join(out_dir, name))
    vis = osp.join(out_dir, 'vis')
    if osp.isdir(vis):
        for name in os.listdir(vis):
            if VIS_NAME.fullmatch(name) and osp.isfile(osp.join(vis, name)):
                os.remove(osp.join(vis, name))
        if not os.listdir(vis):
            os.rmdir(vis)


def check_tokenizer(model) -> None:
    """Read the model's tokenizer files now (they load lazily, at the first batch), so that a
    wrong path is a usage error before anything is written or deleted."""
    from mmrefer.models.language_models import model_tokenizer
    tok = model_tokenizer(model)
    if tok is not None:
        tok(['a'])


# ---------------------------------------------------------------------------------- main
def parse_args(argv=None):
    def positive(text):
        v = int(text)
        if v < 1:
            raise argparse.ArgumentTypeError(f'must be >= 1, got {v}')
        return v

    p = argparse.ArgumentParser(
        description='mmrefer batch inference: images x sentences -> DIR/results.jsonl '
        '(resumable; rerun the same command to continue)')
    p.add_argument('config', help='config file or config name (e.g. latentvg_tiny_synthref)')
    p.add_argument('--weights', default=None, help='checkpoint (random init when omitted)')
    p.add_argument('--input', required=True,
                   help='a .jsonl file ({"image": path, "sentences": [...]} per line) or a '
                   'folder of images (with --sentences)')
    p.add_argument('--sentences', default=None,
                   help='with a folder --input: text file of sentences, one per line')
    p.add_argument('--out-dir', required=True, help='folder for results.jsonl (and vis/)')
    p.add_argument('--batch-size', type=positive, default=8,
                   help='samples (image-sentence pairs) per model call, across images')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:0, ...')
    p.add_argument('--show', action='store_true',
                   help='also draw DIR/vis/<line>_<image>_<k>.png per sentence')
    p.add_argument('--show-extras', action='store_true',
                   help='with --show: add the per-expression / per-instance panels')
    p.add_argument('--overwrite', action='store_true',
                   help='start again: once the model has loaded, delete DIR/results.jsonl, '
                   'run.json and the vis/ pictures of this tool')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config settings, key=value pairs (e.g. a tokenizer path)')
    return p.parse_args(argv)


def read_inputs(args) -> List[InputLine]:
    if not osp.exists(args.input):
        raise UsageError(f'--input not found: {args.input}')
    if osp.isdir(args.input):
        if not args.sentences:
            raise UsageError(f'--input {args.input} is a folder: give --sentences FILE.txt '
                             '(one sentence per line)')
        return read_folder(args.input, args.sentences)
    if args.sentences:
        raise UsageError('--sentences goes with a folder --input; a .jsonl input lists the '
                         'sentences of each image')
    inputs = read_jsonl(args.input)
    if not inputs:
        raise UsageError(f'--input {args.input} has no line')
    return inputs


class Runner:
    """Runs the model over the input lines still to do and appends their records in order."""

    def __init__(self, args, inferencer, out, bar) -> None:
        self.args, self.inferencer, self.out, self.bar = args, inferencer, out, bar
        self.pending = deque()  # lines queued, in input order, until their record is written
        self.waiting = deque()  # lines whose answers are still coming from the model
        self.written, self.errors = 0, []
        self.vis = None
        if args.show:
            import matplotlib
            matplotlib.use('Agg')
            from mmrefer.visualization import RefLocalVisualizer
            self.vis = RefLocalVisualizer.get_instance('mmrefer_batch_inference')

    def pairs(self, todo):
        """(BGR image, sentence) for every sentence of the good lines; bad lines and
        unreadable images are queued as errors."""
        from mmrefer.apis import RefInferencer
        for item in todo:
            if item.error is None:
                try:
                    item.img = RefInferencer.load_image(item.path)
                except (FileNotFoundError, ValueError, OSError) as e:
                    item.error = f"{item.where}: field 'image' = {item.image!r}: {e}"
            self.pending.append(item)
            if item.error is None:
                item.answers = []
                self.waiting.append(item)
                for s in item.sentences:
                    yield item.img, s

    def record(self, item) -> dict:
        if item.error is not None:
            rec = {'line': item.line}
            if item.image is not None:
                rec['image'] = item.image
            rec.update(error=item.error, input_sha1=item.key)
            return rec
        h, w = item.img.shape[:2]
        return {'line': item.line, 'image': item.image, 'height': int(h), 'width': int(w),
                'results': [answer_record(s, a) for s, a in zip(item.sentences, item.answers)],
                'input_sha1': item.key}

    def draw(self, item) -> None:
        from mmrefer.visualization import write_png
        stem = osp.splitext(osp.basename(item.image))[0]
        rgb = item.img[..., ::-1]
        for k, (s, ans) in enumerate(zip(item.sentences, item.answers)):
            canvas = self.vis.draw_ref(rgb, s, pred=ans, show_extras=self.args.show_extras)
            write_png(canvas, osp.join(self.args.out_dir, 'vis', f'{item.line:06d}_{stem}_{k}.png'))

    def flush(self) -> None:
        """Write the records of the finished lines at the head of the queue."""
        while self.pending:
            item = self.pending[0]
            if item.error is None and (item.answers is None
                                       or len(item.answers) < len(item.sentences)):
                return
            if item.error is None and self.vis is not None:
                self.draw(item)  # pictures first: a written record has its pictures
            append_record(self.out, self.record(item))
            if item.error is not None:
                self.errors.append(item.error)
            item.img = item.answers = None
            self.pending.popleft()
            self.written += 1
            self.bar.update(1)

    def run(self, todo) -> None:
        for ans in self.inferencer.iter_pairs(self.pairs(todo),
                                              batch_size=self.args.batch_size):
            item = self.waiting[0]
            item.answers.append(ans)
            if len(item.answers) == len(item.sentences):
                self.waiting.popleft()
                self.flush()
        self.flush()


def summary(results: str, total: int, earlier: List[dict], written: int,
            errors: List[str]) -> None:
    errors = [r['error'] for r in earlier if 'error' in r] + errors
    print(f'{total} input lines, {total - len(errors)} with results, {len(errors)} error records'
          f' ({written} written now, {len(earlier)} by an earlier run) in {results}')
    for e in errors[:MAX_LISTED_ERRORS]:
        print(f'  error: {e}')
    if len(errors) > MAX_LISTED_ERRORS:
        print(f'  ... and {len(errors) - MAX_LISTED_ERRORS} more error records')


def run(args) -> int:
    inputs = read_inputs(args)
    input_name = args.input
    from mmrefer.utils.paths import output_folder_problem
    problem = output_folder_problem(args.out_dir)
    if problem:
        raise UsageError(f'--out-dir {args.out_dir}: {problem}')
    results = osp.join(args.out_dir, RESULTS)
    absent = lambda p: None if p is None else osp.abspath(p)  # noqa: E731
    meta = dict(
        config=absent(args.config) if osp.isfile(args.config) else args.config,
        weights=absent(args.weights), input=absent(args.input), sentences=absent(args.sentences),
        cfg_options=json.loads(json.dumps(args.cfg_options, default=repr)))
    if args.overwrite:
        earlier = []  # the old outputs go only once the model is known to load (below)
    else:
        check_run_meta(args.out_dir, meta)
        earlier = read_done(results, inputs, input_name)
    todo = inputs[len(earlier):]
    if earlier:
        print(f'resuming: {len(earlier)} of {len(inputs)} input lines already in {results}',
              file=sys.stderr)
    written, errors = 0, []
    if not todo:
        write_run_meta(args.out_dir, meta)
    else:
        import torch
        from tqdm import tqdm

        from mmrefer.apis import RefInferencer
        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            raise UsageError(f'--device {args.device}: {e}') from e
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise UsageError(f'--device {args.device}: CUDA is not available to this torch '
                             f'({torch.__version__})')
        try:
            inferencer = RefInferencer(args.config, weights=args.weights, device=args.device,
                                       batch_size=args.batch_size, cfg_options=args.cfg_options)
            check_tokenizer(inferencer.model)
        except (FileNotFoundError, ValueError) as e:  # missing files, a checkpoint that fits not
            raise UsageError(str(e)) from e
        if args.overwrite:
            clear_outputs(args.out_dir)
        write_run_meta(args.out_dir, meta)
        new_file = not osp.isfile(results)
        with open(results, 'ab') as out, tqdm(total=len(inputs), initial=len(earlier),
                                              unit='line', file=sys.stderr, desc='inference',
                                              dynamic_ncols=True) as bar:
            if new_file:
                fsync_dir(args.out_dir)
            runner = Runner(args, inferencer, out, bar)
            try:
                runner.run(todo)
            finally:
                written, errors = runner.written, runner.errors
    summary(results, len(inputs), earlier, written, errors)
    n_err = sum('error' in r for r in earlier) + len(errors)
    return 1 if n_err else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f'{osp.basename(sys.argv[0]) or "inference.py"}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'\ninterrupted: run the same command again to continue where it stopped '
              f'({osp.join(args.out_dir, RESULTS)} holds every finished line)', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())

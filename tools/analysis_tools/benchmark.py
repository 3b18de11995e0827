"""Speed and memory of an mmrefer config: data pipeline, inference, one training step, compile.

    # the train pipeline alone (no model is built): real-size JPEGs required
    python tools/analysis_tools/benchmark.py CONFIG --pipeline-only [--workers N] \
        [--data-iters 200] [--make-synthref DIR | --cfg-options train_dataloader...data_root=DIR]
    # inference (+ the train pipeline rate unless --skip-pipeline)
    python tools/analysis_tools/benchmark.py CONFIG [--weights CKPT] [--batch-size 4] \
        [--iters 20] [--warmup 2] [--amp] [--compile] [--device cpu|cuda] [--out r.json]
    # one training step (peak memory, step time); with_cp through --cfg-options
    python tools/analysis_tools/benchmark.py CONFIG --train-step --batch-size 2 --iters 1 \
        [--cfg-options model.backbone.with_cp=True] [--compile] [--explain]

Modes and what they report (``key : value`` lines on stdout, JSON with ``--out``):

* **pipeline** (``--pipeline-only``; measured first in the other modes unless ``--skip-pipeline``):
  ``dataset[i]`` of the config's **train** dataset (file loading, JPEG decoding, annotation
  decoding, ``RefResize`` incl. polygon re-rasterisation, tokenisation when the pipeline has it,
  packing), in this process, over ``--data-iters`` samples drawn in a seeded random order:
  ``pipeline_samples_per_s_per_worker``; ``pipeline_image_px`` (mean decoded width x height:
  proof of real-size JPEGs), ``pipeline_samples_per_cpu_s`` (per CPU-second of the process: one
  dedicated core's rate), ``pipeline_decode_ms``; with ``--workers N`` also the config's own
  train dataloader (``Runner.build_dataloader``: its sampler, batch size and collate) with ``N``
  worker processes: ``dataloader_samples_per_s`` (total) and
  ``dataloader_samples_per_s_per_worker`` (wall-clock).
  The train dataset must be on disk: there is no synthetic fallback. ``--make-synthref DIR``
  writes SynthRef at COCO photo sizes (``make_synthref(image_sizes=SYNTHREF_COCO_IMAGE_SIZES)``,
  with ``refcoco+/`` and ``refcocog/`` aliases for the combined-RefCOCO config) and points the
  config at it;
* **inference** (default): ``latency_b1_ms`` / ``images_per_s_b1`` and ``latency_bN_ms`` /
  ``images_per_s_bN`` of ``model(..., mode='predict')`` (data preprocessing done once
  beforehand; ``latency_b*_cpu_ms``: the process's CPU time per call, all threads),
  ``backbone_bN_ms`` / ``full_to_backbone_ratio`` (:func:`backbone_call`), ``peak_rss_mb``,
  ``cuda_max_allocated_mb``; with ``--compile`` also ``compiled_latency_bN_ms`` /
  ``compiled_latency_bN_cpu_ms``, ``compile_first_call_s``, ``compile_speedup_bN`` (eager /
  compiled wall time) and ``compile_speedup_bN_cpu`` (the same from the process's CPU time,
  steadier on a shared machine); ``torch.compile`` of ``model.forward``, ``--compile-backend``
  (default inductor). The model's inputs come from the config's test dataset when it is on
  disk, else from random images through the inference pipeline (``data_source`` says which:
  this only feeds the network, no data rate is measured on it);
* **train step** (``--train-step``): ``model.train_step`` (data preprocessor, loss, backward,
  the config's optimizer step) on one fixed batch of ``--batch-size`` train samples, ``--warmup``
  + ``--iters`` times: ``train_step_s`` (median wall), ``train_step_cpu_s`` (median CPU time of
  the process, all threads), ``rss_before_step_mb`` (resident memory with
  the model, the optimizer and the batch built), ``peak_rss_mb`` (``ru_maxrss``, at least
  ``rss_before_step_mb``: the process's peak, i.e. the peak of the training step; run one
  measurement per fresh process), ``with_cp``;
  with ``--compile``: ``compiled_train_step_s`` (``--compile-target forward``, the default, as
  ``tools/train.py --compile``: the loss forward compiled; ``train_step``: the whole
  ``model.train_step`` as mmengine's Runner compiles it; param groups made plain dicts),
  ``compiled_train_step_cpu_s``, ``compile_first_call_s``, ``compile_train_speedup`` and
  ``compile_train_speedup_cpu``; with
  ``--explain``: ``torch._dynamo.explain`` of the loss forward: ``dynamo_graphs``,
  ``dynamo_graph_breaks`` and ``dynamo_break_reasons`` (each distinct reason with the first
  mmrefer / mmdet source line it was hit at, and its count).

``--amp`` autocasts to bf16 (``--amp-dtype fp16`` for fp16 on CUDA), as ``tools/train.py --amp``
(inference only). On CPU ``torch`` keeps no allocator statistics, so memory is the process's
resident set size (RSS).
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import resource
import statistics
import sys
import time
from collections import Counter

import numpy as np
import torch
from mmengine.config import DictAction

TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.dirname(TOOLS))

from mmrefer.datasets.synthetic import make_synthref_coco  # noqa: E402
from mmrefer.utils.setup_env import AMP_DTYPES  # noqa: E402


class DataUnavailable(RuntimeError):
    """The train dataset the pipeline rate needs is absent or empty (the message says how to
    give it one)."""


#: below this mean shorter image side (px) the pipeline rate is not that of real photos
REAL_SIZE_MIN_SIDE = 320


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Benchmark an mmrefer config')
    p.add_argument('config', help='config file or config name')
    p.add_argument('--weights', default=None, help='checkpoint (random init when omitted)')
    p.add_argument('--batch-size', type=int, default=4, help='N for the batched measurement')
    p.add_argument('--iters', type=int, default=20, help='timed iterations per measurement')
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    p.add_argument('--data-iters', type=int, default=200,
                   help='samples timed for the pipeline rates')
    p.add_argument('--workers', type=int, default=0,
                   help='also time the train dataloader with this many worker processes')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--pipeline-only', action='store_true',
                      help='only the train pipeline rate; the model is not built')
    mode.add_argument('--train-step', action='store_true',
                      help='time one training step and its peak memory instead of inference')
    p.add_argument('--skip-pipeline', action='store_true',
                   help='inference / train step without the pipeline rate')
    p.add_argument('--make-synthref', metavar='DIR', default=None,
                   help='write SynthRef at COCO photo sizes to DIR (once) and use it as data')
    p.add_argument('--decode-photos', metavar='DIR', default=None,
                   help='also time JPEG decoding of the *.jpg photos in DIR (e.g. '
                   '../shared/realdata/refcoco_sentences/images)')
    p.add_argument('--compile', action='store_true',
                   help='also time the torch.compile-d model (inference or train step)')
    p.add_argument('--compile-backend', default='inductor',
                   help='torch.compile backend for --compile (inductor; eager / aot_eager '
                   'check dynamo / autograd tracing only)')
    p.add_argument('--compile-target', choices=['forward', 'train_step'], default='forward',
                   help='with --train-step --compile: only the loss forward (optimizer step '
                   'eager; as tools/train.py --compile) or the whole model.train_step (as '
                   "mmengine's Runner with compile=True)")
    p.add_argument('--explain', action='store_true',
                   help='with --train-step: torch._dynamo.explain of the loss forward')
    p.add_argument('--amp', action='store_true', help='autocast (bf16 on CPU, fp16 on CUDA)')
    p.add_argument('--amp-dtype', choices=list(AMP_DTYPES), default='bf16')
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:0, ...')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--seed', type=int, default=0, help='seed of the sample order and the model')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.add_argument('--out', default=None, help='write the results as JSON here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config settings, key=value pairs')
    args = p.parse_args(argv)
    for k in ('batch_size', 'iters', 'data_iters'):
        if getattr(args, k) < 1:
            p.error(f'--{k.replace("_", "-")} must be >= 1, got {getattr(args, k)}')
    for k in ('warmup', 'workers'):
        if getattr(args, k) < 0:
            p.error(f'--{k} must be >= 0, got {getattr(args, k)}')
    if args.pipeline_only and args.skip_pipeline:
        p.error('--pipeline-only and --skip-pipeline exclude each other')
    if args.explain and not args.train_step:
        p.error('--explain needs --train-step (it explains the loss forward)')
    if args.train_step and args.amp:
        p.error('--amp is for inference; train with tools/train.py --amp')
    if args.pipeline_only and (args.compile or args.amp or args.weights):
        p.error('--pipeline-only builds no model: drop --compile / --amp / --weights')
    if args.out:  # before minutes of measuring, not after
        from mmrefer.utils.paths import output_folder_problem
        problem = output_folder_problem(osp.dirname(osp.abspath(args.out)))
        if problem:
            p.error(f'--out {args.out}: {problem}')
        if osp.isdir(args.out):
            p.error(f'--out {args.out}: a folder, not a file path')
    return args


class Bench:
    """Timing helpers: autocast context, CUDA sync, progress bars, median timing."""

    def __init__(self, device: torch.device, amp: bool, amp_dtype, progress: bool):
        self.device = device
        self.amp = amp
        self.dtype = getattr(torch, AMP_DTYPES[amp_dtype])
        self.progress = progress

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def bar(self, n, desc):
        from tqdm import tqdm
        return tqdm(range(n), desc=desc, file=sys.stderr, disable=not self.progress,
                    leave=False, dynamic_ncols=True)

    def time(self, fn, iters, warmup, desc, grad=False):
        """Median wall seconds per call of ``fn`` (``warmup`` untimed calls first); the median
        CPU seconds of this process per call (``time.process_time``, all its threads) are left
        in ``self.last_cpu``."""
        times, cpu = [], []
        for i in self.bar(warmup + iters, desc):
            self.sync()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.set_grad_enabled(grad), self.autocast():
                fn()
            self.sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        self.last_cpu = statistics.median(cpu)
        return statistics.median(times)


def backbone_call(model, data):
    """``(backbone, args, kwargs)``: the bare backbone's call on the batch ``data``.

    * a model may define ``plain_backbone_inputs(data) -> (args, kwargs)``;
      (Latent-VG does: the plain BEiT-3 forward on the same image and the same tokenized
      sentences, i.e. no latent-expression tokens and no per-layer subject distributor /
      concept injector);
    * otherwise (InstAlign's Swin, ...) the arguments the backbone receives inside the full
      forward are captured with a forward pre-hook.
    """
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, torch.nn.Module):
        raise AttributeError(f'{type(model).__name__} has no `backbone` module: the backbone '
                             'ratio needs one')
    plain = getattr(model, 'plain_backbone_inputs', None)
    if callable(plain):
        args, kwargs = plain(data)
        return backbone, args, kwargs
    captured = {}

    def hook(module, args, kwargs):
        if 'args' not in captured:
            captured['args'], captured['kwargs'] = args, kwargs

    handle = backbone.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**data, mode='predict')
    finally:
        handle.remove()
    if 'args' not in captured:
        raise RuntimeError(f'{type(model).__name__}.predict never called self.backbone(...); '
                           'define plain_backbone_inputs(data) on the model')
    return backbone, captured['args'], captured['kwargs']


# ------------------------------------------------------------------------------- data
def _first_line(e: BaseException) -> str:
    return f'{type(e).__name__}: {(str(e).splitlines() or [""])[0][:300]}'


def build_train_dataset(cfg, config_name: str):
    """The config's train dataset (``train_dataloader.dataset``); raises
    :class:`DataUnavailable` naming the config and the way to give it data when its files are
    not on disk."""
    from mmrefer.registry import DATASETS
    loader = cfg.get('train_dataloader')
    if not loader or not loader.get('dataset'):
        raise DataUnavailable(f'{config_name}: the config has no train_dataloader.dataset, so '
                              'there is no train pipeline to measure (--skip-pipeline)')
    hint = ('the pipeline rate is measured on real-size JPEGs only (no synthetic fallback): '
            'pass --make-synthref DIR (SynthRef at COCO photo sizes) or point the config at a '
            'copy of the dataset with --cfg-options train_dataloader.dataset.data_root=DIR '
            '(train_dataloader.dataset.datasets.K.data_root=DIR for each part of a '
            'ConcatDataset)')
    try:
        ds = DATASETS.build(loader['dataset'])
    except (FileNotFoundError, OSError) as e:
        raise DataUnavailable(f'{config_name}: train dataset not on disk ({_first_line(e)}); '
                              f'{hint}') from None
    if len(ds) == 0:
        raise DataUnavailable(f'{config_name}: the train dataset is empty; {hint}')
    return ds


def sample_order(n_total: int, n: int, seed: int) -> list:
    """``n`` indices of a seeded random permutation of ``range(n_total)`` (cycled)."""
    perm = np.random.RandomState(seed).permutation(n_total)
    return [int(perm[i % n_total]) for i in range(n)]


def _image_px(sample) -> tuple:
    """``(w, h)`` of the decoded image (``ori_shape``) of a packed sample."""
    h, w = sample['data_samples'].metainfo['ori_shape'][:2]
    return w, h


def measure_pipeline(dataset, n: int, seed: int, bench: 'Bench', warmup: int = 3) -> dict:
    """Samples/s of ``dataset[i]`` in this process (one worker), and the mean decoded size.

    ``pipeline_samples_per_s_per_worker`` is wall-clock; ``pipeline_samples_per_cpu_s`` divides
    by the CPU time this process used (``time.process_time``), i.e. the rate of one dedicated
    core, which stays meaningful on a machine shared with other jobs. ``pipeline_decode_ms``:
    :func:`decode_ms` of up to 20 of the timed images. ``warmup`` samples are loaded untimed
    first (imports, lazy tokenizers, file cache).
    """
    order = sample_order(len(dataset), n + warmup, seed)
    for i in order[:warmup]:
        dataset[i]
    sizes = []
    t0, c0 = time.perf_counter(), time.process_time()
    for k in bench.bar(n, 'train pipeline'):
        sizes.append(_image_px(dataset[order[warmup + k]]))
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    w, h = np.mean(sizes, axis=0)
    paths = list(dict.fromkeys(dataset[i]['data_samples'].metainfo['img_path']
                               for i in order[warmup:warmup + 40]))[:20]
    out = dict(pipeline_samples=n, pipeline_samples_per_s_per_worker=round(n / dt, 2),
               pipeline_samples_per_cpu_s=round(n / dc, 2),
               pipeline_image_px=f'{w:.0f}x{h:.0f}',
               pipeline_decode_ms=round(decode_ms(paths), 2))
    if min(w, h) < REAL_SIZE_MIN_SIDE:
        print(f'WARNING: the train images average {w:.0f}x{h:.0f} px, smaller than real photos '
              f'(shorter side < {REAL_SIZE_MIN_SIDE}); use --make-synthref DIR for COCO-size '
              'JPEGs', file=sys.stderr)
    return out


def decode_ms(paths, repeats: int = 5) -> float:
    """Mean CPU milliseconds (``time.process_time``) of ``mmcv.imfrombytes`` (the loader's JPEG
    decoding, BGR) over the files ``paths`` (read into memory first; one untimed pass, then
    ``repeats`` timed ones)."""
    import mmcv
    bufs = []
    for p in paths:
        with open(p, 'rb') as f:
            bufs.append(f.read())
    if not bufs:
        raise DataUnavailable('no JPEG file to decode')
    for b in bufs:
        mmcv.imfrombytes(b)
    t0 = time.process_time()
    for _ in range(repeats):
        for b in bufs:
            mmcv.imfrombytes(b)
    return (time.process_time() - t0) / (repeats * len(bufs)) * 1e3


def photo_decode(folder: str) -> dict:
    """``decode_ms`` of the ``*.jpg`` photos in ``folder`` (e.g. real COCO photos), with their
    mean size, to compare with the dataset's ``pipeline_decode_ms``."""
    import glob

    import mmcv
    paths = sorted(glob.glob(osp.join(folder, '*.jpg')))
    if not paths:
        raise DataUnavailable(f'--decode-photos {folder}: no *.jpg file there')
    shapes = [mmcv.imread(p).shape[:2] for p in paths]
    h, w = np.mean(shapes, axis=0)
    return dict(photos=len(paths), photos_px=f'{w:.0f}x{h:.0f}',
                photos_decode_ms=round(decode_ms(paths), 2))


def measure_dataloader(cfg, workers: int, n: int, seed: int) -> dict:
    """Samples/s through the config's own train dataloader with ``workers`` worker processes.

    ``Runner.build_dataloader(cfg.train_dataloader)`` (its sampler, batch size, collate) with
    ``num_workers=workers`` and no persistent workers. The first ``workers`` batches (start-up:
    each worker's first batch) are not timed; then batches totalling at least ``n`` samples.
    """
    from mmengine.runner import Runner
    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.update(num_workers=workers, persistent_workers=False)
    loader = Runner.build_dataloader(loader_cfg, seed=seed)
    bs = loader.batch_size
    n_batches = -(-n // bs)
    it = iter(loader)
    got = 0
    for _ in range(workers):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        try:
            got += len(next(it)['inputs'])
        except StopIteration:
            it = iter(loader)  # a dataset smaller than the request: start another epoch
            got += len(next(it)['inputs'])
    dt = time.perf_counter() - t0
    total = got / dt
    return dict(dataloader_workers=workers, dataloader_batch_size=bs,
                dataloader_samples_per_s=round(total, 2),
                dataloader_samples_per_s_per_worker=round(total / workers, 2))


def synthetic_samples(cfg, n, seed=0):
    """``n`` packed samples from the inference pipeline on random images (model inputs only)."""
    from mmengine.dataset import Compose

    from mmrefer.apis.inferencer import build_inference_pipeline
    pipeline = Compose(build_inference_pipeline(cfg))
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        img = rng.randint(0, 255, (360, 480, 3), dtype=np.uint8)
        out.append(pipeline(dict(img=img, img_id=i, ref_id=i, sent_id=i, text='the red circle on '
                                 'the left', no_target=False, source='synthetic', height=360,
                                 width=480, instances=[], ref_bbox=None)))
    return out


def build_test_dataset(cfg):
    """The config's test dataset, or ``(None, reason)`` when it cannot be built (not on disk)."""
    from mmrefer.registry import DATASETS
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if loader is None:
        return None, 'config has no test_dataloader'
    try:
        ds = DATASETS.build(loader['dataset'])
        if len(ds) == 0:
            return None, 'test dataset is empty'
        return ds, None
    except (FileNotFoundError, OSError, KeyError, ValueError) as e:
        return None, _first_line(e)


# ------------------------------------------------------------------------------- memory
def current_rss_mb() -> float:
    """Resident set size of this process now (``/proc/self/status`` VmRSS), MB; NaN elsewhere."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float('nan')


def peak_rss_mb(*readings: float) -> float:
    """Peak resident set size of this process (``ru_maxrss``), MB, and at least each of the
    earlier ``readings`` of :func:`current_rss_mb`: Linux updates the high-water mark lazily
    (not when the allocator hands pages back with ``madvise``), so ``ru_maxrss`` can read a
    fraction of a MB below an earlier VmRSS (647.7 against 647.9 MB, seen once)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    peak = round(rss / (1024 ** 2 if sys.platform == 'darwin' else 1024), 1)
    return max([peak] + [r for r in readings if r == r])  # NaN readings (no /proc) left out


# ------------------------------------------------------------------------------- compile
def _break_site(message: str) -> str:
    """``'path:line'`` of the innermost mmrefer / mmdet / mmengine / mmcv frame of a dynamo
    graph-break log message (its user-code traceback), else the ``in user code at`` site."""
    import re
    frames = re.findall(r'File "([^"]+)", line (\d+)', message)
    for fn, line in reversed(frames):
        fn = fn.replace('\\', '/')
        for key in ('mmrefer/', 'mmdet/', 'mmengine/', 'mmcv/'):
            if key in fn:
                return f'{key}{fn.split(key, 1)[1]}:{line}'
    m = re.search(r'in user code at (\S+)', message)
    return m.group(1).replace('\\', '/').split('site-packages/')[-1] if m else '?'


def _break_reason(message: str) -> str:
    """The ``Explanation:`` line of a dynamo graph-break message (else its reason line)."""
    for line in message.splitlines():
        if line.strip().startswith('Explanation:'):
            return line.strip()[len('Explanation:'):].strip()[:200]
    for line in message.splitlines():
        if 'Graph Break Reason' in line:
            return line.split('Graph Break Reason:', 1)[-1].strip()[:200]
    return message.strip().splitlines()[0][:200] if message.strip() else '?'


def explain_loss(model, data) -> dict:
    """``torch._dynamo.explain`` of ``model(**data, mode='loss')`` (train mode).

    Returns ``dynamo_graphs`` and ``dynamo_graph_breaks`` (as ``explain`` counts them),
    ``dynamo_frames`` (``'ok/total'`` frames dynamo converted) and ``dynamo_break_reasons``:
    every graph break dynamo logged, grouped by its explanation and the innermost mmrefer /
    mmdet / mmengine / mmcv source line of the user stack, with its count. (On torch 2.13
    ``explain``'s own ``break_reasons`` stays empty when the break is in a nested call, so the
    ``graph_breaks`` log is read instead.)
    """
    import logging

    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters
    records = []

    class Grab(logging.Handler):

        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger('torch._dynamo.symbolic_convert.__graph_breaks')
    handler = Grab(level=logging.DEBUG)
    dynamo.reset()
    counters.clear()
    torch._logging.set_logs(graph_breaks=True)
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # collected here, not printed
    try:
        out = dynamo.explain(model)(**data, mode='loss')
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
        torch._logging.set_logs()
    reasons = Counter(f'{_break_reason(m)} @ {_break_site(m)}' for m in records
                      if 'Graph break' in m or 'Graph Break' in m)
    frames = counters.get('frames', {})
    res = dict(dynamo_graphs=out.graph_count, dynamo_graph_breaks=out.graph_break_count,
               dynamo_frames=f'{frames.get("ok", 0)}/{frames.get("total", 0)}',
               dynamo_break_reasons=[f'{n}x {r}' for r, n in reasons.most_common()])
    dynamo.reset()
    return res


# ------------------------------------------------------------------------------- runs
def load_config(args):
    """Config from ``args.config`` with ``--make-synthref`` and ``--cfg-options`` applied."""
    from mmrefer.apis.inferencer import resolve_config
    from mmrefer.datasets.synthetic import point_config_at_synthref
    cfg = resolve_config(args.config)
    if args.make_synthref:
        point_config_at_synthref(cfg, make_synthref_coco(args.make_synthref))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def build_model(cfg, args, device):
    from mmengine.runner import load_checkpoint

    from mmrefer.registry import MODELS
    torch.manual_seed(args.seed)
    # as the Runner sets it from the config's env_cfg
    torch.backends.cudnn.benchmark = bool(cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
    model = MODELS.build(cfg.model)
    if args.weights:
        if not osp.isfile(args.weights):
            raise FileNotFoundError(f'checkpoint file not found: {args.weights}')
        load_checkpoint(model, args.weights, map_location='cpu', strict=False)
    return model.to(device)


def run_inference(cfg, args, bench, device, res):
    """Fill ``res`` with the inference fields (see the module docstring)."""
    from mmengine.dataset import pseudo_collate
    model = build_model(cfg, args, device).eval()
    res['model'] = type(model).__name__
    res['params_m'] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
    dataset, reason = build_test_dataset(cfg)
    if dataset is not None:
        res['data_source'] = f'{type(dataset).__name__} ({len(dataset)} samples)'
        samples = [dataset[i % len(dataset)] for i in range(args.batch_size)]
    else:
        res['data_source'] = f'synthetic images through the inference pipeline ({reason})'
        samples = synthetic_samples(cfg, args.batch_size)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)

    def prep(batch):
        with torch.no_grad():
            return model.data_preprocessor(pseudo_collate(batch), False)

    d1 = prep(samples[:1])
    t1 = bench.time(lambda: model(**d1, mode='predict'), args.iters, args.warmup, 'model b=1')
    res['latency_b1_ms'] = round(t1 * 1e3, 2)
    res['latency_b1_cpu_ms'] = round(bench.last_cpu * 1e3, 2)
    res['images_per_s_b1'] = round(1.0 / t1, 2)
    dn = prep(samples[:args.batch_size])
    tn = bench.time(lambda: model(**dn, mode='predict'), args.iters, args.warmup,
                    f'model b={args.batch_size}')
    tn_cpu = bench.last_cpu
    res['latency_bN_cpu_ms'] = round(tn_cpu * 1e3, 2)
    res['latency_bN_ms'] = round(tn * 1e3, 2)
    res['images_per_s_bN'] = round(args.batch_size / tn, 2)

    with bench.autocast():
        backbone, bargs, bkwargs = backbone_call(model, dn)
    tb = bench.time(lambda: backbone(*bargs, **bkwargs), args.iters, args.warmup, 'backbone')
    res['backbone'] = type(backbone).__name__
    res['backbone_bN_ms'] = round(tb * 1e3, 2)
    res['full_to_backbone_ratio'] = round(tn / tb, 3)

    if args.compile:
        compiled = torch.compile(model.forward, backend=args.compile_backend)
        t0 = time.perf_counter()
        with torch.no_grad(), bench.autocast():
            compiled(**dn, mode='predict')
        res['compile_first_call_s'] = round(time.perf_counter() - t0, 2)
        tc = bench.time(lambda: compiled(**dn, mode='predict'), args.iters, args.warmup,
                        f'compiled b={args.batch_size}')
        res['compiled_latency_bN_ms'] = round(tc * 1e3, 2)
        res['compiled_latency_bN_cpu_ms'] = round(bench.last_cpu * 1e3, 2)
        res['compile_speedup_bN'] = round(tn / tc, 3)
        res['compile_speedup_bN_cpu'] = round(tn_cpu / bench.last_cpu, 3)
    if device.type == 'cuda':
        res['cuda_max_allocated_mb'] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def run_train_step(cfg, args, bench, device, res, dataset):
    """Fill ``res`` with the train-step fields (see the module docstring)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import build_optim_wrapper
    if dataset is None:
        dataset = build_train_dataset(cfg, res['config'])
    model = build_model(cfg, args, device).train()
    res['model'] = type(model).__name__
    res['params_m'] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
    res['with_cp'] = bool((cfg.model.get('backbone') or {}).get('with_cp', False))
    order = sample_order(len(dataset), args.batch_size, args.seed)
    batch = pseudo_collate([dataset[i] for i in order])
    res['train_image_px'] = '/'.join(sorted({'x'.join(map(str, _image_px(
        dict(data_samples=ds)))) for ds in batch['data_samples']}))
    res['input_px'] = 'x'.join(str(s) for s in batch['data_samples'][0].metainfo['img_shape'])
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    res['rss_before_step_mb'] = current_rss_mb()
    step = model.train_step
    ts = bench.time(lambda: step(batch, optim_wrapper), args.iters, args.warmup, 'train step',
                    grad=True)
    res['train_step_s'] = round(ts, 3)
    ts_cpu = bench.last_cpu
    res['train_step_cpu_s'] = round(ts_cpu, 3)
    # before compiling: compilation has its own footprint
    res['peak_rss_mb'] = peak_rss_mb(res['rss_before_step_mb'])
    if args.explain:  # after the eager steps: lazy set-up (tokenizer files) is done by then
        with torch.no_grad():
            data = model.data_preprocessor(batch, True)
        res.update(explain_loss(model, data))
    if args.compile:
        sys.path.insert(0, TOOLS)
        from mmrefer.engine import plain_param_groups  # what tools/train.py --compile does
        plain_param_groups(optim_wrapper)
        if args.compile_target == 'train_step':
            compiled = torch.compile(model.train_step, backend=args.compile_backend)
        else:  # the loss forward only, as tools/train.py --compile (CompileReadyRunner):
            # model.train_step calls it; data preprocessor, backward, optimizer step eager
            model.forward = torch.compile(model.forward, backend=args.compile_backend)
            compiled = model.train_step
        t0 = time.perf_counter()
        compiled(batch, optim_wrapper)
        res['compile_first_call_s'] = round(time.perf_counter() - t0, 2)
        tc = bench.time(lambda: compiled(batch, optim_wrapper), args.iters, args.warmup,
                        'compiled train step', grad=True)
        res['compiled_train_step_s'] = round(tc, 3)
        res['compiled_train_step_cpu_s'] = round(bench.last_cpu, 3)
        res['compile_train_speedup'] = round(ts / tc, 3)
        res['compile_train_speedup_cpu'] = round(ts_cpu / bench.last_cpu, 3)
    if device.type == 'cuda':
        res['cuda_max_allocated_mb'] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def run(args):
    from mmrefer.utils import register_all_modules

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'--device {args.device}: CUDA is not available on this machine')
    bench = Bench(device, args.amp, args.amp_dtype, not args.no_progress)
    register_all_modules(init_default_scope=True)
    cfg = load_config(args)
    name = getattr(cfg, 'filename', None) or str(args.config)
    mode = 'pipeline' if args.pipeline_only else 'train_step' if args.train_step else 'inference'
    res = dict(config=name, mode=mode, device=str(device),
               amp=(str(bench.dtype).replace('torch.', '') if args.amp else 'off'),
               compile=(f'{args.compile_backend} ({args.compile_target})' if args.compile and
                        args.train_step else args.compile_backend if args.compile else 'off'),
               batch_size=args.batch_size, iters=args.iters, threads=torch.get_num_threads())

    # as the Runner does (env_cfg.mp_cfg): OpenCV single-threaded (0), fork start method, so
    # that one process is one worker's worth of CPU
    from mmengine.utils.dl_utils import set_multi_processing
    set_multi_processing(**(cfg.get('env_cfg') or {}).get('mp_cfg', {}))
    import cv2
    res['opencv_threads'] = cv2.getNumThreads()
    dataset = None
    if not args.skip_pipeline:
        dataset = build_train_dataset(cfg, name)
        res['pipeline_dataset'] = f'{type(dataset).__name__} train ({len(dataset)} samples)'
        res.update(measure_pipeline(dataset, args.data_iters, args.seed, bench))
        if args.workers:
            res.update(measure_dataloader(cfg, args.workers, args.data_iters, args.seed))
    if args.decode_photos:
        res.update(photo_decode(args.decode_photos))
    if args.train_step:
        run_train_step(cfg, args, bench, device, res, dataset)
    elif not args.pipeline_only:
        run_inference(cfg, args, bench, device, res)
    res.setdefault('peak_rss_mb', peak_rss_mb())
    return res


def main(argv=None):
    args = parse_args(argv)
    try:
        res = run(args)
    except DataUnavailable as e:
        print(f'benchmark.py: error: {e}', file=sys.stderr)
        return 2
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f'{k:<{width}} : {json.dumps(v) if isinstance(v, (list, dict)) else v}')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""The prepared GPU check (issue #16 item 6): speed, peak memory and a one-batch overfit of the
two paper configs at their input size (480) with random weights.

Normally run by ``gpu_check.sh`` (which installs the carried wheels and builds mmcv first); see
docs/benchmarks.md, "GPU check". One call measures the models named by ``--models`` and merges
its results into ``OUT_DIR/gpu_check.json`` (written after **every** measurement, so a run cut
short still leaves its figures) and ``OUT_DIR/gpu_check.md``::

    python tools/analysis_tools/gpu_check.py OUT_DIR --models latentvg instalign \
        [--device cuda|cpu] [--quick] [--deadline EPOCH_S] [--mmcv-ops built|stub] \
        [--no-overfit] [--force-profile] [--sizes KEY=VALUE ...] [--setup KEY=VALUE ...] \
        [--work-dir DIR]
    python tools/analysis_tools/gpu_check.py OUT_DIR --finalize [--setup KEY=VALUE ...]
    python tools/analysis_tools/gpu_check.py --cuda-build-env

Exit code 0, or 3 when a measurement or the overfit of this call was cut by ``--deadline``.

Per model (``configs/latentvg_beit3.py``, ``configs/instalign/
instalign_swin-b_roberta_grefcoco.py``; every ``pretrained`` file and ``Pretrained`` init_cfg
removed, so the weights are the model's own random initialisation, ``model.init_weights()``):

* ``infer_{fp32,bf16}_b{1,32}``: ``model.test_step(batch)`` (data preprocessor + predict with
  its post-processing) under ``torch.no_grad()``, bf16 = ``torch.autocast(device, bfloat16)``;
* ``train_bf16_b16`` / ``train_bf16_b16_cp``: ``model.train_step(batch, optim_wrapper)`` with
  the config's optimizer, parameter-wise settings and gradient clipping in mmrefer's
  ``AutocastOptimWrapper`` (bf16 autocast, no loss scaling), without and with the backbone's
  gradient checkpointing (``with_cp`` of every backbone module that has it); the model's
  ``optimizer`` field records that optimizer's type, parameter groups and kernel choice
  (:func:`optimizer_summary`: the paper schedules' fused AdamW, one kernel per group), as each
  training measurement's ``optimizer`` does;
* ``train_bf16_b16_foreach``: ``train_bf16_b16`` with PyTorch's foreach AdamW (CUDA's default,
  what the configs used before ``fused=True``), to measure what the fused kernel gains;
* each: ``warmup`` untimed steps, then ``iters`` timed ones, each closed by
  ``torch.cuda.synchronize()``; ``img_per_s = batch / median step time``; ``peak_mem_mib`` =
  ``torch.cuda.max_memory_allocated`` since the measurement began (null on CPU);
* ``overfit``: the first 16 training samples as one fixed batch (``Random*`` transforms
  removed), ``overfit_iters`` bf16 training steps from the initial weights with a fresh
  optimizer at the config's base learning rate (no warm-up, no decay); ``loss_ratio`` = last /
  first total loss, target <= 0.5 as in ``paper_size_check.py``;
* below a goal (:data:`GOALS`, H200 bf16 at 480; judged on CUDA at full size only) or with
  ``--force-profile``: a ``torch.profiler`` summary of that measurement (top kernels by self
  device time, top CPU ops by self CPU time).

The inputs are SynthRef written at COCO-like image sizes in ``--work-dir`` (generated on the
fly, so nothing beside the repository is needed on the GPU machine): its train split through
the config's own train pipeline (resized to 480), tokenized by SynthRef's tokenizers (the same
shapes as the official ones: text length 20). The batches are moved to the device once; data
loading is not timed.

``--mmcv-ops stub`` replaces ``mmcv._ext`` by a module whose functions raise (mmdet imports
``mmcv.ops``, Latent-VG calls none of them) and sends the deformable attention down its
pure-PyTorch path (InstAlign's ``multi_scale_deformable_sampling``, a plain mmcv module's
``multi_scale_deformable_attn_pytorch``): the mode used while
mmcv's ops are being built, or after their build failed. ``--quick`` shrinks both configs to
tiny sizes (128 px input, batches of 1 and 2, a few iterations) so that every path runs in
about a minute on a CPU: the dry run of ``gpu_check.sh OUT --device cpu --quick``.
"""
import argparse
import contextlib
import copy
import fnmatch
import glob
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
import traceback
import types
from collections import OrderedDict
from typing import Optional

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))

MODELS_TO_CHECK = OrderedDict([
    ('latentvg', dict(name='Latent-VG', config='configs/latentvg_beit3.py')),
    ('instalign', dict(name='InstAlign',
                       config='configs/instalign/instalign_swin-b_roberta_grefcoco.py')),
])
#: goals of the issue (H200, bf16, 480): img/s of a measurement key
GOALS = {
    'latentvg': {'infer_bf16_b32': 1000.0, 'train_bf16_b16': 300.0},
    'instalign': {'infer_bf16_b32': 400.0, 'train_bf16_b16': 120.0},
}
#: seconds that must be left before a --compile measurement starts (its first step compiles)
MIN_COMPILE_S = 150
OVERFIT_TARGET = 0.5  # last / first loss, as tools/analysis_tools/paper_size_check.py

FULL = dict(img_size=None, infer_batches=(1, 32), train_batch=16, infer_warmup=5,
            infer_iters=20, train_warmup=5, train_iters=30, overfit_batch=16, overfit_iters=200,
            profile_steps=3)
QUICK = dict(img_size=128, infer_batches=(1, 2), train_batch=2, infer_warmup=1, infer_iters=2,
             train_warmup=1, train_iters=2, overfit_batch=2, overfit_iters=3, profile_steps=1)

#: ``--quick``: model sizes of the quick-start configs, applied to the paper configs (every
#: module switch the paper config sets is kept)
QUICK_MODEL_OPTIONS = {
    'LatentVG': {
        'model.backbone.arch': dict(_delete_=True, embed_dims=64, num_layers=2, num_heads=4,
                                    ffn_ratio=2),
        'model.backbone.img_size': 128,
        'model.backbone.vocab_size': 128,  # SynthRef's sentencepiece model has < 100 pieces
        'model.backbone.drop_path_rate': 0.0,
        'model.latent_init.embed_dims': 64,
        'model.concept_injector.embed_dims': 64,
        'model.concept_injector.num_concepts': 8,
        'model.head.in_channels': 64,
        'model.head.feat_channels': 32,
        'model.head.embed_dims': 32,
        'model.head.num_decoder_layers': 1,
        'model.head.decoder_heads': 4,
        'model.head.decoder_ffn_dims': 128,
        'model.head.mlp_hidden_dims': 64,
    },
    'InstAlign': {
        'model.backbone.embed_dims': 32,
        'model.backbone.depths': [1, 1, 1, 1],
        'model.backbone.num_heads': [1, 2, 4, 8],
        'model.backbone.window_size': 4,
        'model.backbone.drop_path_rate': 0.0,
        # SynthRef's BPE tokenizer has 400 tokens
        'model.text_encoder.arch': dict(vocab_size=400, hidden_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=128),
        'model.head.in_channels': [32, 64, 128, 256],
        'model.head.feat_channels': 64,
        'model.head.num_queries': 8,
        'model.head.pixel_decoder.norm_cfg.num_groups': 8,
        'model.head.pixel_decoder.encoder.num_layers': 1,
        'model.head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.embed_dims': 64,
        'model.head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_heads': 4,
        'model.head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_points': 2,
        'model.head.pixel_decoder.encoder.layer_cfg.ffn_cfg.embed_dims': 64,
        'model.head.pixel_decoder.encoder.layer_cfg.ffn_cfg.feedforward_channels': 128,
        'model.head.pixel_decoder.positional_encoding.num_feats': 32,
        'model.head.decoder.num_layers': 3,
        'model.head.decoder.num_heads': 4,
        'model.head.decoder.ffn_dims': 128,
        'model.head.positional_encoding.num_feats': 32,
        'model.test_cfg.extras_topk': 4,
    },
}
SYNTHREF_TRAIN_IMAGES = 12  # >= 32 training sentences in each of its refcoco / grefcoco splits
SAFETY_S = 5.0  # seconds kept for writing the results when a deadline is set


#: headers that torch's ``ATen/cuda`` headers include besides the CUDA runtime's
CUDA_LIBRARY_HEADERS = ('cublas_v2.h', 'cusparse.h', 'cusolverDn.h')


def cuda_include_dirs(cuda_home, roots=None):
    """The ``nvidia/<package>/include`` folders on ``roots`` (default ``sys.path``) that hold
    the :data:`CUDA_LIBRARY_HEADERS` missing from ``cuda_home/include``; ``[]`` when
    ``cuda_home`` has them all.

    A CUDA_HOME made of NVIDIA's compiler and runtime wheels has no cuBLAS / cuSPARSE /
    cuSOLVER headers, so every CUDA source of mmcv fails at ``ATen/cuda/CUDAContextLight.h``;
    torch's own CUDA dependencies (the ``nvidia-cublas``... wheels) carry those headers.
    """
    missing = [h for h in CUDA_LIBRARY_HEADERS
               if not (cuda_home and osp.isfile(osp.join(cuda_home, 'include', h)))]
    dirs = []
    for root in (sys.path if roots is None else roots):
        for inc in sorted(glob.glob(osp.join(root or '.', 'nvidia', '*', 'include'))):
            if inc not in dirs and any(osp.isfile(osp.join(inc, h)) for h in missing):
                dirs.append(inc)
    return dirs


def nvcc_top(nvcc):
    """The CUDA installation an ``nvcc`` belongs to, as it reports it (``TOP`` of
    ``nvcc --dryrun``, real path), or None."""
    import subprocess
    try:
        out = subprocess.run([nvcc, '--dryrun', '-x', 'cu', '-c', os.devnull, '-o', os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith('#$ TOP='):
            return osp.realpath(line[len('#$ TOP='):].strip())
    return None


def cuda_build_env(environ, roots=None, cuda_globs=('/usr/local/cuda', '/usr/local/cuda-*')):
    """Environment variables that let torch's extension builder compile mmcv's CUDA ops, and a
    note of each, as ``([(name, value)], [(setup_key, note)])``; nothing when ``environ``
    already describes a complete CUDA installation.

    * no ``nvcc`` on ``PATH``: the first ``cuda_globs`` folder with ``bin/nvcc`` gives
      ``CUDA_HOME`` and goes first on ``PATH``;
    * ``CUDA_HOME`` unset: torch would take the folder above the first ``nvcc`` on ``PATH``,
      wrong when that is a wrapper script or a link (``/usr/local/bin/nvcc``): ``CUDA_HOME``
      is the ``TOP`` that nvcc reports, when its ``include/cuda_runtime_api.h`` exists;
    * that folder lacks the :data:`CUDA_LIBRARY_HEADERS` (a CUDA made of NVIDIA's wheels):
      :func:`cuda_include_dirs` are appended to ``CPATH`` (read by the host compiler and by
      nvcc's preprocessing; ``-I`` folders, ``CUDA_HOME/include`` first, still come first) and
      their ``lib`` siblings to ``LIBRARY_PATH``.
    """
    import shutil
    env, notes = [], []
    path = environ.get('PATH', '')
    cuda_home = environ.get('CUDA_HOME') or None
    nvcc = shutil.which('nvcc', path=path)
    if nvcc is None:
        for pattern in cuda_globs:
            found = [d for d in sorted(glob.glob(pattern))
                     if os.access(osp.join(d, 'bin', 'nvcc'), os.X_OK)]
            if found:
                cuda_home, nvcc = found[0], osp.join(found[0], 'bin', 'nvcc')
                path = f'{found[0]}/bin' + (f':{path}' if path else '')
                env += [('CUDA_HOME', cuda_home), ('PATH', path)]
                notes.append(('cuda_home', f'{cuda_home} (no nvcc on PATH)'))
                break
    if cuda_home is None and nvcc is not None:
        top = nvcc_top(nvcc)
        if top and osp.isfile(osp.join(top, 'include', 'cuda_runtime_api.h')):
            cuda_home = top
            env.append(('CUDA_HOME', top))
            notes.append(('cuda_home', f"{top} (nvcc's TOP)"))
    inc = cuda_include_dirs(cuda_home, roots)
    if inc:
        def append(name, dirs):
            old = environ.get(name, '')
            return name, ':'.join(([old] if old else []) + dirs)
        env += [append('CPATH', inc),
                append('LIBRARY_PATH', [osp.join(osp.dirname(d), 'lib') for d in inc])]
        notes.append(('cuda_headers', 'cuBLAS/cuSPARSE/cuSOLVER headers not in '
                      f'{cuda_home}/include: CPATH += {":".join(inc)}'))
    return env, notes


class OutOfTime(Exception):
    """A measurement would not finish before the deadline."""


# ----------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out_dir', nargs='?', help='folder for gpu_check.json and gpu_check.md')
    p.add_argument('--models', nargs='+', choices=list(MODELS_TO_CHECK), default=[],
                   help='models to measure, in this order')
    p.add_argument('--device', default='cuda', help='cuda (default), cuda:N or cpu')
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes and a few iterations (the CPU dry run)')
    p.add_argument('--deadline', type=float, default=None,
                   help='wall-clock time (epoch seconds) by which this call must be done: '
                   'measurements that would not fit are skipped with a note')
    p.add_argument('--mmcv-ops', choices=['built', 'stub'], default='built',
                   help="'stub': mmcv._ext replaced by raising functions and mmcv's "
                   'deformable attention on its pure-PyTorch path (ops not built)')
    p.add_argument('--no-overfit', action='store_true',
                   help='speed and memory only (the overfit ran in an earlier call)')
    p.add_argument('--compile', default=None, metavar='BACKEND',
                   help='also time bf16 inference and training with the model\'s forward '
                   'torch.compile-d (as tools/train.py --compile) with this backend: inductor '
                   '(the default backend of torch.compile), or eager / aot_eager for a dry run')
    p.add_argument('--compile-mode', default=None,
                   help='torch.compile mode with --compile, e.g. reduce-overhead (CUDA graphs) '
                   'or max-autotune-no-cudagraphs')
    p.add_argument('--only', nargs='+', default=[], metavar='PATTERN',
                   help='measure only the keys matching one of these shell patterns, e.g. '
                   "'infer_bf16_b32*' 'train_bf16_b16' 'train_bf16_b16_compiled' (the sync "
                   'audit and the overfit are not measurement keys: see --no-overfit)')
    p.add_argument('--force-profile', action='store_true',
                   help='profile the goal measurements even when no goal applies or is missed')
    p.add_argument('--sizes', nargs='+', default=[], metavar='KEY=VALUE',
                   help='override batch sizes / iteration counts, e.g. infer_batches=[1,8] '
                   f'train_iters=10 (keys: {", ".join(sorted(FULL))})')
    p.add_argument('--setup', nargs='+', default=[], metavar='KEY=VALUE',
                   help='facts about the setup (install / build) stored under "setup"')
    p.add_argument('--finalize', action='store_true',
                   help='only merge --setup, set the final status and rewrite the markdown')
    p.add_argument('--work-dir', default=osp.join('/tmp', 'gpu_check_work'),
                   help='where SynthRef is written (reused when complete)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cuda-build-env', action='store_true',
                   help='only print what mmcv\'s CUDA build needs set (cuda_build_env): lines '
                   '"env NAME=VALUE" and "setup KEY=NOTE" (used by gpu_check.sh)')
    args = p.parse_args(argv)
    if args.cuda_build_env:
        return args
    if args.out_dir is None:
        p.error('OUT_DIR is required')
    if not args.finalize and not args.models:
        p.error('--models is required (or --finalize)')
    for item in args.setup + args.sizes:
        if '=' not in item:
            p.error(f'--setup / --sizes {item!r}: expected KEY=VALUE')
    for k, v in parse_setup(args.sizes).items():
        if k not in FULL or k == 'img_size':
            p.error(f'--sizes {k}: not one of {sorted(set(FULL) - {"img_size"})}')
        ok = (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x >= 1
                                                          for x in v)) \
            if k == 'infer_batches' else (isinstance(v, int) and v >= (0 if 'warmup' in k
                                                                       else 1))
        if not ok:
            p.error(f'--sizes {k}={v!r}: expected '
                    + ('two batch sizes >= 1, e.g. [1,32]' if k == 'infer_batches' else
                       'an integer >= ' + ('0' if 'warmup' in k else '1')))
    return args


def parse_setup(items):
    """``['a=1', 'b=ok']`` -> ``{'a': 1, 'b': 'ok'}`` (JSON values where they parse)."""
    out = OrderedDict()
    for item in items:
        k, v = item.split('=', 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- results file
class Results:
    """``OUT_DIR/gpu_check.json`` and ``gpu_check.md``, rewritten after each change."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.json_path = osp.join(out_dir, 'gpu_check.json')
        self.md_path = osp.join(out_dir, 'gpu_check.md')
        if osp.isfile(self.json_path):
            with open(self.json_path) as f:
                self.data = json.load(f, object_pairs_hook=OrderedDict)
        else:
            self.data = OrderedDict(schema=1, status='running', started=time.strftime(
                '%Y-%m-%d %H:%M:%S'), setup=OrderedDict(), models=OrderedDict(), notes=[])

    def save(self):
        tmp = self.json_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(tmp, self.json_path)
        with open(self.md_path + '.tmp', 'w') as f:
            f.write(render_markdown(self.data))
        os.replace(self.md_path + '.tmp', self.md_path)


def _fmt(v, nd=1):
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:.{nd}f}'
    return str(v)


def _cell(text, n=120) -> str:
    """One table cell: first ``n`` characters, no line breaks or pipes."""
    return ' '.join(str(text).split())[:n].replace('|', '/')


def render_markdown(data) -> str:
    """The markdown report of a results dict: setup lines, one table row per measurement, the
    overfit rows, the notes."""
    lines = ['# GPU check', '']
    dev = data.get('device') or {}
    if dev:
        lines.append(f"- device: {dev.get('name', '?')} ({dev.get('type', '?')}"
                     + (f", sm_{dev['capability']}" if dev.get('capability') else '')
                     + f"), torch {dev.get('torch', '?')}"
                     + (f", CUDA {dev['cuda']}" if dev.get('cuda') else '')
                     + f", {dev.get('cpu_count', '?')} CPU cores, Python {dev.get('python', '?')}")
    lines.append(f"- status: {data.get('status', '?')}"
                 + (f", total {data['total_s']} s" if data.get('total_s') is not None else '')
                 + (', quick (tiny sizes: a dry run, not a benchmark)' if data.get('quick')
                    else ''))
    for k, v in (data.get('setup') or {}).items():
        lines.append(f'- {k}: {v}')
    lines += ['', '| model | measurement | batch | precision | img/s | median ms/step '
              '| timed iters | peak MiB | goal img/s |',
              '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for key, m in (data.get('models') or {}).items():
        name = m.get('name', key)
        for mk, r in (m.get('measurements') or {}).items():
            goal = (m.get('goals') or {}).get(mk)
            goal_s = '-'
            if goal:
                met = goal.get('met')
                goal_s = f"{goal['goal']:.0f}" + ('' if met is None else
                                                  (' (met)' if met else ' (missed)'))
            if r.get('error') or r.get('skipped'):
                state = 'error' if r.get('error') else 'skipped'
                why = _cell(r.get('error') or r.get('skipped'))
                lines.append(f"| {name} | {r.get('what', mk)} | {r.get('batch', '-')} | "
                             f"{r.get('precision', '-')} | {state}: {why} | - | - | - | "
                             f"{goal_s} |")
                continue
            what = r.get('what', mk) + (' (during the mmcv build)'
                                        if r.get('during_mmcv_build') else '')
            lines.append(f"| {name} | {what} | {r['batch']} | {r['precision']} | "
                         f"{_fmt(r['img_per_s'])} | {_fmt(r['median_ms'], 2)} | {r['iters']} | "
                         f"{_fmt(r.get('peak_mem_mib'), 0)} | {goal_s} |")
    rows = [(m.get('name', k), m['overfit']) for k, m in (data.get('models') or {}).items()
            if m.get('overfit')]
    if rows:
        lines += ['', '| model | overfit: batch, iterations (bf16) | loss first -> last | '
                  'ratio (target <= 0.5) | s/iter | peak MiB |',
                  '| --- | --- | --- | --- | --- | --- |']
        for name, o in rows:
            if o.get('error') or o.get('skipped'):
                lines.append(f"| {name} | {'error' if o.get('error') else 'skipped'}: "
                             f"{_cell(o.get('error') or o.get('skipped'))} | - | - | - | - |")
                continue
            ratio = o.get('loss_ratio')
            met = '' if ratio is None else (' (met)' if o.get('target_met') else ' (missed)')
            lines.append(f"| {name} | {o['batch']}, {o['iters_done']} of {o['iters']} | "
                         f"{_fmt(o['loss_first'], 4)} -> {_fmt(o['loss_last'], 4)} | "
                         f"{_fmt(ratio, 4)}{met} | {_fmt(o.get('s_per_iter'), 3)} | "
                         f"{_fmt(o.get('peak_mem_mib'), 0)} |")
    notes = list(data.get('notes') or [])
    for k, m in (data.get('models') or {}).items():
        notes += [f"{m.get('name', k)}: {n}" for n in (m.get('notes') or [])]
        for mk, prof in (m.get('profiles') or {}).items():
            top = (prof.get('top_kernels') or prof.get('top_cpu_ops') or [])[:3]
            if top:
                notes.append(f"{m.get('name', k)} {mk} profile, top: " + '; '.join(
                    f"{t['name'][:60]} {t['share_pct']}%" for t in top))
    for k, m in (data.get('models') or {}).items():
        for step, a in (m.get('sync_audit') or {}).items():
            if isinstance(a, dict) and 'syncs' in a:
                notes.append(f"{m.get('name', k)} {step}: {a['syncs']} CUDA synchronisations "
                             '(set_sync_debug_mode)' + (': ' + '; '.join(
                                 f'{w} x{n}' for w, n in list(a['where'].items())[:6])
                                 if a['where'] else ''))
    if notes:
        lines += ['', 'Notes:', ''] + [f'- {n}' for n in notes]
    return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------------------- mmcv ops
def install_mmcv_ext_stub():
    """Make ``import mmcv.ops`` work without the compiled ``mmcv._ext``: every function of the
    stub raises ``RuntimeError`` naming itself. Must run before mmcv.ops is imported."""
    if 'mmcv.ops' in sys.modules:
        raise RuntimeError('gpu_check: --mmcv-ops stub must be set up before mmcv.ops is '
                           'imported')

    class _UnbuiltExt(types.ModuleType):

        def __getattr__(self, name):
            if name.startswith('__'):
                raise AttributeError(name)

            def unbuilt(*args, **kwargs):
                raise RuntimeError(f'mmcv._ext.{name}: mmcv ops are not built in this run '
                                   '(gpu_check --mmcv-ops stub)')
            unbuilt.__name__ = name
            return unbuilt

    import importlib.machinery
    stub = _UnbuiltExt('mmcv._ext')
    # a spec without loader: importlib / pkgutil look-ups (mmengine's mmcv_full_available) see
    # the module and report it as not built, instead of raising on __spec__ = None
    stub.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None)
    sys.modules['mmcv._ext'] = stub


def use_pytorch_deform_attn():
    """The deformable attention on its pure-PyTorch path on every device."""
    import mmcv.ops.multi_scale_deform_attn as msda
    msda.IS_CUDA_AVAILABLE = False
    return ('pytorch (multi_scale_deformable_sampling, grid_sample level by level: mmcv ops '
            'not built)')


def check_msda_cuda(device) -> dict:
    """The built CUDA deformable attention against mmcv's pure-PyTorch version on random
    inputs (fp32): relative L2 error; and whether the kernel takes bf16 (mmcv 2.1.0 dispatches
    float / double / half only). When it does not, bf16 inputs are run through it in fp32
    (:func:`_msda_fp32_for_bf16`), so autocast runs work; the note says so."""
    import torch
    import mmcv.ops.multi_scale_deform_attn as msda
    g = torch.Generator(device='cpu').manual_seed(0)
    shapes = torch.tensor([[16, 16], [8, 8], [4, 4]], dtype=torch.long, device=device)
    start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    n_keys = int((shapes[:, 0] * shapes[:, 1]).sum())
    b, q, h, d, lv, pt = 2, 50, 8, 32, 3, 4
    value = torch.randn(b, n_keys, h, d, generator=g).to(device)
    loc = torch.rand(b, q, h, lv, pt, 2, generator=g).to(device)
    w = torch.rand(b, q, h, lv, pt, generator=g).to(device)
    w = w / w.sum((-1, -2), keepdim=True)
    ref = msda.multi_scale_deformable_attn_pytorch(value.double(), shapes, loc.double(),
                                                   w.double())
    out = msda.MultiScaleDeformableAttnFunction.apply(value, shapes, start, loc, w, 64)
    rel = float((out.double() - ref).norm() / ref.norm())
    res = dict(rel_err_fp32=rel, ok=bool(rel < 1e-4))
    try:
        msda.MultiScaleDeformableAttnFunction.apply(value.bfloat16(), shapes, start,
                                                    loc.bfloat16(), w.bfloat16(), 64)
        res['bf16'] = 'supported'
    except RuntimeError as e:
        res['bf16'] = f'unsupported ({str(e).splitlines()[0][:120]})'
        _msda_fp32_for_bf16()
        res['workaround'] = ('bf16 inputs of the mmcv CUDA deformable attention are cast to '
                             'fp32 around the kernel (gpu_check patch, not model code)')
    return res


def _msda_fp32_for_bf16():
    import torch
    import mmcv.ops.multi_scale_deform_attn as msda
    orig = msda.MultiScaleDeformableAttnFunction

    class FP32ForBF16:
        """``MultiScaleDeformableAttnFunction`` taking bf16: runs the kernel in fp32."""

        @staticmethod
        def apply(value, shapes, start, loc, w, step):
            if value.dtype != torch.bfloat16:
                return orig.apply(value, shapes, start, loc, w, step)
            with torch.autocast(device_type=value.device.type, enabled=False):
                return orig.apply(value.float(), shapes, start, loc.float(), w.float(),
                                  step).to(torch.bfloat16)

    msda.MultiScaleDeformableAttnFunction = FP32ForBF16


# ----------------------------------------------------------------------------- config / data
def strip_pretrained(node):
    """Remove every pretrained file of a model config in place: ``pretrained`` strings become
    None and ``init_cfg`` of type ``Pretrained`` is dropped. Returns the removed entries."""
    removed = []

    def visit(n, path):
        if isinstance(n, dict):
            for k in list(n.keys()):
                v = n[k]
                if k == 'pretrained' and isinstance(v, str):
                    removed.append(f'{path}{k}={v}')
                    n[k] = None
                elif k == 'init_cfg' and isinstance(v, dict) and \
                        str(v.get('type', '')).split('.')[-1] == 'Pretrained':
                    removed.append(f'{path}{k}.checkpoint={v.get("checkpoint")}')
                    n[k] = None
                else:
                    visit(v, f'{path}{k}.')
        elif isinstance(n, (list, tuple)):
            for i, v in enumerate(n):
                visit(v, f'{path}{i}.')

    visit(node, 'model.')
    return removed


def synthref(root: str, log) -> str:
    """SynthRef at COCO-like image sizes under ``root`` (written once; ``.complete`` marks
    it)."""
    from mmrefer.datasets.synthetic import SYNTHREF_COCO_IMAGE_SIZES, make_synthref
    if not osp.isfile(osp.join(root, '.complete')):
        t = time.time()
        make_synthref(root, num_images=dict(train=SYNTHREF_TRAIN_IMAGES, val=0, testA=0,
                                            testB=0),
                      seed=0, image_sizes=SYNTHREF_COCO_IMAGE_SIZES)
        open(osp.join(root, '.complete'), 'w').close()
        log(f'SynthRef ({SYNTHREF_TRAIN_IMAGES} train images at COCO-like sizes) written to '
            f'{root} in {time.time() - t:.1f}s')
    return root


def prepare_config(key: str, quick: bool, data_root: str):
    """The model's paper config with random weights, on SynthRef; in quick mode shrunk.

    Returns ``(cfg, train_dataset_cfg, img_size, removed_pretrained)``."""
    from mmengine.config import Config

    from mmrefer.datasets.synthetic import dataset_leaves, point_config_at_synthref
    cfg = Config.fromfile(osp.join(REPO_ROOT, MODELS_TO_CHECK[key]['config']))
    point_config_at_synthref(cfg, data_root)
    if quick:
        cfg.merge_from_dict(QUICK_MODEL_OPTIONS[cfg.model.type])
    removed = strip_pretrained(cfg.model)
    ds = copy.deepcopy(dataset_leaves(cfg.train_dataloader.dataset)[0])
    ds.pop('indices', None)
    # the combined-RefCOCO parts drop the images of RefCOCO/+/g evaluation splits, which
    # SynthRef's train-only copy does not have (and speed does not depend on)
    ds.pop('exclude_images_of', None)
    pipeline = [s for s in ds.pipeline
                if not str(s.get('type', '')).split('.')[-1].startswith('Random')]
    img_size = None
    for step in pipeline:
        if str(step.get('type', '')).split('.')[-1] == 'RefResize':
            if quick:
                step['scale'] = (QUICK['img_size'], QUICK['img_size'])
            img_size = tuple(step['scale'])
    if img_size is None:
        raise ValueError(f"{MODELS_TO_CHECK[key]['config']}: the train pipeline has no "
                         'RefResize step (gpu_check needs the input size)')
    ds.pipeline = pipeline
    return cfg, ds, img_size, removed


def load_samples(ds_cfg, n: int):
    """The first ``n`` samples of the dataset (cycled when it has fewer)."""
    from mmrefer.registry import DATASETS
    ds = DATASETS.build(ds_cfg)
    if len(ds) == 0:
        raise ValueError(f'gpu_check: the SynthRef train split at {ds_cfg.data_root} is empty')
    return [ds[i % len(ds)] for i in range(n)], len(ds)


def device_batch(samples, device):
    """``pseudo_collate`` of packed samples with their tensors moved to ``device`` once."""
    from mmengine.dataset import pseudo_collate
    batch = pseudo_collate(list(samples))
    batch['inputs'] = [t.to(device) for t in batch['inputs']]
    batch['data_samples'] = [s.to(device) for s in batch['data_samples']]
    return batch


def select_measurements(plan, patterns):
    """The entries of ``plan`` (tuples whose first item is the measurement key) whose key
    matches one of the shell ``patterns`` (``--only``), in the plan's order."""
    return [p for p in plan if any(fnmatch.fnmatchcase(p[0], pat) for pat in patterns)]


# ----------------------------------------------------------------------------- timing
class Clock:
    """Deadline bookkeeping for one call."""

    def __init__(self, deadline):
        self.deadline = deadline

    def left(self):
        return float('inf') if self.deadline is None else self.deadline - time.time() - SAFETY_S


def _sync(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _reset_peak(device):
    import torch
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device):
    import torch
    if device.type == 'cuda':
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def time_steps(fn, warmup: int, iters: int, device, clock: Clock) -> dict:
    """Median seconds per ``fn()`` over ``iters`` timed calls after ``warmup`` untimed ones;
    raises :class:`OutOfTime` when the first call says the rest would pass the deadline."""
    _reset_peak(device)
    t_first = None
    n_warm = max(warmup, 1)
    for i in range(n_warm):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        t_first = dt if i == 0 else t_first
        # the first step carries one-off costs (library handles, autotuning): estimate from
        # the second one when there is one
        if i == min(1, n_warm - 1):
            need = dt * (n_warm - 1 - i + iters)
            if need > clock.left():
                raise OutOfTime(f'needs ~{need:.0f} s more ({dt:.2f} s per step), '
                                f'{max(clock.left(), 0):.0f} s left')
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return dict(median_s=statistics.median(times), min_s=min(times), max_s=max(times),
                first_s=t_first, peak_mem_mib=_peak(device))


SYNC_WARNING = 'called a synchronizing CUDA operation'  # torch.cuda.set_sync_debug_mode('warn')


def sync_audit(fns: dict, device, set_mode=None, top: int = 25) -> dict:
    """Where one call of each step function waits for the GPU, as CUDA itself counts it:
    ``torch.cuda.set_sync_debug_mode('warn')`` makes every synchronising CUDA call (a read
    back, a blocking upload, ``cudaStreamSynchronize``) warn; each warning is filed under the
    innermost frame outside torch. One untimed call of each function first (lazy
    initialisation is not counted). ``set_mode`` (tests) replaces the mode switch."""
    import traceback as tb
    import warnings

    import torch
    if set_mode is None:
        if device.type != 'cuda':
            return OrderedDict(skipped='CUDA only (torch.cuda.set_sync_debug_mode)')
        set_mode = torch.cuda.set_sync_debug_mode
    out = OrderedDict()
    for name, fn in fns.items():
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        where = OrderedDict()

        def record(message, category, filename, lineno, file=None, line=None):
            if SYNC_WARNING not in str(message):
                return
            frames = [f for f in tb.extract_stack()[:-1]
                      if '/torch/' not in f.filename and '/warnings.py' not in f.filename]
            f = frames[-1] if frames else None
            key = (f'{f.filename.split("site-packages/")[-1].replace(REPO_ROOT + "/", "")}:'
                   f'{f.lineno}' if f else f'{filename}:{lineno}')
            where[key] = where.get(key, 0) + 1

        with warnings.catch_warnings():
            warnings.simplefilter('always')
            warnings.showwarning = record
            set_mode('warn')
            try:
                fn()
            finally:
                set_mode('default')
        ranked = sorted(where.items(), key=lambda kv: -kv[1])
        out[name] = OrderedDict(syncs=sum(where.values()), where=OrderedDict(ranked[:top]))
    return out


MODULE_RANGE = 'module:'  # the prefix of the profiler ranges :func:`module_ranges` opens


@contextlib.contextmanager
def module_ranges(model, depth: int = 4):
    """A ``torch.profiler`` range (``record_function('module:<name>')``) around every forward
    call of the model's submodules whose names have at most ``depth`` parts (``backbone``,
    ``backbone.encoder.layers.*``, ``head.pixel_decoder``, ...; list indices become ``*``, so
    the layers of a stack share one range name), so the profile can say which part of the model
    the time goes to; removed on exit. A module whose ``forward`` is not called (Latent-VG calls
    BEiT-3's ``embed`` / ``forward_layers``) has no range, its called submodules do."""
    import re

    from torch.profiler import record_function
    handles, open_ranges = [], {}
    for qual, module in model.named_modules():
        if not qual or qual.count('.') >= depth:
            continue
        name = re.sub(r'(?<=\.)\d+(?=\.|$)', '*', qual)

        def pre(mod, args, name=name):
            rf = record_function(MODULE_RANGE + name)
            rf.__enter__()
            open_ranges.setdefault(id(mod), []).append(rf)

        def post(mod, args, out):
            stack = open_ranges.get(id(mod))
            if stack:
                stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for stack in open_ranges.values():  # a forward that raised leaves its range open
            while stack:
                stack.pop().__exit__(None, None, None)


def profile_summary(fn, device, steps: int, top: int = 15,
                    timed_step_ms: Optional[float] = None, model=None) -> dict:
    """``torch.profiler`` over ``steps`` calls of ``fn``: the top kernels by self device time
    (CUDA) and the top CPU ops by self CPU time, each with its share of the total and its time
    per step.

    ``kernel_ms_per_step`` sums the kernels (user-annotated ranges such as
    ``Optimizer.step#AdamW.step`` are not kernels: they would count their kernels twice).
    ``gpu_busy_pct`` divides it by the step time under the profiler, whose own CPU work
    lengthens the step (a lower bound); ``kernel_pct_of_timed_step`` by ``timed_step_ms``, the
    median step time measured without the profiler: near 100 the step waits for the GPU's
    kernels, well below it for the host (launches, Python, synchronisations).

    With ``model``, ``module_ranges`` gives, per submodule range of :func:`module_ranges`
    (the ``top`` with the most CPU time), its forward calls' CPU time (inclusive: a range holds
    its submodules' ranges) and, on CUDA, the GPU time its ranges span (first to last kernel,
    gaps included) per step; backward passes are not attributed."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        acts.append(ProfilerActivity.CUDA)
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof, \
            (module_ranges(model) if model is not None else contextlib.nullcontext()):
        for _ in range(steps):
            fn()
        _sync(device)
    wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()

    def dev_us(e):
        v = getattr(e, 'self_device_time_total', None)
        return v if v is not None else getattr(e, 'self_cuda_time_total', 0)

    def rows(evts, key):
        total = sum(key(e) for e in evts) or 1
        out = []
        for e in sorted(evts, key=key, reverse=True)[:top]:
            out.append(dict(name=e.key[:200], calls_per_step=round(e.count / steps, 1),
                            ms_per_step=round(key(e) / 1e3 / steps, 3),
                            share_pct=round(100.0 * key(e) / total, 1)))
        return out, total

    res = dict(steps=steps, wall_ms_per_step_profiled=round(wall * 1e3, 2))
    if device.type == 'cuda':
        kernels = [e for e in events
                   if str(getattr(e, 'device_type', '')).endswith('CUDA') and dev_us(e) > 0
                   and not getattr(e, 'is_user_annotation', False)
                   and not str(e.key).startswith(MODULE_RANGE)]
        res['top_kernels'], total = rows(kernels, dev_us)
        res['kernel_ms_per_step'] = round(total / 1e3 / steps, 2)
        res['gpu_busy_pct'] = round(100.0 * total / 1e6 / steps / wall, 1)
        if timed_step_ms:
            res['kernel_pct_of_timed_step'] = round(100.0 * total / 1e3 / steps / timed_step_ms,
                                                    1)
    if model is not None:
        per = OrderedDict()
        for e in (e for e in events if str(e.key).startswith(MODULE_RANGE)):
            name = e.key[len(MODULE_RANGE):]
            r = per.setdefault(name, dict(name=name, calls_per_step=0.0, cpu_ms_per_step=0.0,
                                          device_span_ms_per_step=0.0))
            if str(getattr(e, 'device_type', 'CPU')).endswith('CUDA'):
                r['device_span_ms_per_step'] += round(dev_us(e) / 1e3 / steps, 3)
            else:
                r['calls_per_step'] += round(e.count / steps, 1)
                r['cpu_ms_per_step'] += round(e.cpu_time_total / 1e3 / steps, 3)
        res['module_ranges'] = sorted(per.values(),
                                      key=lambda r: -r['cpu_ms_per_step'])[:2 * top]
    cpu = [e for e in events if not str(getattr(e, 'device_type', 'CPU')).endswith('CUDA')
           and not str(e.key).startswith(MODULE_RANGE)]
    res['top_cpu_ops'], _ = rows(cpu, lambda e: e.self_cpu_time_total)
    return res


# ----------------------------------------------------------------------------- one model
def optimizer_summary(optimizer) -> dict:
    """Type, parameter groups and kernel choice of the training measurements' optimizer:
    ``fused`` (one kernel per group), ``foreach`` or torch's default (foreach on CUDA, one
    parameter at a time on CPU)."""
    d = optimizer.defaults
    impl = ('fused' if d.get('fused') else 'foreach' if d.get('foreach')
            else 'for-loop' if d.get('foreach') is False else 'default (foreach on CUDA)')
    return dict(type=type(optimizer).__name__, param_groups=len(optimizer.param_groups),
                impl=impl)


def building_mmcv() -> bool:
    """Whether gpu_check.sh's background mmcv build (``GPU_CHECK_BUILD_PID``) still runs."""
    pid = os.environ.get('GPU_CHECK_BUILD_PID', '')
    try:
        with open(f'/proc/{int(pid)}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'  # a zombie has finished
    except (OSError, ValueError, IndexError):
        return False


def check_model(key: str, args, res: Results, clock: Clock, log):
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import set_random_seed

    from mmrefer.registry import MODELS

    sizes = dict(QUICK if args.quick else FULL)
    sizes.update(parse_setup(args.sizes))
    device = torch.device(args.device)
    entry_key, name = entry_name(key, args.mmcv_ops)
    entry = res.data['models'].setdefault(entry_key, OrderedDict())
    entry.update(name=name, config=MODELS_TO_CHECK[key]['config'], mmcv_ops=args.mmcv_ops,
                 cpus_allowed=res.data['device'].get('cpus_allowed'))
    entry.setdefault('measurements', OrderedDict())
    entry.setdefault('notes', [])
    if args.sizes:
        entry['notes'].append('sizes changed with --sizes ' + ' '.join(args.sizes))
    t_model = time.time()

    set_random_seed(args.seed)
    root = synthref(osp.join(args.work_dir, 'synthref_coco'), log)
    cfg, ds_cfg, img_size, removed = prepare_config(key, args.quick, root)
    entry['img_size'] = list(img_size)
    # as the Runner would set it from the config's env_cfg
    torch.backends.cudnn.benchmark = bool(cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
    entry['cudnn_benchmark'] = torch.backends.cudnn.benchmark
    entry['random_init'] = ('model.init_weights() with these pretrained entries removed: '
                            + ', '.join(removed)) if removed else 'model.init_weights()'
    if cfg.model.type == 'InstAlign':
        entry['deform_attn'] = (use_pytorch_deform_attn() if args.mmcv_ops == 'stub' else
                                'mmcv CUDA op' if device.type == 'cuda' else
                                'pytorch (mmcv uses it off CUDA)')
        if args.mmcv_ops == 'built' and device.type == 'cuda':
            try:
                entry['deform_attn_check'] = check_msda_cuda(device)
            except Exception as e:  # noqa: BLE001  (the model run will say more)
                entry['deform_attn_check'] = dict(error=f'{type(e).__name__}: {e}'[:300])
            if entry['deform_attn_check'].get('workaround'):
                entry['notes'].append(entry['deform_attn_check']['workaround'])
    t = time.time()
    n_needed = max(max(sizes['infer_batches']), sizes['train_batch'], sizes['overfit_batch'])
    samples, n_ds = load_samples(ds_cfg, n_needed)
    entry['data'] = (f'SynthRef train split ({n_ds} sentences, COCO-like image sizes) through '
                     f'the config train pipeline without Random* steps, resized to '
                     f'{img_size[0]}x{img_size[1]}; first {n_needed} samples')
    log(f'{key}: {n_needed} samples prepared in {time.time() - t:.1f}s')

    t = time.time()
    try:
        # parameters created and initialised on the device: initialising 270 M parameters on
        # the 2 CPU cores left beside the mmcv build would take a minute
        with torch.device(device):
            model = MODELS.build(cfg.model)
        model.to(device)
        model.init_weights()
    except Exception as e:  # noqa: BLE001
        entry['notes'].append(f'model built on the CPU: building on {device} failed '
                              f'({type(e).__name__}: {str(e)[:200]})')
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.to(device)
    entry['params_m'] = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    entry['weights_mib'] = round(sum(p.numel() * p.element_size()
                                     for p in model.parameters()) / 2**20, 1)
    entry['build_s'] = round(time.time() - t, 1)
    init_state = None if args.no_overfit else {
        k: v.detach().clone() for k, v in model.state_dict().items()}
    log(f'{key}: {entry["params_m"]} M parameters, built in {entry["build_s"]}s')
    res.save()

    def optim_wrapper(foreach=False):
        ow = copy.deepcopy(cfg.optim_wrapper)
        if foreach:  # PyTorch's CUDA default (both device calls of 2026-11-30), for comparison
            ow['optimizer'] = dict(ow['optimizer'], fused=False, foreach=True)
        ow['type'] = 'AutocastOptimWrapper'
        ow['device_type'] = device.type
        ow['dtype'] = 'bfloat16'
        for k in ('loss_scale', 'accumulative_counts'):
            ow.pop(k, None)
        return build_optim_wrapper(model, ow)

    cp_modules = [m for m in model.backbone.modules() if hasattr(m, 'with_cp')]

    def set_cp(flag):
        for m in cp_modules:
            m.with_cp = flag

    batches = {}

    def batch(n):
        if n not in batches:
            batches[n] = device_batch(samples[:n], device)
        return batches[n]

    def infer_fn(n, precision):
        b = batch(n)

        def fn():
            ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == 'bf16'
                   else contextlib.nullcontext())
            with torch.no_grad(), ctx:
                model.test_step(b)
        return fn

    ow_state = {}

    def train_fn(n, foreach=False):
        b = batch(n)
        # one optimizer state on the device at a time: the peaks are each measurement's own
        if ow_state.get('foreach', foreach) != foreach:
            ow_state.clear()
        if 'ow' not in ow_state:
            ow_state.update(ow=optim_wrapper(foreach), foreach=foreach)
            if not foreach:
                entry.setdefault('optimizer', optimizer_summary(ow_state['ow'].optimizer))
        ow = ow_state['ow']

        def fn():
            model.train_step(b, ow)
        fn.optim_wrapper = ow
        return fn

    goals = GOALS.get(key, {})
    goals_apply = device.type == 'cuda' and not args.quick
    entry['goals'] = OrderedDict(
        (gk, dict(goal=gv, measured=None, met=None,
                  applies=goals_apply)) for gk, gv in goals.items())
    if not goals_apply:
        entry['notes'].append('goals are for the H200 at full size (bf16, 480): not judged here')

    big = max(sizes['infer_batches'])
    small = min(sizes['infer_batches'])
    tb = sizes['train_batch']
    if 'sync_audit' not in entry:  # a few steps: where the steps wait for the GPU (CUDA only)
        try:
            entry['sync_audit'] = sync_audit(OrderedDict(
                test_step_bf16=infer_fn(small, 'bf16'), train_step_bf16=train_fn(tb)), device)
            log(f"{key} sync audit: " + ', '.join(
                f"{k} {v.get('syncs', v)}" for k, v in entry['sync_audit'].items()))
        except Exception as e:  # noqa: BLE001  (the measurements stand without it)
            entry['sync_audit'] = dict(error=f'{type(e).__name__}: {e}'[:300])
        res.save()
    plan = [
        (f'infer_bf16_b{big}', 'inference', big, 'bf16', False),
        (f'train_bf16_b{tb}', 'training', tb, 'bf16', False),
        # the same with the foreach AdamW the configs used before fused: what the fused
        # kernel gains
        (f'train_bf16_b{tb}_foreach', 'training, foreach AdamW', tb, 'bf16', False),
        (f'train_bf16_b{tb}_cp', 'training, with_cp', tb, 'bf16', True),
        (f'infer_bf16_b{small}', 'inference', small, 'bf16', False),
        (f'infer_fp32_b{big}', 'inference', big, 'fp32', False),
        (f'infer_fp32_b{small}', 'inference', small, 'fp32', False),
    ]
    compiled = {}  # the torch.compile-d forward, made at the first compiled measurement
    if args.compile:
        label = f'torch.compile {args.compile}' + (f' {args.compile_mode}'
                                                   if args.compile_mode else '')
        plan += [(f'infer_bf16_b{big}_compiled', f'inference, {label}', big, 'bf16', False),
                 (f'train_bf16_b{tb}_compiled', f'training, {label}', tb, 'bf16', False)]

    if args.only:
        plan = select_measurements(plan, args.only)
        entry['notes'].append('measurements limited with --only ' + ' '.join(args.only)
                              + ': ' + (', '.join(p[0] for p in plan) or 'none matched'))

    def use_compiled(flag):
        """The model's forward compiled (as tools/train.py --compile: the loss forward in
        training, predict in inference) or back to the eager one."""
        if not flag:
            model.__dict__.pop('forward', None)
            return
        if 'fn' not in compiled:
            need = 0 if args.quick else MIN_COMPILE_S
            if clock.left() < need:
                raise OutOfTime(f'compiling needs minutes, {max(clock.left(), 0):.0f} s left')
            compiled['fn'] = torch.compile(type(model).forward.__get__(model),
                                           backend=args.compile, mode=args.compile_mode)
        model.forward = compiled['fn']
    goal_keys = {f'infer_bf16_b{big}': 'infer_bf16_b32', f'train_bf16_b{tb}': 'train_bf16_b16'}
    # the optimizer state goes once a run of training measurements ends: the inference peaks
    # after it are the model's own
    end_of_training = {p[0] for i, p in enumerate(plan) if p[1].startswith('training') and (
        i + 1 == len(plan) or not plan[i + 1][1].startswith('training'))}
    for mk, what, n, precision, cp in plan:
        is_compiled = mk.endswith('_compiled')
        if (entry['measurements'].get(mk) or {}).get('img_per_s') is not None:
            continue  # measured by an earlier call of this run (gpu_check.sh's rerun): kept
        r = OrderedDict(what=what, batch=n, precision=precision)
        if building_mmcv():
            r['during_mmcv_build'] = True  # the CPU-bound parts compete with the compile jobs
        entry['measurements'][mk] = r
        training = what.startswith('training')
        if cp and not cp_modules:
            r['skipped'] = f'{type(model.backbone).__name__} has no with_cp'
            res.save()
            continue
        try:
            use_compiled(is_compiled)
            if training:
                model.train()
                set_cp(cp)
                fn = train_fn(n, foreach=mk.endswith('_foreach'))
                r['optimizer'] = optimizer_summary(fn.optim_wrapper.optimizer)
                warm, iters = sizes['train_warmup'], sizes['train_iters']
            else:
                model.eval()
                fn = infer_fn(n, precision)
                warm, iters = sizes['infer_warmup'], sizes['infer_iters']
            if cp:
                r['with_cp_modules'] = len(cp_modules)
            if is_compiled:
                from torch._dynamo.utils import counters
                graphs0 = counters['stats']['unique_graphs']
                r['compile'] = dict(backend=args.compile, mode=args.compile_mode,
                                    target='forward')
            t = time.time()
            tm = time_steps(fn, warm, iters, device, clock)
            r.update(img_per_s=round(n / tm['median_s'], 2),
                     median_ms=round(tm['median_s'] * 1e3, 2),
                     min_ms=round(tm['min_s'] * 1e3, 2), max_ms=round(tm['max_s'] * 1e3, 2),
                     first_step_ms=round(tm['first_s'] * 1e3, 1), warmup=max(warm, 1),
                     iters=iters, peak_mem_mib=tm['peak_mem_mib'],
                     wall_s=round(time.time() - t, 1))
            if is_compiled:  # graphs dynamo made here (the first step also compiled them)
                r['compile']['graphs'] = counters['stats']['unique_graphs'] - graphs0
            log(f"{key} {mk}: {r['img_per_s']} img/s (median {r['median_ms']} ms/step, "
                f"peak {r['peak_mem_mib']} MiB)")
            gk = goal_keys.get(mk)
            if gk in entry['goals']:
                g = entry['goals'][gk]
                g['measured'] = r['img_per_s']
                g['measurement'] = mk
                judged = goals_apply and mk == gk  # the goal's own batch size
                if judged:
                    g['met'] = bool(r['img_per_s'] >= g['goal'])
                if (judged and not g['met']) or args.force_profile:
                    res.save()
                    profiles = entry.setdefault('profiles', OrderedDict())
                    need = 3 * tm['median_s'] * sizes['profile_steps']  # profiler overhead
                    if need > clock.left():
                        profiles[mk] = dict(skipped=f'out of time: needs ~{need:.0f} s')
                    else:
                        try:
                            profiles[mk] = profile_summary(fn, device, sizes['profile_steps'],
                                                           timed_step_ms=r['median_ms'],
                                                           model=model)
                            log(f'{key} {mk}: profiled ({sizes["profile_steps"]} steps)')
                        except Exception as e:  # noqa: BLE001  (the timing stands)
                            profiles[mk] = dict(error=f'{type(e).__name__}: {e}'[:300])
        except OutOfTime as e:
            r['skipped'] = f'out of time: {e}'
            log(f'{key} {mk}: skipped ({e})')
        except Exception as e:  # noqa: BLE001  (one failure must not lose the other figures)
            r['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300]}' if str(e) else \
                type(e).__name__
            r['traceback'] = traceback.format_exc()[-2000:]
            log(f'{key} {mk}: FAILED {r["error"]}')
        finally:
            set_cp(False)
            use_compiled(False)
            if training and mk in end_of_training:
                ow_state.clear()  # later inference peaks without the optimizer state
            if device.type == 'cuda':
                torch.cuda.empty_cache()
        res.save()

    if args.no_overfit:
        entry['total_s'] = round(time.time() - t_model, 1)
        entry['notes'].append('no overfit in this call (--no-overfit: it ran in an earlier one)')
        res.save()
        return
    # ---- overfit one fixed batch from the initial weights
    o = OrderedDict(batch=sizes['overfit_batch'], iters=sizes['overfit_iters'], iters_done=0,
                    precision='bf16', target=OVERFIT_TARGET)
    previous = entry.get('overfit') or {}  # an earlier call's (cut) overfit: the longer stays
    entry['overfit'] = o
    try:
        model.load_state_dict(init_state)
        del init_state
        ow_state.clear()
        model.train()
        ow = optim_wrapper()
        o['lr'] = sorted({round(g['lr'], 10) for g in ow.optimizer.param_groups})
        b = batch(sizes['overfit_batch'])
        curve = []
        _reset_peak(device)
        t0 = time.time()
        for i in range(sizes['overfit_iters']):
            if i > 0 and clock.left() < (time.time() - t0) / i:
                o['stopped'] = f'out of time after {i} iterations'
                entry['notes'].append(f'overfit stopped by the deadline after {i} of '
                                      f"{sizes['overfit_iters']} iterations")
                break
            loss = model.train_step(b, ow)['loss']
            curve.append(float(loss.detach() if hasattr(loss, 'detach') else loss))
            if not (curve[-1] == curve[-1] and abs(curve[-1]) != float('inf')):
                o['error'] = f'non-finite loss {curve[-1]} at iteration {i + 1}'
                break
        o['iters_done'] = len(curve)
        o['s_per_iter'] = round((time.time() - t0) / max(len(curve), 1), 4)
        o['peak_mem_mib'] = _peak(device)
        if curve:
            o['loss_first'], o['loss_last'] = round(curve[0], 4), round(curve[-1], 4)
            o['loss_ratio'] = round(curve[-1] / curve[0], 4) if curve[0] else None
            o['target_met'] = bool(o['loss_ratio'] is not None and
                                   o['loss_ratio'] <= OVERFIT_TARGET)
            o['curve'] = [round(v, 4) for v in curve]
        log(f"{key} overfit: {o.get('loss_first')} -> {o.get('loss_last')} "
            f"(ratio {o.get('loss_ratio')}) in {o['iters_done']} iterations")
    except Exception as e:  # noqa: BLE001
        o['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300]}' if str(e) else \
            type(e).__name__
        o['traceback'] = traceback.format_exc()[-2000:]
        log(f'{key} overfit: FAILED {o["error"]}')
    if previous.get('iters_done', 0) > o['iters_done'] and not previous.get('error'):
        entry['overfit'] = previous
        entry['notes'].append(f"a second overfit ran {o['iters_done']} iterations; the first "
                              f"one's {previous['iters_done']} are kept")
    entry['total_s'] = round(time.time() - t_model, 1)
    res.save()


# ----------------------------------------------------------------------------- main
def entry_name(key: str, mmcv_ops: str):
    """Results key and display name: InstAlign measured without the built mmcv ops (its
    deformable attention on mmcv's PyTorch path) is kept apart from the built-ops run."""
    if key == 'instalign' and mmcv_ops == 'stub':
        return ('instalign_msda_pytorch',
                'InstAlign (deformable attention in PyTorch: mmcv ops not built)')
    return key, MODELS_TO_CHECK[key]['name']


def device_info(device_str: str) -> dict:
    import torch
    d = torch.device(device_str)
    info = OrderedDict(type=d.type, torch=torch.__version__, cuda=torch.version.cuda,
                       python=platform.python_version(), cpu_count=os.cpu_count())
    try:
        info['cpus_allowed'] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    if d.type == 'cuda':
        idx = d.index if d.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(idx)
        info.update(name=p.name, capability=f'{p.major}{p.minor}',
                    memory_gib=round(p.total_memory / 2**30, 1),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    else:
        info['name'] = platform.processor() or 'cpu'
    info['torch_threads'] = torch.get_num_threads()
    return info


def status_of(data) -> str:
    """``complete`` when every entry's measurements ran without error or skip and each config
    has one overfit that ran to its end; ``partial`` otherwise."""
    models = data.get('models') or {}
    if not models:
        return 'empty'
    overfit_ok = {}
    for m in models.values():
        if m.get('error'):
            return 'partial'
        for r in (m.get('measurements') or {}).values():
            if r.get('error') or r.get('skipped'):
                return 'partial'
        o = m.get('overfit') or {}
        ok = bool(o) and not (o.get('error') or o.get('skipped') or o.get('stopped'))
        overfit_ok[m.get('config')] = overfit_ok.get(m.get('config'), False) or ok
    return 'complete' if all(overfit_ok.values()) else 'partial'


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cuda_build_env:
        env, notes = cuda_build_env(os.environ)
        for name, value in env:
            print(f'env {name}={value}')
        for key, note in notes:
            print(f'setup {key}={note}')
        return 0
    res = Results(args.out_dir)
    res.data.setdefault('setup', OrderedDict()).update(parse_setup(args.setup))
    if not args.finalize:
        res.save()  # the setup facts survive a failure of the imports below

    def log(msg):
        print(f'[gpu_check] {msg}', flush=True)

    if args.finalize:
        res.data['status'] = status_of(res.data)
        started = res.data.get('started_epoch')
        if started:
            res.data['total_s'] = round(time.time() - started, 1)
        res.save()
        log(f'status {res.data["status"]}: {res.json_path}, {res.md_path}')
        return 0

    if args.mmcv_ops == 'stub':
        install_mmcv_ext_stub()
    import torch
    try:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    except AttributeError:
        pass
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit(f'gpu_check: --device {args.device} but CUDA is not available')
    from mmengine.logging import MMLogger

    from mmrefer.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    # mmengine logs every parameter-wise optimizer option at INFO: keep warnings only
    MMLogger.get_instance('gpu_check', log_level='WARNING')
    res.data.setdefault('started_epoch', time.time())
    res.data['quick'] = bool(args.quick)
    res.data['device'] = device_info(args.device)
    clock = Clock(args.deadline)
    res.save()
    for key in args.models:
        if clock.left() <= 0:
            entry_key, name = entry_name(key, args.mmcv_ops)
            res.data['models'][entry_key] = OrderedDict(
                name=name, config=MODELS_TO_CHECK[key]['config'],
                measurements=OrderedDict(), overfit=OrderedDict(skipped='out of time'),
                notes=['not measured: out of time before it started'])
            res.save()
            continue
        try:
            check_model(key, args, res, clock, log)
        except Exception as e:  # noqa: BLE001  (setup of this model failed)
            entry = res.data['models'].setdefault(entry_name(key, args.mmcv_ops)[0],
                                                  OrderedDict())
            entry['error'] = f'{type(e).__name__}: {e}'
            entry['traceback'] = traceback.format_exc()[-3000:]
            entry.setdefault('overfit', OrderedDict(error='model setup failed'))
            log(f'{key}: FAILED before measuring: {type(e).__name__}: {e}')
            res.save()
    res.data['status'] = status_of(res.data)
    res.save()
    # 3: something of this call was left out for lack of time (gpu_check.sh may run it again)
    return 3 if cut_for_time(res.data, [entry_name(k, args.mmcv_ops)[0] for k in args.models]) \
        else 0


def cut_for_time(data, keys) -> bool:
    """Whether a measurement or the overfit of these entries was skipped or stopped by the
    deadline."""
    for k in keys:
        m = (data.get('models') or {}).get(k) or {}
        parts = list((m.get('measurements') or {}).values()) + [m.get('overfit') or {}]
        if any(str(r.get('skipped', '')).startswith('out of time') or r.get('stopped')
               for r in parts):
            return True
    return False


if __name__ == '__main__':
    sys.path.insert(0, REPO_ROOT)
    sys.exit(main())

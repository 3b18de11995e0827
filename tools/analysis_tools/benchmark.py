"""Inference speed, backbone share, data-pipeline speed and peak memory of an mmrefer config.

    python tools/analysis_tools/benchmark.py CONFIG [--weights CKPT] [--batch-size 4] \
        [--iters 20] [--warmup 2] [--amp] [--device cpu|cuda] [--data-iters 50] [--out r.json] \
        [--cfg-options test_dataloader.dataset.data_root=DIR ...]

Measured, in one process and on the same inputs:

* ``latency_b1_ms`` / ``images_per_s_b1``: ``model(..., mode='predict')`` on one sample
  (data preprocessing done once beforehand, so only the network and its post-processing count);
* ``latency_bN_ms`` / ``images_per_s_bN``: the same on a batch of ``--batch-size`` samples;
* ``backbone_bN_ms`` and ``full_to_backbone_ratio``: the model's ``backbone`` alone on the same
  batch, and full time / backbone time. For Latent-VG (BEiT-3) that is the plain BEiT-3 forward
  on the same image and tokenized sentences (no latent expressions); for other models (InstAlign:
  Swin) the backbone is called with exactly the arguments it receives inside the full forward
  (captured with a forward pre-hook). See :func:`backbone_call`;
* ``data_samples_per_s``: ``dataset[i]`` (file loading + the config's test pipeline) over
  ``--data-iters`` samples of the config's test dataset; when that dataset is not on disk the
  inference pipeline on a synthetic image is timed instead (``data_source`` says which);
* ``peak_rss_mb`` (``resource`` ru_maxrss of the process) and ``cuda_max_allocated_mb``.

``--amp`` autocasts to bf16 on CPU and to fp16 (``--amp-dtype bf16`` for bf16) on CUDA.
Numbers are printed as ``key: value`` lines and optionally written as JSON.
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

import numpy as np
import torch
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Benchmark an mmrefer model')
    p.add_argument('config', help='config file or config name')
    p.add_argument('--weights', default=None, help='checkpoint (random init when omitted)')
    p.add_argument('--batch-size', type=int, default=4, help='N for the batched measurement')
    p.add_argument('--iters', type=int, default=20, help='timed iterations per measurement')
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    p.add_argument('--data-iters', type=int, default=50, help='samples for the pipeline speed')
    p.add_argument('--amp', action='store_true', help='autocast (bf16 on CPU, fp16 on CUDA)')
    p.add_argument('--amp-dtype', choices=['fp16', 'bf16'], default=None)
    p.add_argument('--device', default='cpu', help='cpu, cuda, cuda:0, ...')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.add_argument('--out', default=None, help='write the results as JSON here')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config settings, key=value pairs')
    args = p.parse_args(argv)
    for k in ('batch_size', 'iters', 'data_iters'):
        if getattr(args, k) < 1:
            p.error(f'--{k.replace("_", "-")} must be >= 1, got {getattr(args, k)}')
    if args.warmup < 0:
        p.error(f'--warmup must be >= 0, got {args.warmup}')
    return args


class Bench:

    def __init__(self, device: torch.device, amp: bool, amp_dtype, progress: bool):
        self.device = device
        self.amp = amp
        if amp_dtype is None:
            amp_dtype = 'bf16' if device.type == 'cpu' else 'fp16'
        self.dtype = torch.bfloat16 if amp_dtype == 'bf16' else torch.float16
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

    @torch.no_grad()
    def time(self, fn, iters, warmup, desc):
        """Median seconds per call of ``fn`` (``warmup`` untimed calls first)."""
        times = []
        for i in self.bar(warmup + iters, desc):
            self.sync()
            t0 = time.perf_counter()
            with self.autocast():
                fn()
            self.sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def backbone_call(model, data):
    """``(backbone, args, kwargs)``: the bare backbone's call on the batch ``data``.

    * a model may define ``plain_backbone_inputs(data) -> (args, kwargs)``;
    * BEiT-3 models (Latent-VG) run the plain BEiT-3 forward on the same image and the same
      tokenized sentences (``model.tokenize``), i.e. no latent-expression tokens and no
      per-layer subject distributor / concept injector;
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
    if type(backbone).__name__ == 'BEiT3' and callable(getattr(model, 'tokenize', None)):
        with torch.no_grad():
            ids, pad = model.tokenize(data['data_samples'], data['inputs'].device)
        kwargs = dict(textual_tokens=ids, visual_tokens=data['inputs'],
                      text_padding_position=pad)
        if backbone.vision_embed.cls_token is None:  # the subject token's slot: a zero token
            kwargs['visual_cls'] = data['inputs'].new_zeros(len(ids), 1, backbone.embed_dims)
        return backbone, (), kwargs
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


def synthetic_samples(cfg, n, seed=0):
    """``n`` packed samples from the inference pipeline on random images (no dataset needed)."""
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
    return out, pipeline


def build_dataset(cfg):
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
        return None, f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'


def run(args):
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import load_checkpoint

    from mmrefer.apis.inferencer import resolve_config
    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f'--device {args.device}: CUDA is not available on this machine')
    bench = Bench(device, args.amp, args.amp_dtype, not args.no_progress)
    register_all_modules(init_default_scope=True)
    cfg = resolve_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    res = dict(config=getattr(cfg, 'filename', str(args.config)), device=str(device),
               amp=(str(bench.dtype).replace('torch.', '') if args.amp else 'off'),
               batch_size=args.batch_size, iters=args.iters, threads=torch.get_num_threads())

    model = MODELS.build(cfg.model)
    if args.weights:
        if not osp.isfile(args.weights):
            raise FileNotFoundError(f'checkpoint file not found: {args.weights}')
        load_checkpoint(model, args.weights, map_location='cpu', strict=False)
    model.to(device).eval()
    res['model'] = type(model).__name__
    res['params_m'] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)

    # ---- data pipeline speed (and the samples used for the model)
    dataset, reason = build_dataset(cfg)
    if dataset is not None:
        res['data_source'] = f'{type(dataset).__name__} ({len(dataset)} samples)'
        n = min(args.data_iters, len(dataset))
        t0 = time.perf_counter()
        samples = [dataset[i % len(dataset)] for i in bench.bar(n, 'data pipeline')]
        res['data_samples_per_s'] = round(n / (time.perf_counter() - t0), 2)
        while len(samples) < args.batch_size:
            samples.append(dataset[len(samples) % len(dataset)])
    else:
        res['data_source'] = f'synthetic images through the inference pipeline ({reason})'
        samples, pipeline = synthetic_samples(cfg, args.batch_size)
        img = np.random.RandomState(1).randint(0, 255, (360, 480, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        for i in bench.bar(args.data_iters, 'data pipeline'):
            pipeline(dict(img=img.copy(), img_id=i, ref_id=i, sent_id=i, text='a red circle',
                          no_target=False, source='synthetic', height=360, width=480,
                          instances=[], ref_bbox=None))
        res['data_samples_per_s'] = round(args.data_iters / (time.perf_counter() - t0), 2)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)

    def prep(batch):
        with torch.no_grad():
            return model.data_preprocessor(pseudo_collate(batch), False)

    # ---- full model, batch 1 and batch N
    d1 = prep(samples[:1])
    t1 = bench.time(lambda: model(**d1, mode='predict'), args.iters, args.warmup, 'model b=1')
    res['latency_b1_ms'] = round(t1 * 1e3, 2)
    res['images_per_s_b1'] = round(1.0 / t1, 2)
    dn = prep(samples[:args.batch_size])
    tn = bench.time(lambda: model(**dn, mode='predict'), args.iters, args.warmup,
                    f'model b={args.batch_size}')
    res['latency_bN_ms'] = round(tn * 1e3, 2)
    res['images_per_s_bN'] = round(args.batch_size / tn, 2)

    # ---- bare backbone on the same batch
    with bench.autocast():
        backbone, bargs, bkwargs = backbone_call(model, dn)
    tb = bench.time(lambda: backbone(*bargs, **bkwargs), args.iters, args.warmup, 'backbone')
    res['backbone'] = type(backbone).__name__
    res['backbone_bN_ms'] = round(tb * 1e3, 2)
    res['full_to_backbone_ratio'] = round(tn / tb, 3)

    # ---- memory
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    res['peak_rss_mb'] = round(rss / (1024 ** 2 if sys.platform == 'darwin' else 1024), 1)
    if device.type == 'cuda':
        res['cuda_max_allocated_mb'] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return res


def main(argv=None):
    args = parse_args(argv)
    res = run(args)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f'{k:<{width}} : {v}')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())

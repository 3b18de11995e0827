"""Helpers shared by model tests: a config's model with its dataloader on SynthRef, a tiny
byte-level BPE tokenizer directory (RoBERTa layout), recorders of the ops run under them
(their count, the largest tensor they return), a faster layout for bf16 matrix products on CPUs
without native bf16, and the cores a test process may use."""
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def cpu_share() -> int:
    """This process's share of the cores: all of them, or under pytest-xdist the cores over
    the number of workers (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    return max(1, (cores or 1) // workers)


class TransposedBf16Gemm(TorchDispatchMode):
    """Run every CPU bf16 ``mm`` of two row-major operands with the second one transposed in
    memory (``b.t().contiguous().t()``), on CPUs where oneDNN has no bf16 matrix product.

    There PyTorch computes bf16 products with its reference GEMM, whose row-major x row-major
    case is 10-25 times slower than its cases with a transposed operand (a [288, 1536] x
    [1536, 512] product: 0.56 s against 0.024 s on the 2-core development machine, 2026-12-01);
    the backward pass of every linear layer takes that case. The inputs and the bf16 output
    rounding are the same and the products accumulate in fp32 either way, in another order: the
    results differ by at most one bf16 spacing of the output. A paper-size bf16 training step
    of InstAlign at 256 x 256 took 226 s without this and 60 s with it. Elsewhere it changes
    nothing.
    """

    def __init__(self):
        super().__init__()
        self.active = not torch.ops.mkldnn._is_mkldnn_bf16_supported()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.active and func is torch.ops.aten.mm.default and not kwargs:
            a, b = args
            if (a.dtype == b.dtype == torch.bfloat16 and a.device.type == 'cpu'
                    and a.stride(-1) == 1 and b.stride(-1) == 1):
                return func(a, b.t().contiguous().t())
        return func(*args, **(kwargs or {}))


class OpCount(TorchDispatchMode):
    """``n``: the aten ops run under it (a proxy for kernel launches); ``views=False`` leaves
    out the view ops, which launch no kernel."""

    def __init__(self, views: bool = True):
        super().__init__()
        self.views = views
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += self.views or not func.is_view
        return func(*args, **(kwargs or {}))


class LargestOutput(TorchDispatchMode):
    """``numel``: the largest number of elements any aten op under it returns."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def build_model_and_loader(config_path, data_root, batch_size=2, split='train',
                           random_weights=False, img_size=None):
    """``(model, dataloader)`` of a config pointed at the SynthRef copy ``data_root``: the model
    built with seed 0 and ``init_weights()``, the ``split`` dataloader unshuffled with
    ``batch_size`` samples and no workers. ``random_weights``: drop the pretrained files of a
    paper config (random weights in the paper architecture). ``img_size``: the network input
    side instead of the config's (every ``RefResize`` of the split's pipelines, and BEiT-3's
    position table), as ``gpu_check.py --quick`` sets it."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmrefer.datasets.synthetic import dataset_leaves, point_config_at_synthref
    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(config_path)
    point_config_at_synthref(cfg, str(data_root))
    if img_size is not None:
        resized = [step for ds in dataset_leaves(cfg[f'{split}_dataloader'].dataset)
                   for step in ds.pipeline if str(step.get('type')).split('.')[-1] == 'RefResize']
        assert resized, f'{config_path}: no RefResize in the {split} pipeline'
        for step in resized:
            step.scale = (img_size, img_size)
        if cfg.model.backbone.get('img_size'):
            cfg.model.backbone.img_size = img_size
    if random_weights:
        if cfg.model.type == 'LatentVG':
            cfg.model.pretrained = None
        else:
            cfg.model.backbone.init_cfg = None
            cfg.model.text_encoder.pretrained = None
    loader = cfg[f'{split}_dataloader']
    loader.batch_size, loader.num_workers, loader.persistent_workers = batch_size, 0, False
    loader.sampler = dict(type='DefaultSampler', shuffle=False)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, Runner.build_dataloader(loader, seed=0)


def make_bpe_dir(path, sentences, vocab_size=300):
    """Train a byte-level BPE (RoBERTa special tokens) on ``sentences`` into ``path``."""
    from tokenizers import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(sentences), vocab_size=vocab_size, min_frequency=1,
                            special_tokens=['<s>', '<pad>', '</s>', '<unk>', '<mask>'])
    bpe.save_model(str(path))
    return str(path)


def pre_restructure_state_dict(name):
    """A random state dict with the keys and shapes of ``tests/data/pre_restructure/NAME.json``
    (a quick-start model as saved before the per-paper reorganisation); index buffers hold
    zeros so that they stay valid indices."""
    import json
    import os.path as osp
    path = osp.join(osp.dirname(__file__), 'data', 'pre_restructure', f'{name}.json')
    with open(path) as f:
        shapes = json.load(f)
    g = torch.Generator().manual_seed(0)
    return {key: torch.zeros(shape, dtype=torch.long) if key.endswith('relative_position_index')
            else torch.randn(shape, generator=g) for key, shape in shapes.items()}


def schedule_options(model, optim_wrapper_cfg):
    """``({parameter name: (lr, weight_decay)}, names of the norm layers' parameters,
    optimizer)`` of the optimizer a config's ``optim_wrapper`` builds for ``model``; every
    parameter must be in exactly one group."""
    import copy

    import torch.nn as nn
    from mmengine.optim import build_optim_wrapper
    cfg = copy.deepcopy(optim_wrapper_cfg)
    if any(p.is_meta for p in model.parameters()):
        # MergedGroupsOptimWrapperConstructor refuses fused=True for parameters on a device
        # without a fused kernel (meta); the groups and their options do not depend on it
        cfg['optimizer'].pop('fused', None)
    optimizer = build_optim_wrapper(model, cfg).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    placed = [names[id(p)] for g in optimizer.param_groups for p in g['params']]
    assert sorted(placed) == sorted(names.values())
    options = {names[id(p)]: (g['lr'], g['weight_decay'])
               for g in optimizer.param_groups for p in g['params']}
    norms = {f'{m}.{p}' for m, mod in model.named_modules()
             if isinstance(mod, (nn.LayerNorm, nn.GroupNorm))
             for p, _ in mod.named_parameters(recurse=False)}
    return options, norms, optimizer

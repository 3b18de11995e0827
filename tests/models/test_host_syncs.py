"""Host-device synchronisations in ``loss`` and ``predict`` of both quick-start models, counted
by where they happen, against the budget documented in docs/efficiency.md ("No hidden host
synchronisations").

A synchronisation is a device -> host read, or a host -> device copy without
``non_blocking=True`` (torch ends it with a stream synchronisation on CUDA): ``item``,
``tolist``, ``cpu``, ``numpy``,
``bool(t)``, ``float(t)``, ``int(t)``, ``nonzero``, ``masked_select``, a boolean-mask index or
assignment, an index given as a Python list (copied to the device and waited for), or a tensor -> number conversion made in C++ (``aten._local_scalar_dense``: a size
given as a 0-d tensor to ``split`` / ``reshape``, a range check). The recorder instruments the
tensor functions (``TorchFunctionMode``) and the aten ops (``TorchDispatchMode``) and files every
read under the first frame outside torch: mmrefer's own code, mmdet's ``HungarianAssigner``,
mmcv's deformable attention, transformers' RoBERTa, ...

Budget (per call, batch of B samples; tiny configs on CPU):

* mmrefer's own code: ``loss`` 0 for Latent-VG; ``predict`` 1 for Latent-VG (the
  post-processor's single copy of the per-sample decisions and scores), 2 for InstAlign (plus
  the indices of the words each shown instance aligns to);
* InstAlign's ``loss`` 1: the cost matrices of every supervised layer and image go to scipy in
  one copy (mmdet's ``HungarianAssigner.assign`` made 3 waits per image and layer: the copy
  and two blocking uploads of the match); nothing from mmdet (the pixel decoder keeps the level
  sizes on the host);
* mmcv: nothing (``HostShapeMultiScaleDeformableAttention`` takes the level sizes as host ints;
  mmcv's own module read them back 10 times per encoder layer on its PyTorch path);
* third-party encoders (transformers' RoBERTa mask preparation): listed and bounded below, not
  ours to change.
"""
import copy
import itertools
import traceback
import weakref
from collections import Counter

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from e2e_helpers import QUICKSTART

READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy,
         torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
         torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero,
         torch.Tensor.masked_select, torch.masked_select}
ORIGINS = (('mmrefer', '/mmrefer/'), ('hungarian', 'hungarian_assigner'),
           ('mmcv', '/mmcv/'), ('transformers', '/transformers/'), ('mmdet', '/mmdet/'),
           ('mmengine', '/mmengine/'))


def _origin(stack) -> str:
    """The first frame (innermost first) outside torch and this test."""
    for frame in reversed(stack):
        f = frame.filename.replace('\\', '/')
        if '/torch/' in f or f.endswith('test_host_syncs.py'):
            continue
        for name, key in ORIGINS:
            if key in f:
                return name
        return f'other:{f}:{frame.lineno}'
    return 'unknown'


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)


def _names_device(args, kwargs) -> bool:
    """``Tensor.to(...)`` with a device (or a tensor whose device it takes), not a dtype only."""
    return 'device' in kwargs or any(isinstance(a, (str, torch.device, torch.Tensor))
                                     for a in args[1:])


class HostReads(TorchFunctionMode):
    """Counts device -> host reads by origin (see the module docstring).

    On a CPU-only machine every tensor lives in host memory, so the recorder tracks what
    *would* be a read on an accelerator: a ``.cpu()`` (or ``.numpy()``, ``.tolist()``, ...) of
    a model tensor is counted once, and everything computed from its result afterwards is host
    data, read for free (taint tracking through every torch function)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()
        self.where = []
        self._depth = 0
        self._host = {}  # id -> weakref of tensors that already live on the host side

    def record(self):
        stack = traceback.extract_stack()[:-2]
        origin = _origin(stack)
        self.counts[origin] += 1
        self.where.append((origin, [f'{f.filename}:{f.lineno}' for f in stack[-6:]]))

    def blocking_upload(self, func, args, kwargs) -> bool:
        """A host -> device copy without ``non_blocking=True``: on CUDA torch finishes it with
        a stream synchronisation (``memcpy_and_sync``), a wait like a read."""
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            # an index given as a Python list (``x[:, [1, 2]]``) is built on the host and
            # copied to the indexed tensor's device with a wait
            key = args[1] if isinstance(args[1], tuple) else (args[1], )
            return any(isinstance(k, list) for k in key) and not self.on_host(args[:1], None)
        if func in (torch.tensor, torch.as_tensor):  # data from Python (or the host) + device=
            return kwargs.get('device') is not None and not any(
                not self.on_host((t, ), None) for t in _tensors(args))
        if func is not torch.Tensor.to or not self.on_host(args[:1], None):
            return False
        non_blocking = kwargs.get('non_blocking') or any(a is True for a in args[1:])
        return _names_device(args, kwargs) and not non_blocking

    def on_host(self, args, kwargs) -> bool:
        ts = list(_tensors(args)) + list(_tensors(kwargs or {}))
        return bool(ts) and all(
            self._host.get(id(t)) is not None and self._host[id(t)]() is t for t in ts)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        host_in = self.on_host(args, kwargs)
        if func in READS and not self._depth and not host_in:
            self.record()
        if not self._depth and self.blocking_upload(func, args, kwargs or {}):
            self.record()
        self._depth += func in READS  # a read inside a read (e.g. bool -> item) counts once
        try:
            out = func(*args, **(kwargs or {}))
        finally:
            self._depth -= func in READS
        # built from Python data without a device; one built with ``device=`` (the model's, so
        # the accelerator's there) is device data even when that device is the CPU here
        made_on_host = (func in (torch.tensor, torch.as_tensor, torch.from_numpy)
                        and (kwargs or {}).get('device') is None)
        moved = func is torch.Tensor.cuda or (func is torch.Tensor.to and _names_device(
            args, kwargs or {}))  # lands on the device
        if moved:  # device data from now on, even when .to() returned the tensor itself here
            self._host.pop(id(out), None)
        elif (host_in or made_on_host or func in (torch.Tensor.cpu, torch.Tensor.numpy)):
            self._host.update((id(t), weakref.ref(t)) for t in _tensors(out))
        return out


class DataDependentOps(TorchDispatchMode):
    """Boolean-mask indexing and other aten ops whose output needs the data on the host."""

    def __init__(self, reads: HostReads):
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        bool_index = name.startswith(('aten.index.Tensor', 'aten.index_put')) and any(
            i is not None and getattr(i, 'dtype', None) in (torch.bool, torch.uint8)
            for i in args[1])
        # _local_scalar_dense: a tensor -> Python number conversion made in C++ (a size given
        # as a 0-d tensor to split / reshape, a range check, ...), invisible to the function mode
        if not self.reads._depth and not self.reads.on_host(args, kwargs) and (
                bool_index or 'nonzero' in name or 'masked_select' in name
                or '_local_scalar_dense' in name):
            self.reads.record()
        return func(*args, **(kwargs or {}))


def _count(fn):
    reads = HostReads()
    from_numpy = torch.from_numpy  # not a torch function the mode sees: its output is host data

    def host_from_numpy(array):
        t = from_numpy(array)
        reads._host[id(t)] = weakref.ref(t)
        return t
    torch.from_numpy = host_from_numpy
    try:
        with reads, DataDependentOps(reads):
            out = fn()
    finally:
        torch.from_numpy = from_numpy
    return out, reads.counts


def _model_and_batch(method, data_root, batch_size=2):
    from model_helpers import build_model_and_loader
    model, batches = build_model_and_loader(QUICKSTART[method], data_root, batch_size)
    # a batch with a targeted and a no-target sentence
    for data in itertools.islice(batches, 50):
        flags = {ds.metainfo['no_target'] for ds in data['data_samples']}
        if flags == {True, False}:
            return model, data
    pytest.fail('SynthRef has no batch with both targeted and no-target sentences')


def test_recorder_sees_each_kind_of_read():
    t = torch.tensor([0., 2., 0.])

    def reads():
        t.sum().item()
        bool(t.any())
        t.nonzero()
        t[t > 1]
        u = t.clone()
        u[t > 1] = 0.  # a boolean-mask assignment
        t.reshape((t > 1).sum() + 2)  # a size given as a 0-d tensor (read in C++)
        torch.split(t, [(t > 1).sum(), (t > 1).sum() + 1])  # two sizes
        torch.tensor([1, 2], device=t.device)  # blocking uploads: 3
        torch.tensor([1, 2]).to(t.device)
        torch.from_numpy(np.arange(2)).to(t.device)
        t[[0, 2]]  # a list index, read and written: 2 uploads
        u[[1]] = 0.
        t[0:2], t[:, None], t[t.new_zeros(2, dtype=torch.long)]  # slices, device index: 0
        torch.tensor([1, 2]).to(t.device, non_blocking=True)  # not these: 0
        torch.tensor([1, 2]).to(torch.float32)
        t.cpu()  # last: on a CPU-only machine this returns t itself, host data from then on
    _, counts = _count(reads)
    assert sum(counts.values()) == 14, counts


@pytest.mark.parametrize('method', ['latentvg', 'instalign'])
def test_loss_and_predict_within_the_host_read_budget(method, synthref_root, one_torch_thread):
    model, data = _model_and_batch(method, synthref_root)
    model.train()
    batch = model.data_preprocessor(copy.deepcopy(data), training=True)
    _, loss_reads = _count(lambda: model.loss(batch['inputs'], batch['data_samples']))
    model.eval()
    batch = model.data_preprocessor(copy.deepcopy(data), training=False)
    with torch.no_grad():
        _, predict_reads = _count(lambda: model.predict(batch['inputs'],
                                                        batch['data_samples']))
    B = len(data['data_samples'])
    print(f'{method}: loss {dict(loss_reads)}, predict {dict(predict_reads)}')
    # InstAlign's loss: the cost matrices of every supervised layer and image, in one copy
    assert loss_reads['mmrefer'] == (0 if method == 'latentvg' else 1), loss_reads
    assert predict_reads['mmrefer'] == (1 if method == 'latentvg' else 2), predict_reads
    allowed = {'mmrefer', 'transformers'}  # mmdet's Hungarian assigner is not called
    assert set(loss_reads) <= allowed and set(predict_reads) <= allowed, (loss_reads,
                                                                          predict_reads)
    if method == 'latentvg':  # a plain-torch BEiT-3: nothing else reads back
        assert set(loss_reads) <= {'mmrefer'} and set(predict_reads) == {'mmrefer'}
    else:
        # none from mmdet's pixel decoder or mmcv's deformable attention (``allowed`` above:
        # the level sizes stay host ints down to the sampling); RoBERTa: a bounded number
        # (docs/efficiency.md)
        for reads in (loss_reads, predict_reads):
            assert reads['transformers'] <= 4 * B, reads


@pytest.mark.parametrize('method', ['latentvg', 'instalign'])
def test_data_preprocessor_waits_for_nothing(method, synthref_root, one_torch_thread):
    """``RefDataPreprocessor`` moves a batch without a wait: the images (stacked into one
    batch) and the ground truth go over ``non_blocking``, and the BGR -> RGB swap is a ``flip``
    (mmengine's list index
    ``img[[2, 1, 0], ...]`` was an upload and a wait per image: 16 per training batch on the
    H200, docs/benchmarks.md). The swap gives mmengine's values."""
    from mmengine.model import ImgDataPreprocessor
    model, data = _model_and_batch(method, synthref_root)
    pre = model.data_preprocessor

    def waits(training):
        reads = HostReads()
        with reads, DataDependentOps(reads):
            out = pre(copy.deepcopy(data), training=training)
        # mmengine's stack_batch sums image sizes it holds in a host tensor made by the legacy
        # torch.Tensor(list) constructor, which the recorder does not see: host data, no wait
        return out, [w for w in reads.where if not w[1][-1].replace('\\', '/').endswith(
            'mmengine/model/utils.py:52')]

    for training in (True, False):
        batch, where = waits(training)
        assert not where, (training, where)
    assert pre._flip_channels
    # the recorder sees mmengine's own swap: one wait (a list index), on the batch the
    # preprocessor stacks the images into (mmengine's list path made one per image)
    pre._flip_channels, pre._channel_conversion = False, True
    assert len(waits(True)[1]) == 1
    pre._flip_channels, pre._channel_conversion = True, False
    reference = ImgDataPreprocessor(mean=pre.mean.flatten().tolist(),
                                    std=pre.std.flatten().tolist(), bgr_to_rgb=True,
                                    pad_size_divisor=pre.pad_size_divisor)
    expected = reference(copy.deepcopy(data))['inputs']
    assert torch.equal(batch['inputs'][..., :expected.shape[-2], :expected.shape[-1]], expected)

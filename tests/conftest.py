"""Session-wide fixtures shared by the whole test suite.

``synthref_root``: a small SynthRef (mmrefer.datasets.synthetic, ``SYNTHREF_SMALL_SIZES``:
30 train / 10 val / 4 testA / 4 testB images, seed 0) built once per session. Layout::

    <root>/images/train2014/COCO_train2014_%012d.jpg
    <root>/refcoco/{instances.json, refs(unc).p}
    <root>/grefcoco/{instances.json, grefs(unc).json}
    <root>/refzom/{instances.json, refs(final).p}
    <root>/tokenizers/{beit3.spm, roberta/}

Point a config at it with ``data_root=str(synthref_root) + '/'``.

Under pytest-xdist (``make test`` runs two workers, ``TEST_WORKERS``) each worker gets its share
of the cores (:func:`model_helpers.cpu_share`) as torch threads and as ``OMP_NUM_THREADS`` for the
tools the tests start (oversubscribed OpenMP threads are many times slower), and the modules with
slow tests are handed out first, so that the workers finish together.
"""
import os

import pytest
from model_helpers import cpu_share

if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ.setdefault('OMP_NUM_THREADS', str(cpu_share()))
    import torch
    torch.set_num_threads(cpu_share())


def pytest_collection_modifyitems(config, items):
    """Modules with a slow test first (the same order on every worker, as xdist requires)."""
    slow = {item.module.__name__ for item in items
            if item.get_closest_marker('slow') and getattr(item, 'module', None)}
    items.sort(key=lambda item: getattr(item, 'module', None) is None
               or item.module.__name__ not in slow)


@pytest.fixture(scope='session')
def synthref_paths(tmp_path_factory):
    """dict of the paths written by ``make_synthref`` (see its docstring)."""
    from mmrefer.datasets.synthetic import SYNTHREF_SMALL_SIZES, make_synthref
    root = tmp_path_factory.mktemp('synthref')
    return make_synthref(str(root), num_images=SYNTHREF_SMALL_SIZES, seed=0)


@pytest.fixture(scope='session')
def synthref_root(synthref_paths):
    """Root folder (``pathlib.Path``) of the session's small SynthRef."""
    import pathlib
    return pathlib.Path(synthref_paths['root'])


@pytest.fixture(scope='session')
def synthref_beit3_spm(synthref_paths):
    """Path (str) of SynthRef's tiny BEiT-3/XLM-R sentencepiece model."""
    return synthref_paths['beit3_spm']


@pytest.fixture(scope='session')
def synthref_roberta_dir(synthref_paths):
    """Directory (str) of SynthRef's tiny RoBERTa BPE tokenizer (AutoTokenizer-loadable)."""
    return synthref_paths['roberta_dir']


@pytest.fixture(scope='module')
def one_torch_thread():
    """Tiny models on a shared 2-core CPU: one intra-op thread (oversubscribed threads are many
    times slower), restored afterwards. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

"""tools/train.py --compile: mmengine's Runner torch.compile-s ``model.train_step`` and training
runs through it (dynamo traces both models' training step, graph breaks included).

The config's ``compile=dict(backend='eager')`` is kept by ``--compile`` (a dict is not replaced
by True), so the test exercises dynamo's tracing of the whole step without inductor's C++ code
generation, which takes minutes on a small CPU; ``benchmark.py --train-step --compile`` times
the inductor backend (docs/benchmarks.md, "torch.compile").
"""
import sys

import pytest

from e2e_helpers import ROOT, run, short_config


@pytest.mark.slow
@pytest.mark.parametrize('method', ['latentvg', 'instalign'])
def test_train_py_compile_trains_through_the_compiled_step(method, synthref_root, tmp_path):
    cfg = short_config(method, synthref_root, str(tmp_path / 'cfg.py'), iters=2,
                       val_cfg=None, val_dataloader=None, val_evaluator=None,
                       compile=dict(backend='eager'))
    work_dir = tmp_path / 'work'
    out = run([sys.executable, 'tools/train.py', cfg, '--compile', '--work-dir', str(work_dir)],
              cwd=ROOT, timeout=900)
    assert 'Model has been "compiled"' in out
    assert 'Iter(train) [2/2]' in out
    assert (work_dir / 'iter_2.pth').is_file()

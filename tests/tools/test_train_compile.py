"""tools/train.py --compile: the Runner torch.compile-s the model's forward (default) or, with
``compile=dict(target='train_step')``, the whole ``model.train_step`` as mmengine does, and
training runs through it (dynamo traces both models, graph breaks included).

The config's ``compile`` dict is kept by ``--compile`` (a dict is not replaced by True); with
``backend='eager'`` the test exercises dynamo's tracing without inductor's C++ code generation,
which takes minutes on a small CPU; ``benchmark.py --train-step --compile`` times the inductor
backend (docs/benchmarks.md, "torch.compile"). Latent-VG's whole-step case is the one that needs
the plain-dict param groups (its ``paramwise_cfg`` groups are ``ConfigDict``).
"""
import sys

import pytest

from e2e_helpers import ROOT, run, short_config


@pytest.mark.slow
@pytest.mark.parametrize('method,target', [('latentvg', 'train_step'), ('instalign', None)])
def test_train_py_compile_trains_through_the_compiled_model(method, target, synthref_root,
                                                            tmp_path):
    compile_cfg = dict(backend='eager')
    if target:
        compile_cfg['target'] = target
    cfg = short_config(method, synthref_root, str(tmp_path / 'cfg.py'), iters=2,
                       val_cfg=None, val_dataloader=None, val_evaluator=None,
                       compile=compile_cfg)
    work_dir = tmp_path / 'work'
    out = run([sys.executable, 'tools/train.py', cfg, '--compile', '--work-dir', str(work_dir)],
              cwd=ROOT, timeout=900)
    assert f"torch.compile of the model's {target or 'forward'}" in out
    assert 'Iter(train) [2/2]' in out
    assert (work_dir / 'iter_2.pth').is_file()


def test_train_py_rejects_an_unknown_compile_target(synthref_root, tmp_path):
    cfg = short_config('instalign', synthref_root, str(tmp_path / 'cfg.py'), iters=1,
                       val_cfg=None, val_dataloader=None, val_evaluator=None,
                       compile=dict(backend='eager', target='loss'))
    with pytest.raises(AssertionError, match=r"compile.target must be one of .*got 'loss'"):
        run([sys.executable, 'tools/train.py', cfg, '--work-dir', str(tmp_path / 'w')],
            cwd=ROOT, timeout=900)

"""tools/test.py --show-dir on the tiny Latent-VG config: RefVisualizationHook writes pictures."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow
def test_tools_test_show_dir_writes_pictures(synthref_root, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import save_checkpoint

    from mmrefer.registry import MODELS
    from mmrefer.utils import register_all_modules
    register_all_modules()
    root = str(synthref_root)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'))
    cfg.model.tokenizer.spm_path = f'{root}/tokenizers/beit3.spm'
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'tiny.pth')
    save_checkpoint(dict(state_dict=MODELS.build(cfg.model).state_dict(), meta=dict(epoch=0)),
                    ckpt)
    work = str(tmp_path / 'work')
    opts = [f'model.tokenizer.spm_path={root}/tokenizers/beit3.spm',
            f'test_dataloader.dataset.data_root={root}/', 'test_dataloader.dataset.indices=6',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'test_dataloader.batch_size=2', 'default_hooks.visualization.type=RefVisualizationHook',
            'default_hooks.visualization.max_samples=4',
            'default_hooks.visualization.interval=1']
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'),
                           osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'),
                           ckpt, '--work-dir', work, '--show-dir', 'vis', '--cfg-options'] + opts,
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    stamps = [d for d in os.listdir(work) if osp.isdir(osp.join(work, d, 'vis'))]
    assert len(stamps) == 1
    files = sorted(os.listdir(osp.join(work, stamps[0], 'vis')))
    assert len(files) == 4 and all(f.endswith('.png') for f in files)  # max_samples
    img = cv2.imread(osp.join(work, stamps[0], 'vis', files[0]))
    assert img is not None and img.shape[1] > img.shape[0]  # GT | prediction side by side

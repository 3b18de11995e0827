"""demo/image_demo.py end to end in a subprocess (fake model via custom_imports)."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
APIS_TESTS = osp.join(ROOT, 'tests', 'apis')
sys.path.insert(0, APIS_TESTS)
from _fake_ref_model import write_fake_config  # noqa: E402


def run_demo(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, APIS_TESTS]),
               OMP_NUM_THREADS='1', MPLBACKEND='Agg')
    env.pop('DISPLAY', None)
    return subprocess.run([sys.executable, osp.join(ROOT, 'demo', 'image_demo.py')] + args,
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=300)


def test_demo_writes_png_per_sentence(tmp_path):
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:30, 20:50, 0] = 255
    img_path = str(tmp_path / 'scene.png')
    cv2.imwrite(img_path, img)
    cfg = write_fake_config(tmp_path)
    out_dir = str(tmp_path / 'out')
    proc = run_demo([img_path, 'the blue block|nothing there', cfg, '--out-dir', out_dir,
                     '--show-extras', '--device', 'cpu'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out_dir)) == ['scene_0.png', 'scene_1.png']
    assert "'the blue block': no_target=False" in proc.stdout
    assert "'nothing there': no_target=True" in proc.stdout
    # hand computation: nearest resize 48x64 -> 32x32 samples row floor(1.5 * y), column 2 * x;
    # the block (rows 10..29, cols 20..49) covers rows 7..19, cols 10..24 there, so the box at
    # 32x32 is [10, 7, 25, 20]; divided by the scale (0.5, 2/3): [20, 10.5, 50, 30]
    assert 'box=[20.0, 10.5, 50.0, 30.0]' in proc.stdout
    a = cv2.imread(osp.join(out_dir, 'scene_0.png'))
    b = cv2.imread(osp.join(out_dir, 'scene_1.png'))
    assert a is not None and b is not None
    # with extras the canvas is taller than title + one image panel
    assert a.shape[0] > 48 * 4 + 20 and a.shape[1] >= 64 * 4


def test_demo_reports_missing_image(tmp_path):
    cfg = write_fake_config(tmp_path)
    proc = run_demo([str(tmp_path / 'nope.jpg'), 'x', cfg, '--out-dir', str(tmp_path)],
                    tmp_path)
    assert proc.returncode != 0
    assert 'image file not found' in proc.stderr and 'nope.jpg' in proc.stderr

"""demo/image_demo.py end to end in a subprocess (fake model via custom_imports)."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

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


def test_demo_keeps_existing_pictures_and_checks_arguments_first(tmp_path):
    """A second run into the same folder is refused (exit 2) unless --overwrite; an empty
    sentence list and an --out-dir that is a file are refused before the model is built."""
    img_path = str(tmp_path / 'scene.png')
    cv2.imwrite(img_path, np.zeros((48, 64, 3), np.uint8))
    cfg = write_fake_config(tmp_path)
    out_dir = str(tmp_path / 'out')
    assert run_demo([img_path, 'a|b', cfg, '--out-dir', out_dir], tmp_path).returncode == 0
    before = open(osp.join(out_dir, 'scene_0.png'), 'rb').read()
    proc = run_demo([img_path, 'c', cfg, '--out-dir', out_dir], tmp_path)
    assert proc.returncode == 2 and 'scene_0.png exist(s); use --overwrite' in proc.stderr
    assert open(osp.join(out_dir, 'scene_0.png'), 'rb').read() == before
    proc = run_demo([img_path, 'c', cfg, '--out-dir', out_dir, '--overwrite'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (tmp_path / 'afile').write_text('x')
    for args, words in ((['  |  '], "holds no sentence"),
                        (['c', '--out-dir', str(tmp_path / 'afile')], 'is a file, not a folder')):
        proc = run_demo([img_path, args[0], cfg] + args[1:], tmp_path)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-2000:]
        assert 'Traceback' not in proc.stderr


REAL_PHOTO = osp.join(ROOT, '..', 'shared', 'realdata', 'refcoco_sentences', 'images',
                      'COCO_train2014_000000363252.jpg')  # 375 x 500, portrait
REAL_SENTENCES = ['tallest person', 'man in blue sleeveless', 'guy in blue shirt with sleeves',
                  'thumps up at the stop sign']  # its RefCOCO(+) val sentences


@pytest.mark.skipif(not osp.isfile(REAL_PHOTO), reason=f'real photo not found: {REAL_PHOTO}')
def test_demo_real_photo_one_png_per_sentence(synthref_root, tmp_path):
    """The tiny quick-start Latent-VG (random init) on a real COCO photo: one decodable PNG per
    `|`-separated sentence, one printed answer each, in order."""
    out_dir = str(tmp_path / 'out')
    spm = osp.join(synthref_root, 'tokenizers', 'beit3.spm')
    proc = run_demo([REAL_PHOTO, '|'.join(REAL_SENTENCES), 'latentvg_tiny_synthref',
                     '--out-dir', out_dir, '--cfg-options', f'model.tokenizer.spm_path={spm}'],
                    tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem = 'COCO_train2014_000000363252'
    assert sorted(os.listdir(out_dir)) == [f'{stem}_{k}.png' for k in range(4)]
    for k in range(4):
        png = cv2.imread(osp.join(out_dir, f'{stem}_{k}.png'))
        # title above the one prediction panel at the photo's own size (short side 375 >= the
        # visualizer's min_size 256: not enlarged)
        assert png is not None and png.shape[1] == 375 and png.shape[0] > 500
    answers = [line for line in proc.stdout.splitlines() if line.startswith('[')]
    assert [line.split(']', 1)[0] for line in answers] == [f'[{k}' for k in range(4)]
    for line, sentence in zip(answers, REAL_SENTENCES):
        assert f'{sentence!r}: no_target=' in line

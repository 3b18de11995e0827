"""RefVisualizationHook: interval, max count, test_out_dir files, val pictures to the backends."""
import os
import os.path as osp
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import PixelData

from mmrefer.registry import HOOKS
from mmrefer.visualization import RefLocalVisualizer, RefVisualizationHook


def write_images(folder, n):
    paths = []
    for i in range(n):
        img = np.full((24, 32, 3), 30 * i % 255, np.uint8)
        p = osp.join(folder, f'img{i}.png')
        cv2.imwrite(p, img)
        paths.append(p)
    return paths


def sample(path, sent_id):
    ds = DetDataSample(metainfo=dict(img_path=path, text=f'sentence {sent_id}', sent_id=sent_id,
                                     ori_shape=(24, 32), img_shape=(16, 16),
                                     scale_factor=(0.5, 16 / 24), letterbox=None,
                                     no_target=False))
    m = torch.zeros(16, 16, dtype=torch.bool)
    m[4:10, 4:12] = True
    ds.pred_mask, ds.pred_box, ds.pred_no_target, ds.pred_score = m, torch.tensor(
        [4., 4., 12., 10.]), False, 0.5
    ds.gt_merged_mask = PixelData(data=m[None].to(torch.uint8))
    return ds


def all_files(folder):
    return sorted(osp.join(r, f) for r, _, fs in os.walk(folder) for f in fs)


@pytest.fixture()
def visualizer(tmp_path):
    return RefLocalVisualizer.get_instance(
        f'hook_vis_{np.random.randint(1 << 30)}', vis_backends=[dict(type='LocalVisBackend')],
        save_dir=str(tmp_path / 'backend'), min_size=32)


def test_builds_from_registry():
    hook = HOOKS.build(dict(type='RefVisualizationHook', draw=True, interval=3))
    assert isinstance(hook, RefVisualizationHook) and hook.interval == 3
    with pytest.raises(ValueError, match='interval'):
        RefVisualizationHook(interval=0)


def test_test_out_dir_interval_and_max_samples(tmp_path, visualizer):
    paths = write_images(str(tmp_path), 4)
    hook = RefVisualizationHook(draw=True, interval=2, max_samples=3, test_out_dir='show')
    runner = SimpleNamespace(work_dir=str(tmp_path / 'work'), timestamp='20250101_000000',
                             iter=0)
    hook.before_test(runner)
    for batch_idx in range(4):  # batches 0 and 2 are drawn (2 samples each), capped at 3
        outputs = [sample(paths[batch_idx], 10 * batch_idx), sample(paths[batch_idx],
                                                                    10 * batch_idx + 1)]
        hook.after_test_iter(runner, batch_idx, {}, outputs)
    out_dir = osp.join(str(tmp_path / 'work'), '20250101_000000', 'show')
    assert sorted(os.listdir(out_dir)) == ['img0_0.png', 'img0_1.png', 'img2_20.png']
    png = cv2.imread(osp.join(out_dir, 'img2_20.png'))
    assert png is not None and png.shape[0] > 32 and png.shape[1] > 64  # title + GT | pred


def test_val_goes_to_backends_and_draw_false_is_silent(tmp_path, visualizer):
    paths = write_images(str(tmp_path), 3)
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='t', iter=100)
    quiet = RefVisualizationHook(draw=False)
    quiet.before_val(runner)
    quiet.after_val_iter(runner, 0, {}, [sample(paths[0], 0)])
    assert all_files(tmp_path / 'backend') == []

    hook = RefVisualizationHook(draw=True, interval=1, max_samples=2)
    hook.before_val(runner)
    for b in range(3):
        hook.after_val_iter(runner, b, {}, [sample(paths[b], b)])
    names = [osp.basename(f) for f in all_files(tmp_path / 'backend') if f.endswith('.png')]
    assert sorted(names) == ['val_ref_100.png', 'val_ref_101.png']


def test_val_pictures_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    RefLocalVisualizer.get_instance(
        f'hook_vis_tb_{np.random.randint(1 << 30)}',
        vis_backends=[dict(type='TensorboardVisBackend')], save_dir=str(tmp_path / 'tb'),
        min_size=32)
    paths = write_images(str(tmp_path), 1)
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='t', iter=5)
    hook = RefVisualizationHook(draw=True, interval=1)
    hook.before_val(runner)
    hook.after_val_iter(runner, 0, {}, [sample(paths[0], 0)])
    for backend in RefLocalVisualizer.get_current_instance()._vis_backends.values():
        backend.close()
    events = [f for f in all_files(tmp_path / 'tb') if 'tfevents' in osp.basename(f)]
    assert events
    acc = EventAccumulator(osp.dirname(events[0]))
    acc.Reload()
    assert 'val_ref' in acc.Tags()['images']
    (img, ) = acc.Images('val_ref')
    assert img.step == 5 and img.width > 64


def test_hook_draws_on_the_backends_of_a_plain_visualizer(tmp_path):
    """configs/_base_/default_runtime.py builds a plain mmengine Visualizer."""
    from mmengine.visualization import Visualizer
    Visualizer.get_instance(f'plain_{np.random.randint(1 << 30)}',
                            vis_backends=[dict(type='LocalVisBackend')],
                            save_dir=str(tmp_path / 'plain'))
    paths = write_images(str(tmp_path), 1)
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='t', iter=0)
    hook = RefVisualizationHook(draw=True, interval=1)
    hook.before_val(runner)
    hook.after_val_iter(runner, 0, {}, [sample(paths[0], 0)])
    assert isinstance(hook.visualizer, RefLocalVisualizer)
    names = [osp.basename(f) for f in all_files(tmp_path / 'plain')]
    assert 'val_ref_0.png' in names

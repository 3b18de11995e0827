"""RefVisualizationHook: draw a few val/test predictions next to their ground truth.

Config (``tools/test.py --show-dir DIR`` sets ``draw=True, test_out_dir=DIR``)::

    default_hooks = dict(visualization=dict(
        type='RefVisualizationHook', draw=True, interval=50, max_samples=20))
    visualizer = dict(type='RefLocalVisualizer', vis_backends=[
        dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])

During validation the first sample of every ``interval``-th batch goes to the visualizer's
backends (``val_ref`` image, step = iteration). During test the samples of every ``interval``-th
batch are drawn, to ``WORK_DIR/TIMESTAMP/TEST_OUT_DIR/<image>_<sent_id>.png`` when
``test_out_dir`` is set, else to the backends. At most ``max_samples`` pictures per val/test run.
"""
import os
import os.path as osp
import warnings
from typing import Optional, Sequence

from mmengine.fileio import get
from mmengine.hooks import Hook
from mmengine.visualization import Visualizer

from mmrefer.registry import HOOKS
from .ref_local_visualizer import RefLocalVisualizer


@HOOKS.register_module()
class RefVisualizationHook(Hook):
    """Args:
        draw (bool): draw at all. Defaults to False (the hook is then free).
        interval (int): draw every ``interval``-th batch.
        max_samples (int, optional): cap per val/test run; ``None`` = no cap.
        show (bool): open a window instead of writing (needs a display).
        wait_time (float): seconds to show each picture.
        show_extras (bool): add per-expression / per-instance panels.
        test_out_dir (str, optional): sub-folder of ``WORK_DIR/TIMESTAMP`` for test pictures.
        backend_args (dict, optional): file backend for reading images.
    """
    priority = 'NORMAL'

    def __init__(self,
                 draw: bool = False,
                 interval: int = 50,
                 max_samples: Optional[int] = 20,
                 show: bool = False,
                 wait_time: float = 0.,
                 show_extras: bool = True,
                 test_out_dir: Optional[str] = None,
                 backend_args: Optional[dict] = None,
                 **kwargs) -> None:
        if interval < 1:
            raise ValueError(f'RefVisualizationHook: interval must be >= 1, got {interval}')
        if kwargs:  # e.g. score_thr from an mmdet-style config: meaningless here
            warnings.warn(f'RefVisualizationHook ignores {sorted(kwargs)}')
        self.draw = draw
        self.interval = interval
        self.max_samples = max_samples
        self.show = show
        self.wait_time = wait_time
        self.show_extras = show_extras
        self.test_out_dir = test_out_dir
        self.backend_args = backend_args
        self._count = 0
        self._test_dir: Optional[str] = None

    @property
    def visualizer(self) -> RefLocalVisualizer:
        vis = Visualizer.get_current_instance()
        if isinstance(vis, RefLocalVisualizer):
            return vis
        # the config built another visualizer (e.g. DetLocalVisualizer): draw with ours, on the
        # same backends
        # (mmengine's Visualizer.get_instance makes it the current instance from then on)
        ref = RefLocalVisualizer.get_instance('ref_visualizer_for_hook')
        ref._vis_backends = getattr(vis, '_vis_backends', {})
        return ref

    def _load(self, path: str):
        import cv2
        import numpy as np
        if path is None:
            raise KeyError('RefVisualizationHook: data sample has no img_path')
        buf = np.frombuffer(get(path, backend_args=self.backend_args), np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f'RefVisualizationHook: cannot decode image {path!r}')
        return img[..., ::-1].copy()

    def _full(self) -> bool:
        return self.max_samples is not None and self._count >= self.max_samples

    def _draw(self, sample, name: str, step: int, out_file: Optional[str] = None) -> None:
        self.visualizer.add_datasample(
            name, self._load(sample.metainfo.get('img_path')), data_sample=sample,
            show=self.show, wait_time=self.wait_time, out_file=out_file, step=step,
            show_extras=self.show_extras)
        self._count += 1

    def before_val(self, runner) -> None:
        self._count = 0

    def before_test(self, runner) -> None:
        self._count = 0
        if self.draw and self.test_out_dir is not None:
            self._test_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
            os.makedirs(self._test_dir, exist_ok=True)

    def after_val_iter(self, runner, batch_idx: int, data_batch: dict,
                       outputs: Sequence) -> None:
        if not self.draw or self._full() or batch_idx % self.interval != 0 or not outputs:
            return
        self._draw(outputs[0], 'val_ref', step=runner.iter + batch_idx)

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence) -> None:
        if not self.draw or batch_idx % self.interval != 0:
            return
        for sample in outputs:
            if self._full():
                return
            out_file = None
            if self._test_dir is not None:
                stem = osp.splitext(osp.basename(str(sample.metainfo.get('img_path'))))[0]
                sid = sample.metainfo.get('sent_id', self._count)
                out_file = osp.join(self._test_dir, f'{stem}_{sid}.png')
            self._draw(sample, 'test_ref', step=self._count, out_file=out_file)

"""RefLocalVisualizer: ground truth next to prediction for one referring sentence.

Layout of :meth:`RefLocalVisualizer.draw_ref` (all panels at the original image size, images
smaller than ``min_size`` are enlarged by an integer factor so the text stays readable)::

    +---------------------------------------------+
    | "the sentence" (wrapped title)              |
    +----------------------+----------------------+
    | GT (mask + box)      | pred (mask + box)    |   "no target" written when empty
    +----------+-----------+----------+-----------+
    | extra 0  | extra 1   | extra 2  | ...       |   half-size panels (--show-extras)
    +----------+-----------+----------+-----------+

Extras panels are generic: every ``extras`` entry that is a float or bool array ``[K, H, W]``
(or ``[H, W]``) at the image size becomes K panels, heatmaps for floats and mask overlays for
bools, named ``<key>_<k>`` and labelled ``<key>[k]`` (at most ``max_extra_panels`` in all).
Known side information improves the labels without naming any map: ``inst_scores`` ``[K]``
orders the panels by score and labels them ``q<k> <score>`` (plus ``aligned_words[k]``);
``subject_index`` (and ``subject_word``) labels map 0 ``sentence | subject #i`` and the others
``latent k`` (Latent-VG's sentence map followed by its latent expressions).
Drawing uses mmengine's matplotlib (Agg) canvas, so no display is needed.
"""
import math
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.visualization import Visualizer

from mmrefer.registry import VISUALIZERS
from mmrefer.structures.geometry import (box_to_original, mask_to_original,
                                         prediction_to_original, to_numpy)
from .utils import write_png

Color = Tuple[int, int, int]


@VISUALIZERS.register_module()
class RefLocalVisualizer(Visualizer):
    """Visualizer for referring-expression predictions (RIS mask, REC box, GRES no-target).

    Args:
        name (str): instance name (mmengine ``ManagerMixin``).
        image (np.ndarray, optional): initial RGB image.
        vis_backends (list[dict], optional): e.g. ``[dict(type='LocalVisBackend'),
            dict(type='TensorboardVisBackend')]``.
        save_dir (str, optional): where backends write.
        pred_color, gt_color (tuple): RGB colours of the prediction / ground truth.
        alpha (float): mask opacity.
        line_width (int): box line width.
        min_size (int): images whose short side is smaller are enlarged (integer factor).
        max_extra_panels (int): at most this many extras panels.
    """

    def __init__(self,
                 name: str = 'visualizer',
                 image: Optional[np.ndarray] = None,
                 vis_backends: Optional[List[dict]] = None,
                 save_dir: Optional[str] = None,
                 pred_color: Color = (230, 40, 60),
                 gt_color: Color = (20, 180, 80),
                 alpha: float = 0.5,
                 line_width: int = 3,
                 min_size: int = 256,
                 max_extra_panels: int = 6) -> None:
        super().__init__(name=name, image=image, vis_backends=vis_backends, save_dir=save_dir)
        self.pred_color = tuple(pred_color)
        self.gt_color = tuple(gt_color)
        self.alpha = alpha
        self.line_width = line_width
        self.min_size = min_size
        self.max_extra_panels = max_extra_panels
        self.gap = 4
        #: name -> (x, y, w, h) of every panel in the last :meth:`draw_ref` canvas
        self.layout: Dict[str, Tuple[int, int, int, int]] = {}

    # ------------------------------------------------------------------ panels
    def _label(self, text: str, size: int, pos=(3, 3), color='white') -> None:
        self.draw_texts(text, np.array([pos]), colors=color, font_sizes=size,
                        vertical_alignments='top',
                        bboxes=dict(facecolor='black', alpha=0.6, pad=1, edgecolor='none'))

    def _font(self, w: int, h: int) -> int:
        return int(max(9, min(w, h) // 22))

    def _panel(self, image: np.ndarray, mask: Optional[np.ndarray], box: Optional[np.ndarray],
               color: Color, label: str, no_target: bool = False) -> np.ndarray:
        """Image with one binary mask, one box and a label drawn on it."""
        h, w = image.shape[:2]
        self.set_image(image)
        if mask is not None and mask.any():
            self.draw_binary_masks(mask.astype(bool), colors=[color], alphas=self.alpha)
        if box is not None and not no_target:
            box = np.asarray(box, np.float32).reshape(-1, 4)
            if (box[:, 2:] > box[:, :2]).all():
                self.draw_bboxes(box, edge_colors=[color], line_widths=self.line_width)
        fs = self._font(w, h)
        self._label(label, fs)
        if no_target:
            self.draw_texts('no target', np.array([[w / 2, h / 2]]), colors=[color],
                            font_sizes=int(fs * 1.6), horizontal_alignments='center',
                            vertical_alignments='center',
                            bboxes=dict(facecolor='white', alpha=0.8, pad=3, edgecolor='none'))
        return self.get_image()

    def _heat_panel(self, image: np.ndarray, heat: np.ndarray, label: str) -> np.ndarray:
        """Image blended with a jet-coloured map (``[0, 1]``, else min-max normalised)."""
        import matplotlib
        heat = heat.astype(np.float32)
        if heat.min() < 0 or heat.max() > 1:
            heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-6)
        rgb = (matplotlib.colormaps['jet'](heat)[..., :3] * 255).astype(np.float32)
        blend = (0.5 * image.astype(np.float32) + 0.5 * rgb).astype(np.uint8)
        self.set_image(blend)
        self._label(label, self._font(*image.shape[1::-1]))
        return self.get_image()

    @staticmethod
    def extra_maps(extras: dict, hw: Tuple[int, int]) -> Dict[str, np.ndarray]:
        """The entries of ``extras`` that are float/bool maps ``[K, h, w]`` (or ``[h, w]``, seen
        as ``K = 1``) at ``hw = (h, w)``, in their order."""
        out = {}
        for key, value in extras.items():
            value = to_numpy(value)
            if not isinstance(value, np.ndarray) or value.ndim not in (2, 3) or \
                    tuple(value.shape[-2:]) != tuple(hw):
                continue
            if value.dtype != bool and not np.issubdtype(value.dtype, np.floating):
                continue
            out[key] = value[None] if value.ndim == 2 else value
        return out

    def _extras_panels(self, image: np.ndarray, extras: dict) -> List[Tuple[str, np.ndarray]]:
        """Panels of every map in ``extras`` (see the module docstring), maps at the size of
        ``image``; at most ``max_extra_panels``."""
        out = []
        scores = extras.get('inst_scores')
        scores = None if scores is None else np.asarray(to_numpy(scores), np.float32).reshape(-1)
        words = extras.get('aligned_words')
        subj = extras.get('subject_index')
        for key, maps in self.extra_maps(extras, image.shape[:2]).items():
            k_maps = len(maps)
            ranked = scores is not None and len(scores) == k_maps
            order = np.argsort(-scores, kind='stable') if ranked else range(k_maps)
            for q in order:
                if len(out) >= self.max_extra_panels:
                    return out
                q = int(q)
                if ranked:
                    wq = words[q] if words is not None and q < len(words) else []
                    label = f'q{q} {scores[q]:.2f}' + (f' {" ".join(map(str, wq))}' if wq else '')
                elif subj is not None:
                    label = 'sentence' if q == 0 else f'latent {q}'
                    if q == 0:
                        word = extras.get('subject_word')
                        label += f' | subject #{int(subj)}' + (f' "{word}"' if word else '')
                else:
                    label = f'{key}[{q}]'
                m = maps[q]
                panel = (self._panel(image, m, None, self.pred_color, label) if m.dtype == bool
                         else self._heat_panel(image, m, label))
                out.append((f'{key}_{q}', panel))
        return out

    # ------------------------------------------------------------------ canvas
    def _title(self, text: str, width: int, font: int) -> np.ndarray:
        chars = max(10, int(width / (font * 0.62)))
        lines = textwrap.wrap(text, chars) or ['']
        line_h = int(font * 1.7)
        canvas = np.full((line_h * len(lines) + 8, width, 3), 255, np.uint8)
        self.set_image(canvas)
        pos = np.array([[6, 4 + k * line_h] for k in range(len(lines))])
        self.draw_texts(lines, pos, colors='black', font_sizes=font, vertical_alignments='top')
        return self.get_image()

    def draw_ref(self,
                 image: np.ndarray,
                 text: str,
                 pred: Optional[dict] = None,
                 gt: Optional[dict] = None,
                 show_extras: bool = True) -> np.ndarray:
        """Draw one sentence's answer; everything at the image's own size.

        Args:
            image (np.ndarray): RGB uint8 ``[H, W, 3]``.
            text (str): the sentence (title).
            pred (dict, optional): ``mask`` bool ``[H, W]``, ``box`` ``[4]`` xyxy, ``no_target``,
                ``score``, ``extras`` (see module docstring; maps at ``[H, W]``).
            gt (dict, optional): ``mask``, ``box``, ``no_target``.
            show_extras (bool): add the extras panels.

        Returns:
            np.ndarray: the RGB canvas; :attr:`layout` gives each panel's ``(x, y, w, h)``.
        """
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'image must be [H, W, 3] RGB, got shape {image.shape}')
        h0, w0 = image.shape[:2]
        f = max(1, math.ceil(self.min_size / max(1, min(h0, w0))))

        def up_mask(m):
            if m is None:
                return None
            m = np.asarray(to_numpy(m))
            if m.shape[-2:] != (h0, w0):
                raise ValueError(f'mask shape {m.shape} does not match image {(h0, w0)}')
            return np.repeat(np.repeat(m, f, axis=-2), f, axis=-1) if f > 1 else m

        img = np.repeat(np.repeat(image, f, axis=0), f, axis=1) if f > 1 else image
        h, w = img.shape[:2]
        main: List[Tuple[str, np.ndarray]] = []
        if gt is not None:
            box = gt.get('box')
            box = None if box is None else np.asarray(to_numpy(box), np.float32) * f
            main.append(('gt', self._panel(img, up_mask(gt.get('mask')), box, self.gt_color,
                                           'ground truth', bool(gt.get('no_target', False)))))
        extras_panels = []
        if pred is not None:
            box = pred.get('box')
            box = None if box is None else np.asarray(to_numpy(box), np.float32) * f
            score = pred.get('score')
            label = 'prediction' + (f' {float(score):.2f}' if score is not None else '')
            main.append(('pred', self._panel(img, up_mask(pred.get('mask')), box,
                                             self.pred_color, label,
                                             bool(pred.get('no_target', False)))))
            extras = pred.get('extras') or {}
            if show_extras and extras:
                half = (max(1, w // 2), max(1, h // 2))
                small = cv2.resize(img, half, interpolation=cv2.INTER_AREA)
                ex = dict(extras)
                for key, maps in self.extra_maps(extras, (h0, w0)).items():
                    is_bool = maps.dtype == bool
                    ex[key] = np.zeros((len(maps), half[1], half[0]), maps.dtype)
                    for k, m in enumerate(up_mask(maps)):  # enlarged like the image, then halved
                        ex[key][k] = cv2.resize(
                            m.astype(np.uint8 if is_bool else np.float32), half,
                            interpolation=cv2.INTER_NEAREST if is_bool else cv2.INTER_LINEAR)
                extras_panels = self._extras_panels(small, ex)
        if not main:
            main.append(('image', img))

        g = self.gap
        ncols = min(len(extras_panels), max(3, 2 * len(main)))
        width = max(len(main) * w + (len(main) - 1) * g, ncols * (w // 2 + g) - g)
        title = self._title(text, width, self._font(w, h))
        rows_h = title.shape[0] + h
        nrows = math.ceil(len(extras_panels) / ncols) if extras_panels else 0
        height = rows_h + nrows * (h // 2 + g) + (g if nrows else 0)
        canvas = np.full((height, width, 3), 255, np.uint8)
        self.layout = {}

        def paste(name, x, y, panel):
            ph, pw = panel.shape[:2]
            canvas[y:y + ph, x:x + pw] = panel
            self.layout[name] = (x, y, pw, ph)

        paste('title', 0, 0, title)
        for k, (name, panel) in enumerate(main):
            paste(name, k * (w + g), title.shape[0], panel)
        for k, (name, panel) in enumerate(extras_panels):
            r, c = divmod(k, ncols)
            paste(name, c * (w // 2 + g), rows_h + g + r * (h // 2 + g), panel)
        self.set_image(canvas)
        return canvas

    # ------------------------------------------------------------------ data samples
    @staticmethod
    def sample_to_dicts(data_sample, ori_shape: Sequence[int]) -> Tuple[Optional[dict],
                                                                        Optional[dict]]:
        """Read a predicted/annotated ``DetDataSample`` and map it to ``ori_shape``.

        The prediction goes through :func:`mmrefer.structures.prediction_to_original` (the
        inferencer's post-processing); a GT at the input size through
        :func:`mmrefer.structures.mask_to_original` / ``box_to_original``.

        Args:
            data_sample (DetDataSample): metainfo ``img_shape``, ``scale_factor``,
                ``letterbox`` and ``ori_shape`` (taken from ``ori_shape`` when absent).
            ori_shape (Sequence[int]): ``(h0, w0)`` of the image it is drawn on.

        Returns:
            ``(pred, gt)`` dicts for :meth:`draw_ref` (``None`` where absent).
        """
        h0, w0 = int(ori_shape[0]), int(ori_shape[1])
        meta = data_sample.metainfo
        if meta.get('ori_shape') is None:
            data_sample = data_sample.clone()
            data_sample.set_metainfo(dict(ori_shape=(h0, w0)))
            meta = data_sample.metainfo
        elif tuple(meta['ori_shape'][:2]) != (h0, w0):
            raise ValueError(f'RefLocalVisualizer: the image is {(h0, w0)} but the sample '
                             f"({meta.get('img_path')}) has ori_shape {tuple(meta['ori_shape'])}")

        pred = None
        if any(k in data_sample for k in ('pred_mask', 'pred_prob', 'pred_box')):
            pred = prediction_to_original(data_sample)
        gt = None
        if 'ori_gt_merged_mask' in data_sample:
            gt = dict(mask=to_numpy(data_sample.ori_gt_merged_mask.data)[0].astype(bool))
        elif 'gt_merged_mask' in data_sample:
            gt = dict(mask=to_numpy(mask_to_original(
                torch.as_tensor(data_sample.gt_merged_mask.data)[0].bool(), meta)))
        if gt is not None:
            no_target = bool(meta.get('no_target', False))
            gt['no_target'] = no_target
            if not no_target:
                if 'ori_gt_ref_bbox' in data_sample:
                    gt['box'] = np.asarray(to_numpy(data_sample.ori_gt_ref_bbox), np.float32)
                elif 'gt_ref_bbox' in data_sample:
                    gt['box'] = to_numpy(box_to_original(data_sample.gt_ref_bbox, meta))
        return pred, gt

    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample=None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       step: int = 0,
                       show_extras: bool = True,
                       **kwargs) -> np.ndarray:
        """Draw a ``DetDataSample`` (prediction at ``img_shape``) on its original RGB image.

        Writes ``out_file`` when given, shows when ``show``, else sends the picture to every
        backend (``LocalVisBackend`` files, TensorBoard, ...) under ``name`` and ``step``.
        """
        pred, gt = (None, None)
        text = ''
        if data_sample is not None:
            pred, gt = self.sample_to_dicts(data_sample, image.shape[:2])
            text = str(data_sample.metainfo.get('text', ''))
        drawn = self.draw_ref(image, text, pred if draw_pred else None, gt if draw_gt else None,
                              show_extras=show_extras)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            write_png(drawn, out_file)
        elif not show:
            self.add_image(name, drawn, step)
        return drawn

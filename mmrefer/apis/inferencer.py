"""RefInferencer: image + sentences -> mask, box, no-target flag, score and method extras.

    >>> from mmrefer.apis import RefInferencer
    >>> inferencer = RefInferencer('latentvg_tiny_synthref', weights=None, device='cpu')
    >>> results = inferencer('demo.jpg', ['the red cup', 'the man on the left'])
    >>> results[0]['mask'].shape    # (H0, W0) bool, the image's own size

Images are file paths (read in BGR by OpenCV) or ``H x W x 3`` uint8 arrays; arrays are **BGR**
(OpenCV / ``mmcv.imread`` order) unless ``channel_order='rgb'`` is passed to ``__call__``. The
test pipeline is the config's ``test_dataloader`` pipeline with the annotation-loading steps
removed and the file loader replaced by ``mmdet.LoadImageFromNDArray``; each sentence becomes one
sample, and the sentences of an image are run through ``model.test_step`` in batches.
"""
import glob
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.dataset import Compose, pseudo_collate
from mmengine.runner import load_checkpoint

from mmrefer.structures.geometry import prediction_to_original

ANNOTATION_LOADERS = ('LoadRefAnnotations', 'LoadAnnotations')
IMAGE_LOADERS = ('LoadImageFromFile', 'LoadRefImageFromFile', 'LoadImageFromNDArray')
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def config_search_roots() -> List[str]:
    """Folders searched for a config given by name: the repo's ``configs/`` and the installed
    package's ``mmrefer/.mim/configs``."""
    import mmrefer
    pkg = osp.dirname(osp.abspath(mmrefer.__file__))
    roots = [osp.join(REPO_ROOT, 'configs'), osp.join(pkg, '.mim', 'configs')]
    return [r for r in dict.fromkeys(roots) if osp.isdir(r)]


def resolve_config(model: Union[str, Config, dict]) -> Config:
    """A config path, a config basename (``'latentvg_tiny_synthref'``) or a Config -> Config."""
    if isinstance(model, Config):
        return model
    if isinstance(model, dict):
        return Config(model)
    if not isinstance(model, str) or not model:
        raise TypeError(f'model must be a config path, a config name or a Config, got {model!r}')
    if osp.isfile(model):
        return Config.fromfile(model)
    name = osp.basename(model)
    name = name[:-3] if name.endswith('.py') else name
    roots = config_search_roots()
    hits = sorted({osp.realpath(p) for r in roots
                   for p in glob.glob(osp.join(r, '**', f'{name}.py'), recursive=True)})
    if not hits:
        raise FileNotFoundError(f'config {model!r} is neither an existing file nor a config name '
                                f'found under {roots}')
    if len({osp.basename(h) for h in hits}) == 1 and len(hits) > 1:
        # the repo copy and the installed .mim copy: prefer the repo
        hits = [h for h in hits if h.startswith(osp.realpath(REPO_ROOT))] or hits
    return Config.fromfile(hits[0])


def _type_name(t: Any) -> str:
    name = t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return name.split('.')[-1]


def _find_pipeline(cfg: Config) -> list:
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    dataset = loader.get('dataset') if loader else None
    while dataset is not None and 'pipeline' not in dataset:
        inner = dataset.get('dataset') or (dataset.get('datasets') or [None])[0]
        dataset = inner
    if dataset is None:
        pipeline = cfg.get('test_pipeline')
        if pipeline is None:
            raise KeyError('config has no test_dataloader.dataset.pipeline nor test_pipeline: '
                           'cannot build the inference pipeline')
        return list(pipeline)
    return list(dataset['pipeline'])


def build_inference_pipeline(cfg: Config) -> list:
    """The config's test pipeline without annotation loading, reading ``results['img']``."""
    steps = []
    for step in _find_pipeline(cfg):
        step = ConfigDict(step)
        name = _type_name(step['type'])
        if name in ANNOTATION_LOADERS:
            continue
        if name in IMAGE_LOADERS:
            step = ConfigDict(type='mmdet.LoadImageFromNDArray')
        if name == 'PackRefInputs' and step.get('keep_ori_gt'):
            step.keep_ori_gt = False  # no ground truth at inference
        steps.append(step)
    if not any(_type_name(s['type']) == 'LoadImageFromNDArray' for s in steps):
        steps.insert(0, ConfigDict(type='mmdet.LoadImageFromNDArray'))
    return steps


class RefInferencer:
    """Referring-expression inference on single images.

    Args:
        model (str | Config): config file, or a config basename under ``configs/``
            (e.g. ``'latentvg_tiny_synthref'``).
        weights (str, optional): checkpoint path, loaded with mmengine ``load_checkpoint``
            (weights-only safe through mmrefer's checkpoint shim). ``None`` = random init.
        device (str): ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        batch_size (int): sentences per forward pass.
        cfg_options (dict, optional): overrides merged into the config.
    """

    def __init__(self,
                 model: Union[str, Config],
                 weights: Optional[str] = None,
                 device: str = 'cpu',
                 batch_size: int = 8,
                 cfg_options: Optional[dict] = None) -> None:
        from mmrefer.registry import MODELS
        from mmrefer.utils import register_all_modules
        register_all_modules(init_default_scope=True)
        cfg = resolve_config(model)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        if 'model' not in cfg:
            raise KeyError(f'config {getattr(cfg, "filename", model)!r} has no "model" field')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.cfg = cfg
        self.batch_size = batch_size
        self.model = MODELS.build(cfg.model)
        if weights is not None:
            if not osp.isfile(weights):
                raise FileNotFoundError(f'checkpoint file not found: {weights}')
            load_checkpoint(self.model, weights, map_location='cpu', strict=False)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.pipeline = Compose(build_inference_pipeline(cfg))

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def load_image(image: Union[str, np.ndarray], channel_order: str = 'bgr') -> np.ndarray:
        """Path or array -> contiguous BGR uint8 ``[H, W, 3]`` (clear errors on bad input)."""
        import cv2
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        if isinstance(image, str):
            if not osp.isfile(image):
                raise FileNotFoundError(f'image file not found: {image}')
            img = cv2.imread(image, cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f'cannot decode image file {image!r}')
            return img
        if not isinstance(image, np.ndarray):
            raise TypeError(f'image must be a file path or an HxWx3 numpy array, '
                            f'got {type(image).__name__}')
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise ValueError(f'image array must be HxWx3, got shape {image.shape}')
        if image.dtype != np.uint8:
            raise ValueError(f'image array must be uint8, got dtype {image.dtype}')
        img = image[..., ::-1] if channel_order == 'rgb' else image
        return np.ascontiguousarray(img)

    @staticmethod
    def _sentences(sentences: Union[str, Sequence[str]]) -> List[str]:
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences) if sentences is not None else []
        if not sentences:
            raise ValueError('sentences is empty: give one sentence or a list of sentences')
        for i, s in enumerate(sentences):
            if not isinstance(s, str) or not s.strip():
                raise ValueError(f'sentence {i} must be a non-empty string, got {s!r}')
        return sentences

    def _sample(self, img: np.ndarray, text: str, i: int, img_path: Optional[str]) -> dict:
        h, w = img.shape[:2]
        results = dict(img=img.copy(), img_path=img_path, img_id=0, ref_id=i, sent_id=i,
                       text=text, no_target=False, source='inference', height=h, width=w,
                       instances=[], ref_bbox=None)
        out = self.pipeline(results)
        if out is None:
            raise RuntimeError(f'the test pipeline dropped the sample for sentence {text!r}')
        if img_path is not None:  # LoadImageFromNDArray cleared it
            out['data_samples'].set_metainfo(dict(img_path=img_path))
        return out

    # ------------------------------------------------------------------ outputs
    @staticmethod
    def postprocess(sample) -> Dict[str, Any]:
        """A predicted ``DetDataSample`` -> answer dict at the original image size.

        :func:`mmrefer.structures.prediction_to_original`: the mask from ``pred_prob``
        (bilinear to the image size, then ``> pred_mask_thr``; ``pred_mask`` for models without
        it), cleared when ``pred_no_target``; the box mapped exactly; extras maps bilinear.
        """
        for key in ('pred_mask', 'pred_box'):
            if key not in sample:
                raise KeyError(f'the model did not fill {key!r} (see docs/contracts.md section 3)')
        return prediction_to_original(sample)

    @torch.no_grad()
    def __call__(self,
                 image: Union[str, np.ndarray],
                 sentences: Union[str, Sequence[str]],
                 channel_order: str = 'bgr') -> List[Dict[str, Any]]:
        """Ground every sentence in the image.

        Args:
            image: file path, or uint8 ``H x W x 3`` array in ``channel_order``.
            sentences: one sentence or a list of them.
            channel_order (str): ``'bgr'`` (default, OpenCV) or ``'rgb'`` for array input.

        Returns:
            list[dict]: per sentence ``text``, ``mask`` (bool ``[H, W]`` at the image's size),
            ``box`` (``[x1, y1, x2, y2]`` at the image's size), ``no_target`` (bool), ``score``
            (float or None) and ``extras`` (numpy; maps mapped to the image's size).
        """
        sentences = self._sentences(sentences)
        img = self.load_image(image, channel_order)
        img_path = image if isinstance(image, str) else None
        answers = []
        for start in range(0, len(sentences), self.batch_size):
            chunk = sentences[start:start + self.batch_size]
            data = pseudo_collate([self._sample(img, s, start + i, img_path)
                                   for i, s in enumerate(chunk)])
            for sample in self.model.test_step(data):
                answers.append(self.postprocess(sample))
        return answers

"""RefInferencer: image + sentences -> mask, box, no-target flag, score and method extras.

    >>> from mmrefer.apis import RefInferencer
    >>> inferencer = RefInferencer('latentvg_tiny_synthref', weights=None, device='cpu')
    >>> results = inferencer('demo.jpg', ['the red cup', 'the man on the left'])
    >>> results[0]['mask'].shape    # (H0, W0) bool, the image's own size
    >>> answers = inferencer.predict_pairs([('a.jpg', 'the red cup'), ('b.jpg', 'the dog')])

:class:`RefInferencer` is an mmengine :class:`~mmengine.infer.BaseInferencer` (as mmdet's
``DetInferencer``): the config is found by :func:`resolve_config`, and ``BaseInferencer``'s
constructor builds the model, loads the weights, the pipeline and the collate function through
the hooks ``_init_model`` / ``_load_weights_to_model`` / ``_init_pipeline`` / ``_init_collate``;
one call runs ``preprocess`` (pipeline + collate, in batches of ``batch_size`` samples) ->
``forward`` (``model.test_step``) -> ``postprocess``
(:func:`mmrefer.structures.prediction_to_original`).
It draws nothing: ``visualize`` returns ``None`` and no visualizer is built (pictures are
drawn by ``mmrefer.visualization.RefLocalVisualizer.draw_ref`` on the answers, as
``demo/image_demo.py`` and ``tools/inference.py --show`` do).

Images are file paths (read in BGR by OpenCV) or ``H x W x 3`` uint8 arrays; arrays are **BGR**
(OpenCV / ``mmcv.imread`` order) unless ``channel_order='rgb'`` is passed. The test pipeline is
the config's ``test_dataloader`` pipeline with the annotation-loading steps removed and the file
loader replaced by ``mmdet.LoadImageFromNDArray``; each (image, sentence) pair becomes one
sample, and samples are run through ``model.test_step`` in batches of ``batch_size``, across
images for :meth:`RefInferencer.predict_pairs`.
"""
import copy
import glob
import os.path as osp
import re
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.dataset import Compose, pseudo_collate
from mmengine.infer import BaseInferencer
from mmengine.registry import FUNCTIONS, DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from mmrefer.structures.geometry import prediction_to_original
from mmrefer.utils.checkpoint import safe_torch_load
from mmrefer.utils.checkpoint_report import checkpoint_report

ImageType = Union[str, np.ndarray]
PairType = Tuple[ImageType, str]

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


class RefInferencer(BaseInferencer):
    """Referring-expression inference on mmengine's :class:`~mmengine.infer.BaseInferencer`.

    ``inferencer(image, sentences)`` grounds the sentences of one image;
    :meth:`predict_pairs` / :meth:`iter_pairs` ground any sequence of ``(image, sentence)``
    pairs, batching model calls across images. Every answer is at the image's own size.

    Args:
        model (str | Config | dict): config file, or a config basename under ``configs/``
            (e.g. ``'latentvg_tiny_synthref'``, see :func:`resolve_config`).
        weights (str, optional): checkpoint path, read with ``weights_only=True``
            (:func:`mmrefer.utils.safe_torch_load`) and loaded non-strictly; keys that do not
            fit are reported by module. ``None`` = random initialisation (a warning says so).
        device (str): ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        batch_size (int): samples (sentences) per forward pass.
        cfg_options (dict, optional): overrides merged into the config (a copy of it).
        show_progress (bool): a progress bar in :meth:`predict_pairs`. Defaults to False.
    """

    preprocess_kwargs: set = {'channel_order'}
    forward_kwargs: set = set()
    visualize_kwargs: set = set()
    postprocess_kwargs: set = {'return_datasamples'}

    def __init__(self,
                 model: Union[str, Config, dict],
                 weights: Optional[str] = None,
                 device: str = 'cpu',
                 batch_size: int = 8,
                 cfg_options: Optional[dict] = None,
                 show_progress: bool = False) -> None:
        from mmrefer.utils import register_all_modules
        register_all_modules(init_default_scope=True)
        cfg = copy.deepcopy(resolve_config(model))
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        if 'model' not in cfg:
            raise KeyError(f'config {getattr(cfg, "filename", model)!r} has no "model" field')
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
        if weights is not None and not osp.isfile(osp.expanduser(str(weights))):
            raise FileNotFoundError(f'checkpoint file not found: {weights}')
        self.batch_size = batch_size
        self.device = torch.device(device)
        # BaseInferencer looks names up in mmengine's root registries (collate_fn): make
        # mmrefer the scope they resolve in, whatever default scope the caller created last
        with DefaultScope.overwrite_default_scope('mmrefer'):
            super().__init__(model=cfg, weights=weights, device=str(self.device),
                             scope='mmrefer', show_progress=show_progress)

    # ------------------------------------------------------------------ BaseInferencer hooks
    def _init_model(self, cfg: ConfigDict, weights: Optional[str],
                    device: str = 'cpu') -> torch.nn.Module:
        """Build ``cfg.model`` with mmrefer's ``MODELS``, load ``weights``
        (:meth:`_load_weights_to_model`), move it to ``device``, eval mode.

        As ``BaseInferencer._init_model``, except that ``model.pretrained`` is kept: building
        loads nothing (``init_weights`` is not called), but a caller may call
        ``inferencer.model.init_weights()`` to load the config's pretrained files
        (``tools/analysis_tools/paper_size_check.py`` does).
        """
        from mmrefer.registry import MODELS
        checkpoint = None
        if weights is not None:
            if not osp.isfile(weights):
                raise FileNotFoundError(f'checkpoint file not found: {weights}')
            checkpoint = safe_torch_load(weights, map_location='cpu')
            self._weights_path = weights
        model = MODELS.build(cfg.model)
        model.cfg = cfg
        self._load_weights_to_model(model, checkpoint, cfg)
        model.to(device)
        model.eval()
        return model

    def _load_weights_to_model(self, model: torch.nn.Module, checkpoint: Optional[dict],
                               cfg: Optional[ConfigDict]) -> None:
        """Load ``checkpoint['state_dict']`` (or the checkpoint itself) non-strictly
        (``module.`` prefixes stripped); keep ``meta['dataset_meta']`` as
        ``model.dataset_meta`` when the checkpoint has it."""
        if checkpoint is None:
            warnings.warn('RefInferencer: no weights given, the model is randomly initialised')
            return
        report = checkpoint_report(
            model, {re.sub(r'^module\.', '', k): v
                    for k, v in checkpoint.get('state_dict', checkpoint).items()},
            source='the checkpoint')
        if report:
            warnings.warn(report.format())
        report.check_loaded(f'RefInferencer weights {self._weights_path}'
                            if getattr(self, '_weights_path', None) else 'RefInferencer weights')
        _load_checkpoint_to_model(model, checkpoint)
        meta = checkpoint.get('meta') or {}
        if isinstance(meta, dict) and isinstance(meta.get('dataset_meta'), dict):
            model.dataset_meta = dict(meta['dataset_meta'])

    def _init_pipeline(self, cfg: ConfigDict) -> Compose:
        """:func:`build_inference_pipeline`: the test pipeline reading ``results['img']``."""
        return Compose(build_inference_pipeline(cfg))

    def _init_collate(self, cfg: ConfigDict):
        """The ``test_dataloader.collate_fn`` of the config (a name or ``dict(type=name)``
        looked up in mmengine's ``FUNCTIONS``, as the Runner's dataloader does),
        :func:`~mmengine.dataset.pseudo_collate` when it names none."""
        loader = cfg.get('test_dataloader') or {}
        spec = loader.get('collate_fn') if isinstance(loader, dict) else None
        if spec is None:
            return pseudo_collate
        if callable(spec):
            return spec
        name = spec.get('type') if isinstance(spec, dict) else spec
        # mmrefer has no FUNCTIONS registry of its own: mmengine's (``'mmdet.x'`` for mmdet's)
        fn = FUNCTIONS.get(name) if isinstance(name, str) else None
        if fn is None:
            raise KeyError(f'test_dataloader.collate_fn {spec!r} is not a registered function')
        return fn

    def _init_visualizer(self, cfg: ConfigDict) -> None:
        """No visualizer: ``mmrefer.apis`` does not draw (see the module docstring)."""
        return None

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def load_image(image: ImageType, channel_order: str = 'bgr') -> np.ndarray:
        """Path or array -> contiguous BGR uint8 ``[H, W, 3]`` (clear errors on bad input).

        Raises:
            FileNotFoundError: the path does not exist (the message names it).
            ValueError: undecodable file, array not ``H x W x 3`` uint8, bad ``channel_order``.
            TypeError: neither a path nor an array.
        """
        import cv2
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        if isinstance(image, str):
            if not osp.isfile(image):
                raise FileNotFoundError(f'image file not found: {image}')
            # decoded from the bytes as the datasets' loader (mmcv) does: a truncated JPEG is
            # refused there, where cv2.imread would fill its missing part with grey
            data = np.fromfile(image, np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            if img is None:
                raise ValueError(f'cannot decode image file {image!r} (truncated, corrupt or '
                                 'not an image)')
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
        """One (BGR image, sentence) -> the test pipeline's ``dict(inputs, data_samples)``."""
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

    def _loaded_pairs(self, pairs: Iterable[PairType],
                      channel_order: str) -> Iterator[Tuple[np.ndarray, str, Optional[str]]]:
        """``(image, sentence)`` pairs -> ``(BGR array, sentence, img_path or None)``, lazily;
        an image repeated in consecutive pairs (same path, same array object) is read once."""
        last, last_img = None, None
        for k, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f'pair {k} must be an (image, sentence) pair, got {pair!r:.80}')
            image, sentence = pair
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(f'pair {k}: the sentence must be a non-empty string, got '
                                 f'{sentence!r}')
            same = (image == last) if isinstance(image, str) and isinstance(last, str) \
                else image is last
            if not same or last_img is None:
                try:
                    last_img = self.load_image(image, channel_order)
                except (FileNotFoundError, ValueError, TypeError) as e:
                    raise type(e)(f'pair {k}: {e}') from e
                last = image
            yield last_img, sentence, image if isinstance(image, str) else None

    def preprocess(self, inputs: Iterable[PairType], batch_size: int = 1,
                   channel_order: str = 'bgr') -> Iterator[dict]:
        """``(image, sentence)`` pairs -> collated batches of at most ``batch_size`` samples
        (a generator: images are read and packed one batch ahead, never all at once).

        Each pair goes through :meth:`load_image` and the test pipeline (``ref_id = sent_id =``
        the pair's index); batches are collated with the config's ``collate_fn``
        (:func:`~mmengine.dataset.pseudo_collate` by default).
        """
        loaded = self._loaded_pairs(inputs, channel_order)
        samples = (self._sample(img, text, k, path) for k, (img, text, path) in enumerate(loaded))
        for chunk in self._get_chunk_data(samples, batch_size):
            yield self.collate_fn(chunk)

    @torch.no_grad()
    def forward(self, inputs: dict, **kwargs) -> list:
        """One collated batch -> predicted ``DetDataSample`` list (``model.test_step``)."""
        return self.model.test_step(inputs)

    def visualize(self, inputs: list, preds: Any, **kwargs) -> None:
        """``mmrefer.apis`` draws nothing (returns ``None``): draw the answers with
        ``mmrefer.visualization.RefLocalVisualizer.draw_ref``."""
        return None

    # ------------------------------------------------------------------ outputs
    @staticmethod
    def postprocess(preds, visualization: Any = None,
                    return_datasamples: bool = False) -> Union[Dict[str, Any], List[Any]]:
        """Predicted ``DetDataSample`` (or a list of them) -> answer dict(s) at the image size.

        :func:`mmrefer.structures.prediction_to_original`: the mask from ``pred_prob``
        (bilinear to the image size, then ``> pred_mask_thr``; ``pred_mask`` for models without
        it), cleared when ``pred_no_target``; the box mapped exactly; extras maps bilinear.

        Args:
            preds (DetDataSample | list[DetDataSample]): one sample -> one dict; a list -> a
                list of dicts (BaseInferencer's form).
            visualization: ignored (``visualize`` returns ``None``).
            return_datasamples (bool): return the samples themselves (list form only).
        """
        if isinstance(preds, (list, tuple)):
            if return_datasamples:
                return list(preds)
            return [RefInferencer.postprocess(p) for p in preds]
        for key in ('pred_mask', 'pred_box'):
            if key not in preds:
                raise KeyError(f'the model did not fill {key!r} (see docs/contracts.md section 3)')
        return prediction_to_original(preds)

    # ------------------------------------------------------------------ entry points
    def iter_pairs(self,
                   pairs: Iterable[PairType],
                   channel_order: str = 'bgr',
                   batch_size: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Answers to ``(image, sentence)`` pairs, in order, as a generator.

        Pairs are consumed lazily and batched across images: model calls take ``batch_size``
        samples (default: the inferencer's), the last one possibly fewer. Consecutive pairs
        with the same image path (or array object) read it once.

        Args:
            pairs: iterable of ``(image, sentence)``; ``image`` a path or an ``H x W x 3``
                uint8 array in ``channel_order``.
            channel_order (str): ``'bgr'`` or ``'rgb'`` for array images.
            batch_size (int, optional): overrides the inferencer's ``batch_size``.

        Yields:
            dict: one answer per pair (see :meth:`__call__`).

        Raises:
            TypeError / ValueError / FileNotFoundError: a bad pair, naming its index
            (``pair k: ...``), raised when the batch holding it is read.
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
        if channel_order not in ('bgr', 'rgb'):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        for data in self.preprocess(pairs, batch_size=batch_size, channel_order=channel_order):
            yield from self.postprocess(self.forward(data))

    def predict_pairs(self,
                      pairs: Iterable[PairType],
                      channel_order: str = 'bgr',
                      batch_size: Optional[int] = None) -> List[Dict[str, Any]]:
        """:meth:`iter_pairs` as a list: one answer per ``(image, sentence)`` pair, in order,
        model calls batched across images (a progress bar when ``show_progress``)."""
        answers = self.iter_pairs(pairs, channel_order, batch_size)
        if self.show_progress:
            from rich.progress import track
            total = len(pairs) if hasattr(pairs, '__len__') else None
            answers = track(answers, total=total, description='Inference')
        return list(answers)

    def __call__(self,
                 image: ImageType,
                 sentences: Union[str, Sequence[str]],
                 channel_order: str = 'bgr') -> List[Dict[str, Any]]:
        """Ground every sentence in one image.

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
        img = self.load_image(image, channel_order)  # errors before any model call
        path = image if isinstance(image, str) else None
        answers = []
        samples = (self._sample(img, s, k, path) for k, s in enumerate(sentences))
        for chunk in self._get_chunk_data(samples, self.batch_size):
            answers.extend(self.postprocess(self.forward(self.collate_fn(chunk))))
        return answers

"""ORTRefPredictor: :class:`~mmrefer.apis.RefInferencer`'s answers from an exported ONNX graph.

    >>> from mmrefer.apis import ORTRefPredictor
    >>> predictor = ORTRefPredictor('work_dirs/onnx/latentvg.onnx')   # + latentvg.json sidecar
    >>> answers = predictor('demo.jpg', ['the red cup', 'the man on the left'])
    >>> answers[0]['mask'].shape     # (H0, W0) bool, the image's own size

Everything but the network is :class:`RefInferencer`'s own code: the config's test pipeline
(:func:`~mmrefer.apis.build_inference_pipeline`), its collate function, the batching of
``__call__`` / :meth:`~RefInferencer.predict_pairs`, and ``postprocess``
(:func:`mmrefer.structures.prediction_to_original`). One batch::

    data      = collate(pipeline(image, sentence) ...)
    img       = data_preprocessor(data)['inputs']          [B, 3, H, W] normalised, padded
    ids, mask = tokenize_samples(tokenizer, samples)       [B, L] (outside the graph)
    outputs   = onnxruntime.run(img, ids, mask)            prob, nt_prob, method extras
    samples   = Head.fill_predictions(RefPostProcessor(mask_thr, nt_thr), test_cfg, samples,
                                      outputs as CPU tensors, words)
    answers   = prediction_to_original(sample) ...

The export (``tools/deployment/pytorch2onnx.py``) writes a JSON sidecar next to the ``.onnx``
(:func:`mmrefer.models.deployment.sidecar_path`) holding the config, the tokenizer component,
the input size, the text length, the head's ``test_cfg`` and the output names, so the graph
file is all the predictor needs. The data preprocessor (mean / std / ``bgr_to_rgb`` / padding)
is built from the config; it has no parameters.
"""
import json
import os.path as osp
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from mmengine.config import Config, ConfigDict

from .inferencer import RefInferencer

__all__ = ['ORTRefPredictor', 'ORTRefModel', 'load_sidecar', 'ort_session']

_REQUIRED = ('format', 'method', 'head_type', 'input_names', 'output_names', 'input_size',
             'text_length', 'test_cfg', 'has_no_target', 'tokenizer')


def load_sidecar(onnx_file: str) -> Dict[str, Any]:
    """The export's JSON sidecar of ``onnx_file`` (checked: the fields the predictor reads).

    Raises:
        FileNotFoundError: the ``.onnx`` or its sidecar is missing (the message names it).
        ValueError: the sidecar is not this format or lacks a field (named).
    """
    from mmrefer.models.deployment import SIDECAR_FORMAT, sidecar_path
    if not osp.isfile(onnx_file):
        raise FileNotFoundError(f'ONNX file not found: {onnx_file}')
    path = sidecar_path(onnx_file)
    if not osp.isfile(path):
        raise FileNotFoundError(f'the sidecar {path} of {onnx_file} is missing: export with '
                                'tools/deployment/pytorch2onnx.py, which writes both')
    try:
        with open(path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON: {e}') from e
    if not isinstance(meta, dict) or meta.get('format') != SIDECAR_FORMAT:
        raise ValueError(f'{path}: field "format" must be {SIDECAR_FORMAT!r}, got '
                         f'{meta.get("format") if isinstance(meta, dict) else type(meta)!r}')
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f'{path} lacks the fields {missing}')
    return meta


def ort_session(onnx_file: str, device: str = 'cpu', num_threads: Optional[int] = None):
    """An ``onnxruntime.InferenceSession`` of ``onnx_file`` on ``device`` (``'cpu'``, or
    ``'cuda'`` / ``'cuda:N'`` with onnxruntime-gpu); ``num_threads``: intra-op threads (None:
    onnxruntime's default, the physical cores)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError('ORTRefPredictor needs onnxruntime: pip install "mmrefer[deploy]" '
                          '(or pip install -r requirements/deploy.txt)') from e
    dev = torch.device(device)
    if dev.type == 'cpu':
        providers = ['CPUExecutionProvider']
    elif dev.type == 'cuda':
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise ValueError(f'device={device!r}: this onnxruntime has no CUDAExecutionProvider '
                             f'(available: {ort.get_available_providers()}); install '
                             'onnxruntime-gpu or use device="cpu"')
        providers = [('CUDAExecutionProvider', dict(device_id=dev.index or 0)),
                     'CPUExecutionProvider']
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    options = ort.SessionOptions()
    if num_threads is not None:
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f'num_threads must be an integer >= 1, got {num_threads!r}')
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_file, options, providers=providers)


class ORTRefModel(torch.nn.Module):
    """The model :class:`ORTRefPredictor` runs: ``test_step(data)`` as a detector's, with the
    network replaced by an onnxruntime session (see the module docstring).

    Args:
        session: ``onnxruntime.InferenceSession`` of the exported graph.
        meta (dict): the sidecar (:func:`load_sidecar`).
        cfg (Config): the model config (its ``model.data_preprocessor`` is built).
        tokenizer: the tokenizer component (``BEiT3Tokenizer`` / ``HFTokenizer``).
    """

    def __init__(self, session, meta: Dict[str, Any], cfg: Config, tokenizer):
        super().__init__()
        from mmrefer.models.post_processing import RefPostProcessor
        from mmrefer.registry import MODELS
        self.session, self.meta, self.tokenizer = session, meta, tokenizer
        if 'data_preprocessor' not in cfg.model:
            raise KeyError('the config has no model.data_preprocessor (normalisation and '
                           'padding of the images)')
        self.data_preprocessor = MODELS.build(cfg.model.data_preprocessor)
        self.head_cls = MODELS.get(meta['head_type'])
        if self.head_cls is None or not hasattr(self.head_cls, 'fill_predictions'):
            raise ValueError(f"sidecar head_type {meta['head_type']!r} is not a registered head "
                             'with fill_predictions')
        self.test_cfg = dict(meta['test_cfg'])
        self.post_processor = RefPostProcessor(self.test_cfg['mask_thr'],
                                               self.test_cfg['nt_thr'])
        graph_inputs = [i.name for i in session.get_inputs()]
        if graph_inputs != list(meta['input_names']):
            raise ValueError(f"the graph's inputs {graph_inputs} are not the sidecar's "
                             f"input_names {meta['input_names']}")
        self.output_names = list(meta['output_names'])
        if int(tokenizer.max_length) != int(meta['text_length']):
            raise ValueError(f'the tokenizer gives {tokenizer.max_length} tokens, the graph reads '
                             f"text_length={meta['text_length']} (sidecar); use the exported "
                             'tokenizer settings')

    def run(self, img: torch.Tensor, input_ids: torch.Tensor,
            attention_mask: torch.Tensor) -> Dict[str, np.ndarray]:
        """The graph on one batch: ``img [B, 3, H, W]`` float, ids / mask ``[B, L]`` int64 ->
        ``{output name: array}``."""
        feeds = dict(zip(self.meta['input_names'],
                         (img.detach().cpu().float().numpy(),
                          input_ids.detach().cpu().long().numpy(),
                          attention_mask.detach().cpu().long().numpy())))
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

    @torch.no_grad()
    def test_step(self, data: dict) -> List:
        """A collated batch -> predicted ``DetDataSample`` list (the detector's ``test_step``
        contract; docs/contracts.md section 3)."""
        from mmrefer.models.language_models.text_path import token_words, tokenize_samples
        data = self.data_preprocessor(data, False)
        img, samples = data['inputs'], data['data_samples']
        size = [int(v) for v in self.meta['input_size']]
        if list(img.shape[-2:]) != size:
            raise ValueError(f'the test pipeline gives input images of {list(img.shape[-2:])} '
                             f"(h, w) but the graph was exported for {size} (sidecar "
                             'input_size): use the config the model was exported with')
        tok = tokenize_samples(self.tokenizer, samples)
        outs = self.run(img, tok['input_ids'], tok['attention_mask'])
        maps = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in outs.items()}
        if not self.meta['has_no_target']:
            maps['nt_prob'] = None  # the graph's zeros: no no-target head
        return self.head_cls.fill_predictions(self.post_processor, self.test_cfg, samples, maps,
                                              token_words(tok['texts'], tok['offsets']))


class ORTRefPredictor(RefInferencer):
    """:class:`RefInferencer` on an exported ONNX graph run by onnxruntime (module docstring).

    Same ``__call__(image, sentences, channel_order='bgr')``, :meth:`predict_pairs` and
    :meth:`iter_pairs`, same answer dicts (``text``, ``mask`` at the image's own size, ``box``,
    ``no_target``, ``score``, ``extras``: Latent-VG ``expr_maps`` / ``subject_index``; InstAlign
    ``inst_masks`` / ``inst_scores`` / ``aligned_words`` / ``no_target_score``).

    Args:
        onnx_file (str): the ``.onnx`` written by ``tools/deployment/pytorch2onnx.py`` (its
            ``.json`` sidecar next to it).
        config (str | Config | dict, optional): the model config for the test pipeline and the
            data preprocessor; default the one stored in the sidecar (``config_text``, else its
            ``config`` path).
        device (str): ``'cpu'`` (default) or ``'cuda[:N]'`` (onnxruntime-gpu).
        batch_size (int): samples per graph run.
        tokenizer (str | dict, optional): overrides the sidecar's tokenizer component (a
            sentencepiece model file, a transformers tokenizer folder or a ``TASK_UTILS``
            config; see ``build_tokenizer``), e.g. when its files moved. Its ``max_length``
            is the exported text length.
        num_threads (int, optional): onnxruntime intra-op threads.
        cfg_options (dict, optional): overrides merged into the config.
    """

    def __init__(self,
                 onnx_file: str,
                 config: Optional[Union[str, Config, dict]] = None,
                 device: str = 'cpu',
                 batch_size: int = 8,
                 tokenizer: Optional[Union[str, dict]] = None,
                 num_threads: Optional[int] = None,
                 cfg_options: Optional[dict] = None,
                 show_progress: bool = False) -> None:
        onnx_file = osp.expanduser(str(onnx_file))
        self.meta = load_sidecar(onnx_file)
        self.onnx_file = onnx_file
        self._tokenizer_spec = tokenizer
        self._num_threads = num_threads
        if config is None:
            config = self._sidecar_config(self.meta, onnx_file)
        super().__init__(config, weights=None, device=device, batch_size=batch_size,
                         cfg_options=cfg_options, show_progress=show_progress)

    @staticmethod
    def _sidecar_config(meta: Dict[str, Any], onnx_file: str) -> Config:
        text = meta.get('config_text')
        if text:
            return Config.fromstring(text, '.py')
        path = meta.get('config')
        if path and osp.isfile(path):
            return Config.fromfile(path)
        raise FileNotFoundError(f'the sidecar of {onnx_file} has no config_text and its config '
                                f'{path!r} does not exist: pass config=')

    def _init_model(self, cfg: ConfigDict, weights: Optional[str],
                    device: str = 'cpu') -> ORTRefModel:
        """An :class:`ORTRefModel` instead of the PyTorch detector (``weights`` unused: they
        are in the graph)."""
        from mmrefer.models.language_models.text_path import build_tokenizer
        spec = self._tokenizer_spec if self._tokenizer_spec is not None else \
            self.meta['tokenizer']
        tokenizer = build_tokenizer(spec, max_length=int(self.meta['text_length']))
        session = ort_session(self.onnx_file, device, self._num_threads)
        return ORTRefModel(session, self.meta, cfg, tokenizer)

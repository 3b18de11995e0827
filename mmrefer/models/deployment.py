"""ONNX export wrapper of both detectors: tensors in, the post-processor's tensors out.

:class:`RefExportModel` wraps a built ``LatentVG`` or ``InstAlign`` (eval mode) as a module with
tensor inputs and outputs only, the form ``torch.onnx.export`` traces::

    forward(img [B, 3, H, W] float (normalised, as the data preprocessor gives it),
            input_ids [B, L] int64, attention_mask [B, L] int64 (1 = token))
      x    = model.encode(img, input_ids, attention_mask)          (the detector's encoder)
      outs = model.head(x)                                          (the head's forward)
      maps = model.head.predict_maps(*outs, (H, W), ...)            (what predict_by_feat uses)
      -> maps[name] for name in output_names

Outputs (all at the input size ``H x W``, which is the padded batch shape of a fixed-size test
pipeline):

==============  ============================  ==============================================
name            shape / dtype                 meaning
==============  ============================  ==============================================
prob            [B, H, W] float32             final foreground probability (``pred_prob``)
nt_prob         [B] float32                   no-target probability (zeros without a no-target
                                              head: ``meta['has_no_target']`` says which)
expr_maps       [B, Q, H, W] float32          Latent-VG: per-expression maps (``Q = N + 1``)
subject_index   [B] int64                     Latent-VG: subject token position (-1 if none)
inst_masks      [B, k, H, W] float32          InstAlign: top-``extras_topk`` instance maps
inst_scores     [B, k] float32                InstAlign: their scores ``p``
inst_relevance  [B, k, L] float32             InstAlign: their relevance to the words
==============  ============================  ==============================================

The head's static ``fill_predictions(post_processor, test_cfg, samples, maps, words)`` turns these
tensors into the prediction fields (docs/contracts.md section 3), for the PyTorch model and for
``mmrefer.apis.ORTRefPredictor`` alike. Tokenization stays outside the graph: :meth:`
RefExportModel.tokenizer_config` is the tokenizer component the predictor rebuilds.
"""
import contextlib
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .language_models.text_path import model_tokenizer

__all__ = ['RefExportModel', 'LATENTVG_OUTPUTS', 'INSTALIGN_OUTPUTS', 'INPUT_NAMES',
           'SIDECAR_FORMAT', 'export_onnx', 'compare_outputs', 'sidecar_path']

SIDECAR_FORMAT = 'mmrefer-onnx/1'

INPUT_NAMES = ('img', 'input_ids', 'attention_mask')

LATENTVG_OUTPUTS = ('prob', 'nt_prob', 'expr_maps', 'subject_index')
INSTALIGN_OUTPUTS = ('prob', 'nt_prob', 'inst_masks', 'inst_scores', 'inst_relevance')


def _method(model: nn.Module) -> str:
    """``'LatentVG'`` / ``'InstAlign'``: the registry name of the detector's class (duck-typed:
    an ``encode`` method and a head with ``predict_maps`` / ``fill_predictions``)."""
    name = type(model).__name__
    head = getattr(model, 'head', None)
    missing = [what for what, ok in (
        ('encode(inputs, input_ids, attention_mask)', callable(getattr(model, 'encode', None))),
        ('head.predict_maps', callable(getattr(head, 'predict_maps', None))),
        ('head.fill_predictions', callable(getattr(head, 'fill_predictions', None))))
        if not ok]
    if missing or name not in ('LatentVG', 'InstAlign'):
        raise TypeError(f'RefExportModel: {name} is not an exportable detector (LatentVG or '
                        f'InstAlign; missing: {missing or "none"})')
    return name


class RefExportModel(nn.Module):
    """Tensor-only view of a detector for ONNX export (see the module docstring).

    Args:
        model (nn.Module): a built ``LatentVG`` or ``InstAlign``; put in eval mode here (Gumbel
            argmax, no dropout). Its parameters are shared, not copied.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.method = _method(model)
        self.model = model.eval()
        head = model.head
        self.has_no_target = getattr(head, 'no_target_predictor', None) is not None
        if self.method == 'LatentVG':
            names = list(LATENTVG_OUTPUTS)
            if not head.test_cfg.get('return_expr_maps', True):
                names.remove('expr_maps')
        else:
            names = list(INSTALIGN_OUTPUTS)
        self.output_names: Tuple[str, ...] = tuple(names)

    @property
    def tokenizer(self):
        """The detector's tokenizer component (``BEiT3Tokenizer`` / ``HFTokenizer``)."""
        return model_tokenizer(self.model)

    @property
    def text_length(self) -> int:
        """``L``: the tokenizer's ``max_length`` (fixed in the graph)."""
        return int(self.tokenizer.max_length)

    def tokenizer_config(self) -> dict:
        """A ``TASK_UTILS`` config rebuilding :attr:`tokenizer` (the predictor tokenizes with
        it)."""
        tok = self.tokenizer
        kind = type(tok).__name__
        if kind == 'BEiT3Tokenizer':
            return dict(type=kind, spm_path=tok.spm_path, max_length=tok.max_length,
                        lower_case=tok.lower_case)
        if kind == 'HFTokenizer':
            return dict(type=kind, path=tok.path, max_length=tok.max_length,
                        lower_case=tok.lower_case, model_type=tok.model_type,
                        vocab_size=tok.vocab_size)
        raise TypeError(f'RefExportModel: unknown tokenizer component {kind}')

    def example_inputs(self, img_shape: Tuple[int, int], batch_size: int = 1,
                       sentences: Optional[List[str]] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """``(img, input_ids, attention_mask)`` for tracing: a seeded random normalised image
        batch of ``img_shape`` and ``sentences`` (default a dummy one, repeated) tokenized with
        the model's tokenizer."""
        sentences = list(sentences or ['the object on the left'] * batch_size)
        if len(sentences) != batch_size:
            raise ValueError(f'example_inputs: {len(sentences)} sentences for batch_size '
                             f'{batch_size}')
        text = self.tokenizer(sentences)
        gen = torch.Generator().manual_seed(0)
        img = torch.randn((batch_size, 3) + tuple(int(v) for v in img_shape), generator=gen)
        device = next(self.model.parameters()).device
        return (img.to(device), text['input_ids'].to(device),
                text['attention_mask'].to(device))

    def forward(self, img: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tuple[Tensor, ...]:
        """Args:
            img: ``[B, 3, H, W]`` normalised image batch (the data preprocessor's output).
            input_ids: ``[B, L]`` int64 token ids of the model's tokenizer.
            attention_mask: ``[B, L]`` int64, 1 = token, 0 = pad.

        Returns:
            tuple: the tensors named by :attr:`output_names` (module docstring).
        """
        x = self.model.encode(img, input_ids, attention_mask)
        pad_shape = tuple(img.shape[-2:])
        head = self.model.head
        if self.method == 'LatentVG':
            mask_logits, class_embeds, nt_logits = head(x)
            maps = head.predict_maps(mask_logits, class_embeds, nt_logits, pad_shape,
                                     x['subject_index'])
        else:
            maps = head.predict_maps(*head(x), pad_shape)
        maps = self._fill_defaults(maps, img.shape[0])  # not len(): keeps the batch symbolic
        return tuple(maps[name] for name in self.output_names)

    @staticmethod
    def _fill_defaults(maps: Dict[str, Optional[Tensor]], batch: int) -> Dict[str, Tensor]:
        """``nt_prob`` None -> zeros ``[B]``; ``subject_index`` on the maps' device."""
        maps = dict(maps)
        prob = maps['prob']
        if maps.get('nt_prob') is None:
            maps['nt_prob'] = prob.new_zeros(batch)
        if 'subject_index' in maps:
            maps['subject_index'] = maps['subject_index'].to(prob.device, torch.long)
        return maps


def sidecar_path(onnx_file: str) -> str:
    """The JSON sidecar next to an exported graph: ``model.onnx`` -> ``model.json``."""
    return osp.splitext(str(onnx_file))[0] + '.json'


def _int_or_symbolic(g, a, b):
    """TorchScript-exporter symbolic of ``a | b`` on integer (0/1) tensors: ``Cast(bool) -> Or ->
    Cast`` back (opset 17 has no BitwiseOr; torch's own symbolic refuses non-bool inputs). The
    graph's only integer ``|`` is ``HFTextEncoder``'s 0/1 attention mask."""
    from torch.onnx._internal.torchscript_exporter import _type_utils
    bool_t = _type_utils.JitScalarType.BOOL.onnx_type()
    dtype = _type_utils.JitScalarType.from_value(a, _type_utils.JitScalarType.BOOL)
    out = g.op('Or', g.op('Cast', a, to_i=bool_t), g.op('Cast', b, to_i=bool_t))
    return out if dtype == _type_utils.JitScalarType.BOOL else g.op('Cast', out,
                                                                     to_i=dtype.onnx_type())


def _swin_window_reverse(self, windows: Tensor, H: int, W: int) -> Tensor:
    """mmdet ``ShiftWindowMSA.window_reverse`` ``[nW * B, ws, ws, C] -> [B, H, W, C]`` with the
    batch left to ``view(-1, ...)``: mmdet computes it as ``int(windows.shape[0] / ...)``, which
    the tracer bakes in as the example's batch size (a wrong answer, not an error, at another
    batch size)."""
    ws, C = self.window_size, windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


@contextlib.contextmanager
def _export_context(opset: int):
    """What the TorchScript exporter needs, undone afterwards: the ``nn.MultiheadAttention``
    fast path off (``aten::_native_multi_head_attention`` has no ONNX symbolic), the integer
    ``|`` symbolic (:func:`_int_or_symbolic`) and a batch-agnostic Swin window reverse
    (:func:`_swin_window_reverse`)."""
    from mmdet.models.backbones.swin import ShiftWindowMSA
    fastpath = torch.backends.mha.get_fastpath_enabled()
    window_reverse = ShiftWindowMSA.window_reverse
    torch.backends.mha.set_fastpath_enabled(False)
    ShiftWindowMSA.window_reverse = _swin_window_reverse
    names = ('aten::bitwise_or', 'aten::__or_')
    for name in names:
        torch.onnx.register_custom_op_symbolic(name, _int_or_symbolic, opset)
    try:
        yield
    finally:
        for name in names:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
        ShiftWindowMSA.window_reverse = window_reverse
        torch.backends.mha.set_fastpath_enabled(fastpath)


def export_onnx(model: RefExportModel, inputs: Sequence[Tensor], out_file: str,
                opset: int = 17) -> str:
    """Export ``model`` to ``out_file`` with the TorchScript exporter
    (``torch.onnx.export(dynamo=False)``), eval mode, no gradients, a dynamic batch axis on
    every input and output (input size and text length stay as in ``inputs``).

    Why not the dynamo exporter: it targets opset >= 18 (its conversion to 17 fails on these
    graphs) and ``torch.export`` cannot trace mmcv's deformable attention (a split by tensor
    values).
    InstAlign's ``MultiScaleDeformableAttention`` takes mmcv's pure-PyTorch path on CPU tensors
    (``grid_sample``: ONNX ``GridSample``, opset >= 16).

    Args:
        model: the wrapper; its parameters must be on the CPU.
        inputs: ``(img, input_ids, attention_mask)`` example tensors
            (:meth:`RefExportModel.example_inputs`).
        out_file: the ``.onnx`` path (its folder is created).
        opset: ONNX opset (16 or newer).

    Returns:
        str: ``out_file``.
    """
    import os
    if not isinstance(model, RefExportModel):
        raise TypeError(f'export_onnx: model must be a RefExportModel, got {type(model).__name__}')
    if not isinstance(opset, int) or opset < 16:
        raise ValueError(f'export_onnx: opset must be an int >= 16 (GridSample), got {opset!r}')
    if any(p.device.type != 'cpu' for p in model.parameters()):
        raise ValueError('export_onnx: export from the CPU (the deformable attention takes its '
                         'pure-PyTorch path only on CPU tensors); build the model on the CPU')
    if len(inputs) != len(INPUT_NAMES):
        raise ValueError(f'export_onnx: inputs must be {INPUT_NAMES}, got {len(inputs)} tensors')
    folder = osp.dirname(osp.abspath(out_file))
    os.makedirs(folder, exist_ok=True)
    dynamic = {name: {0: 'batch'} for name in INPUT_NAMES + tuple(model.output_names)}
    model.eval()
    import warnings
    with _export_context(opset), torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about every Python value it bakes in (fixed sizes) and about the
        # TorchScript exporter being the legacy one: expected here
        warnings.simplefilter('ignore')
        torch.onnx.export(model, tuple(inputs), out_file, dynamo=False,
                          input_names=list(INPUT_NAMES), output_names=list(model.output_names),
                          opset_version=opset, dynamic_axes=dynamic)
    return out_file


def compare_outputs(reference: Dict[str, np.ndarray], other: Dict[str, np.ndarray],
                    mask_thr: float = 0.5) -> Dict[str, float]:
    """Agreement of two runs of the graph (e.g. PyTorch vs onnxruntime) on the same inputs.

    Returns:
        dict: ``max_abs_prob_diff`` (max over every float output of ``|a - b|``),
        ``identical_mask_pixels`` (share of pixels where ``prob > mask_thr`` agrees),
        ``identical_int_outputs`` (1.0 when every integer output is equal, else 0.0).
    """
    missing = sorted(set(reference) - set(other))
    if missing:
        raise KeyError(f'compare_outputs: outputs {missing} missing from the second run')
    diff, ints_equal = 0.0, True
    for name, ref in reference.items():
        ref, oth = np.asarray(ref), np.asarray(other[name])
        if ref.shape != oth.shape:
            raise ValueError(f'compare_outputs: output {name!r} has shape {oth.shape}, expected '
                             f'{ref.shape}')
        if np.issubdtype(ref.dtype, np.floating):
            if ref.size:
                diff = max(diff, float(np.abs(ref.astype(np.float64) - oth).max()))
        else:
            ints_equal &= bool(np.array_equal(ref, oth))
    same = (np.asarray(reference['prob']) > mask_thr) == (np.asarray(other['prob']) > mask_thr)
    return dict(max_abs_prob_diff=diff, identical_mask_pixels=float(same.mean()),
                identical_int_outputs=float(ints_equal))

"""Export a Latent-VG or InstAlign model to ONNX and check it with onnxruntime.

    python tools/deployment/pytorch2onnx.py CONFIG [--weights CKPT] --out model.onnx \
        [--batch-size 2] [--opset 17] [--sentences "the red circle" ...] [--images a.jpg ...] \
        [--cfg-options KEY=VALUE ...]

Steps:

1. build the model from the config (``RefInferencer``: config by path or name, ``--weights``
   loaded as there; random initialisation without them), CPU, eval mode;
2. the example batch: ``--batch-size`` (image, sentence) pairs through the config's test
   pipeline and data preprocessor (images: ``--images``, default seeded random 480 x 640
   pictures; sentences: ``--sentences``, default a few short ones), tokenized with the model's
   own tokenizer component;
3. ``torch.onnx.export`` of :class:`mmrefer.models.deployment.RefExportModel` with the
   TorchScript exporter (``dynamo=False``; see ``export_onnx`` for why), opset ``--opset``,
   inputs ``img [B, 3, H, W]``, ``input_ids`` / ``attention_mask [B, L]``, a dynamic batch axis
   (``H, W`` and ``L`` fixed by the config);
4. the check: ``onnx.checker``, then onnxruntime (CPU) against PyTorch on the example batch;
   prints the max abs difference of the probabilities and the share of identical mask pixels;
5. the JSON sidecar ``model.json`` next to ``model.onnx``: config path and text, input size,
   text length, mean / std / ``bgr_to_rgb``, ``mask_thr`` / ``nt_thr`` and the head's
   ``test_cfg``, tokenizer component, input / output names, the check's figures. With it,
   ``mmrefer.apis.ORTRefPredictor('model.onnx')`` needs nothing else.

Exit status 0 when the check passes (max abs prob diff <= ``--atol``, default 1e-3, and
identical mask pixels >= ``--min-identical``, default 0.999), 1 when it fails, 2 for usage
errors (missing config / checkpoint / image, bad option).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # the working tree's mmrefer, not a stale installed wheel

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

DEFAULT_SENTENCES = ('the red circle on the left', 'all green shapes', 'the small blue square',
                     'the biggest object')


def example_images(n: int, shape=(480, 640), seed: int = 0) -> List[np.ndarray]:
    """``n`` seeded random BGR uint8 pictures of ``shape`` (smooth blobs, not white noise)."""
    import cv2
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (shape[0] // 16, shape[1] // 16, 3), dtype=np.uint8)
        out.append(cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR))
    return out


def example_batch(inferencer, images: Sequence, sentences: Sequence[str]):
    """``(img, input_ids, attention_mask)`` tensors of the (image, sentence) pairs through the
    inferencer's test pipeline, collate and data preprocessor, and the model's tokenizer."""
    from mmrefer.models.deployment import RefExportModel
    from mmrefer.models.language_models.text_path import tokenize_samples
    data = next(inferencer.preprocess(list(zip(images, sentences)), batch_size=len(images)))
    data = inferencer.model.data_preprocessor(data, False)
    tok = tokenize_samples(RefExportModel(inferencer.model).tokenizer, data['data_samples'])
    return data['inputs'].float(), tok['input_ids'], tok['attention_mask']


def compare_session(wrapper, sess, inputs, mask_thr: float) -> Dict[str, float]:
    """The PyTorch ``wrapper`` and the onnxruntime session ``sess`` on the same ``inputs``
    (:func:`mmrefer.models.deployment.compare_outputs`)."""
    from mmrefer.models.deployment import INPUT_NAMES, compare_outputs
    names = list(wrapper.output_names)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in zip(names, wrapper(*inputs))}
    outs = sess.run(names, {k: v.numpy() for k, v in zip(INPUT_NAMES, inputs)})
    return compare_outputs(ref, dict(zip(names, outs)), mask_thr)


def run_check(wrapper, onnx_file: str, inputs, mask_thr: float,
              num_threads: Optional[int] = None) -> Dict[str, float]:
    """``onnx.checker`` on the file, then onnxruntime vs PyTorch on ``inputs``
    (:func:`compare_session`)."""
    import onnx
    from mmrefer.apis.onnx_predictor import ort_session
    onnx.checker.check_model(onnx_file)  # by path: also for files over 2 GB
    return compare_session(wrapper, ort_session(onnx_file, 'cpu', num_threads), inputs,
                           mask_thr)


def sidecar(inferencer, wrapper, config_path: str, weights: Optional[str], inputs,
            opset: int) -> dict:
    """The JSON sidecar's fields (see the module docstring)."""
    from mmrefer.models.deployment import INPUT_NAMES, SIDECAR_FORMAT
    model, cfg = inferencer.model, inferencer.cfg
    dp = model.data_preprocessor
    head = model.head
    normalize = getattr(dp, '_enable_normalize', False)
    test_cfg = {k: v for k, v in head.test_cfg.items()
                if isinstance(v, (bool, int, float, str, type(None)))}
    return dict(
        format=SIDECAR_FORMAT, method=wrapper.method, head_type=type(head).__name__,
        config=config_path, config_text=cfg.pretty_text, weights=weights,
        exporter='torch.onnx.export(dynamo=False) (TorchScript)', opset=opset,
        torch=torch.__version__, input_names=list(INPUT_NAMES),
        output_names=list(wrapper.output_names), dynamic_axes={'batch': 0},
        input_size=[int(v) for v in inputs[0].shape[-2:]], text_length=wrapper.text_length,
        mean=dp.mean.flatten().tolist() if normalize else None,
        std=dp.std.flatten().tolist() if normalize else None,
        # RefDataPreprocessor swaps the channels itself (_flip_channels), mmengine's with
        # _channel_conversion
        bgr_to_rgb=bool(getattr(dp, '_flip_channels', getattr(dp, '_channel_conversion', False))),
        mask_thr=float(head.test_cfg['mask_thr']), nt_thr=float(head.test_cfg['nt_thr']),
        test_cfg=test_cfg, has_no_target=wrapper.has_no_target,
        tokenizer=wrapper.tokenizer_config())


def export(config, out: str, weights: Optional[str] = None, batch_size: int = 2,
           opset: int = 17, cfg_options: Optional[dict] = None,
           sentences: Optional[Sequence[str]] = None, images: Optional[Sequence] = None,
           check: bool = True, num_threads: Optional[int] = None, verbose: bool = True) -> dict:
    """Steps 1-5 of the module docstring; returns the sidecar dict (``check`` holds the
    onnxruntime-vs-PyTorch figures when ``check``, ``export_s`` the export time).

    Args:
        config: config path / name / Config; ``weights``: checkpoint or None (random init).
        out: the ``.onnx`` path; the sidecar goes to ``sidecar_path(out)``.
        batch_size: example batch size (the graph's batch axis is dynamic anyway).
        sentences / images: the example pairs (cycled to ``batch_size``).
    """
    import warnings
    from mmrefer.apis import RefInferencer
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='RefInferencer: no weights given')
        inferencer = RefInferencer(config, weights=weights, device='cpu',
                                   cfg_options=cfg_options)
    config_path = config if isinstance(config, str) else getattr(inferencer.cfg, 'filename', None)
    return export_inferencer(inferencer, out, config_path, weights, batch_size, opset, sentences,
                             images, check, num_threads, verbose)


def export_inferencer(inferencer, out: str, config_path: Optional[str] = None,
                      weights: Optional[str] = None, batch_size: int = 2, opset: int = 17,
                      sentences: Optional[Sequence[str]] = None,
                      images: Optional[Sequence] = None, check: bool = True,
                      num_threads: Optional[int] = None, verbose: bool = True) -> dict:
    """:func:`export` for a model already built by a CPU ``RefInferencer`` (its config, its
    weights): steps 2-5 of the module docstring."""
    from mmrefer.models.deployment import RefExportModel, export_onnx, sidecar_path
    if not str(out).endswith('.onnx'):
        raise ValueError(f'--out must end with .onnx, got {out!r}')
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f'batch_size must be an integer >= 1, got {batch_size!r}')
    if inferencer.device.type != 'cpu':
        raise ValueError(f'export from a CPU model, got device {inferencer.device}')
    sentences = list(sentences or DEFAULT_SENTENCES)
    sentences = [sentences[i % len(sentences)] for i in range(batch_size)]
    images = list(images) if images else example_images(batch_size)
    images = [images[i % len(images)] for i in range(batch_size)]
    wrapper = RefExportModel(inferencer.model)
    inputs = example_batch(inferencer, images, sentences)
    if bool((inputs[2] == 1).all()):
        import warnings
        warnings.warn('every example sentence fills the whole text length: the graph is traced '
                      'without padding (mmrefer has no padding-dependent branch; a shorter '
                      '--sentences one makes the check cover padding)')
    t0 = time.perf_counter()
    export_onnx(wrapper, inputs, out, opset=opset)
    meta = sidecar(inferencer, wrapper, config_path, weights, inputs, opset)
    meta['export_s'] = round(time.perf_counter() - t0, 2)
    if verbose:
        print(f'exported {wrapper.method} to {out} in {meta["export_s"]} s (opset {opset}, '
              f'input {meta["input_size"]}, text length {meta["text_length"]}, outputs '
              f'{list(wrapper.output_names)})')
    if check:
        meta['check'] = dict(run_check(wrapper, out, inputs, meta['mask_thr'], num_threads),
                             batch_size=batch_size)
        if verbose:
            c = meta['check']
            print(f'onnxruntime vs PyTorch on the example batch of {batch_size}: max abs prob '
                  f'diff {c["max_abs_prob_diff"]:.3g}, identical mask pixels '
                  f'{100 * c["identical_mask_pixels"]:.4f} %, integer outputs equal: '
                  f'{bool(c["identical_int_outputs"])}')
    with open(sidecar_path(out), 'w') as f:
        json.dump(meta, f, indent=1)
    if verbose:
        print(f'sidecar: {sidecar_path(out)}')
    return meta


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a Latent-VG / InstAlign model to ONNX and '
                                'check it against PyTorch with onnxruntime')
    p.add_argument('config', help='config file or config name (e.g. latentvg_tiny_synthref)')
    p.add_argument('--weights', default=None, help='checkpoint (random init when omitted)')
    p.add_argument('--out', required=True, help='the .onnx file (its .json sidecar beside it)')
    p.add_argument('--batch-size', type=int, default=2,
                   help='example batch size (the exported batch axis is dynamic)')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 16)')
    p.add_argument('--sentences', nargs='+', default=None, help='example sentences')
    p.add_argument('--images', nargs='+', default=None,
                   help='example images (default: seeded random 480x640 pictures)')
    p.add_argument('--no-check', action='store_true', help='skip the onnxruntime check')
    p.add_argument('--atol', type=float, default=1e-3,
                   help='check: largest allowed abs difference of the probabilities')
    p.add_argument('--min-identical', type=float, default=0.999,
                   help='check: smallest allowed share of identical mask pixels')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, key=value')
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Exports to ``OUT.tmp.onnx`` (and its sidecar) and moves both onto ``--out`` only when
    the check passes (or with ``--no-check``): a failed check never replaces an earlier good
    export."""
    from mmrefer.models.deployment import sidecar_path
    args = parse_args(argv)
    for what, path in [('checkpoint', args.weights)] + [('image', i) for i in args.images or []]:
        if path is not None and not osp.isfile(path):
            print(f'pytorch2onnx.py: error: {what} not found: {path}', file=sys.stderr)
            return 2
    if not args.atol >= 0 or not 0 <= args.min_identical <= 1:
        print(f'pytorch2onnx.py: error: --atol must be >= 0 and --min-identical in [0, 1], got '
              f'{args.atol} and {args.min_identical}', file=sys.stderr)
        return 2
    if not args.out.endswith('.onnx'):
        print(f'pytorch2onnx.py: error: --out must end with .onnx, got {args.out!r}',
              file=sys.stderr)
        return 2
    tmp = args.out[:-len('.onnx')] + '.tmp.onnx'
    try:
        meta = export(args.config, tmp, args.weights, args.batch_size, args.opset,
                      args.cfg_options, args.sentences, args.images, check=not args.no_check)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as e:
        print(f'pytorch2onnx.py: error: {e}', file=sys.stderr)
        return 2
    except RuntimeError as e:
        if 'opset' not in str(e):
            raise
        print(f'pytorch2onnx.py: error: --opset {args.opset}: {e}', file=sys.stderr)
        return 2
    c = meta.get('check')
    ok = c is None or (c['max_abs_prob_diff'] <= args.atol and c['identical_mask_pixels'] >=
                       args.min_identical and c['identical_int_outputs'] == 1.0)
    if not ok:
        print(f'check FAILED: max abs prob diff {c["max_abs_prob_diff"]:.3g} (allowed '
              f'{args.atol}), identical mask pixels {c["identical_mask_pixels"]:.6f} (needed '
              f'{args.min_identical}); {args.out} is left as it was, the failed export is '
              f'{tmp} (+ {sidecar_path(tmp)})', file=sys.stderr)
        return 1
    os.replace(tmp, args.out)
    os.replace(sidecar_path(tmp), sidecar_path(args.out))  # it names no file path
    print(f'moved to {args.out} (+ {sidecar_path(args.out)})')
    return 0


if __name__ == '__main__':
    sys.exit(main())

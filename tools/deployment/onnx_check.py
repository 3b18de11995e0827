"""Paper-config ONNX check: export, onnxruntime vs PyTorch on real photos, CPU latency.

    python tools/deployment/onnx_check.py CONFIG [--out-dir DIR] [--sentences-per-image 3]
        [--runs 10] [--threads T] [--seed 0] [--realdata ../shared/realdata] [--keep-onnx]
        [--cfg-options k=v ...]

For ``configs/latentvg_beit3.py``, ``configs/latentvg/latentvg_beit3-b_grefcoco.py`` and
``configs/instalign/instalign_swin-b_roberta_grefcoco.py`` (any config of the two methods):

1. the model at the config's size with **random weights** (``torch.manual_seed(--seed)``; no
   pretrained file is read). Tokenizers: the official ``beit3.spm`` is not reachable, so for
   Latent-VG a sentencepiece unigram model (XLM-R layout) is trained on the fly on the real
   RefCOCO/+/g sentences of ``REALDATA/refcoco_sentences/data``
   (``tools/analysis_tools/paper_size_weights.train_sentence_spm``); InstAlign reads the real
   RoBERTa-base tokenizer at ``REALDATA/roberta-base``;
2. ``tools/deployment/pytorch2onnx.py``'s export (TorchScript exporter, opset 17, dynamic
   batch) into ``DIR/<config name>.onnx`` + its sidecar, with its own check on an example batch
   of the two shortest real photo / sentence pairs;
3. the three real COCO photos of ``REALDATA/refcoco_sentences/images`` with their first
   ``--sentences-per-image`` real sentences (``sentences_for_these_images.csv``): every pair
   through the config's test pipeline and data preprocessor at batch 1, the graph run by
   PyTorch (``RefExportModel``) and by onnxruntime (CPU); reported: ``max_abs_prob_diff`` (max
   over every float output and pair), ``identical_mask_pixels`` (share of input-size pixels
   where ``prob > mask_thr`` agrees, over all pairs), ``int_outputs_equal``;
4. the answers at the photos' own size: ``ORTRefPredictor`` on the ``.onnx`` against
   ``RefInferencer`` on the same model: ``answers_identical_mask_pixels``,
   ``answers_same_no_target``, ``answers_max_box_diff_px``, ``answers_max_score_diff``;
5. CPU latency at batch 1 of the network alone (same inputs, ``--threads`` threads for both):
   median of ``--runs`` timed runs after one warm-up, ``pytorch_ms`` (``torch.no_grad``, eval)
   and ``onnxruntime_ms`` (``InferenceSession.run``), and ``speedup``.

Printed as ``key : value`` lines and written to ``DIR/<config name>_report.json``. The ``.onnx`` file
(about 0.9 GB at paper size) is deleted at the end unless ``--keep-onnx``. Exit status 1 when
max_abs_prob_diff > 1e-3 or identical_mask_pixels < 0.999, else 0.
"""
import argparse
import csv
import gc
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))
REALDATA = osp.join(REPO_ROOT, '..', 'shared', 'realdata')
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis_tools'))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import pytorch2onnx  # noqa: E402

ATOL, MIN_IDENTICAL = 1e-3, 0.999


def photo_pairs(realdata: str, per_image: int) -> List[Tuple[str, str]]:
    """``(photo path, sentence)``: the first ``per_image`` sentences of each real photo."""
    folder = osp.join(realdata, 'refcoco_sentences', 'images')
    table = osp.join(folder, 'sentences_for_these_images.csv')
    if not osp.isfile(table):
        raise FileNotFoundError(f'{table} not found (the shared real data, see '
                                '../shared/realdata/README.md)')
    by_image: Dict[str, List[str]] = {}
    with open(table, newline='', encoding='utf-8') as f:
        for row in csv.DictReader(f):
            path = osp.join(folder, 'COCO_train2014_%012d.jpg' % int(row['img_id']))
            by_image.setdefault(path, []).append(row['sent'].strip())
    pairs = [(p, s) for p in sorted(by_image) for s in by_image[p][:per_image]]
    missing = sorted({p for p, _ in pairs if not osp.isfile(p)})
    if missing:
        raise FileNotFoundError(f'photos listed in {table} are missing: {missing}')
    return pairs


def tokenizer_options(cfg, realdata: str, tmp: str, log) -> dict:
    """``--cfg-options`` giving the model a tokenizer without pretrained files (module doc, 1)."""
    model = cfg.model
    if model.get('tokenizer') and 'spm_path' in model.tokenizer:
        import paper_size_weights as psw
        csvs = psw.real_sentence_csvs(realdata)
        if not csvs:
            raise FileNotFoundError(f'no RefCOCO sentence CSVs under {realdata}/refcoco_sentences'
                                    '/data (needed to train the sentencepiece model)')
        spm = osp.join(tmp, 'beit3.spm')
        vocab = min(4000, int(model.backbone.get('vocab_size', 64010)) - 10)
        info = psw.train_sentence_spm(spm, csvs, vocab_size=vocab)
        log(f'tokenizer: sentencepiece unigram model ({info["pieces"]} pieces) trained on '
            f'{info["sentences"]} real RefCOCO/+/g sentences (the official beit3.spm is not '
            'reachable)')
        return {'model.tokenizer.spm_path': spm, 'model.pretrained': None}
    if model.get('text_encoder') is not None:
        rob = osp.join(realdata, 'roberta-base')
        if not osp.isdir(rob):
            raise FileNotFoundError(f'{rob} not found (the real RoBERTa-base tokenizer)')
        log(f'tokenizer: the real RoBERTa-base tokenizer at {rob}')
        return {'model.text_encoder.tokenizer_dir': rob, 'model.text_encoder.pretrained': None}
    raise ValueError('onnx_check: the config has neither model.tokenizer.spm_path (Latent-VG) '
                     'nor model.text_encoder (InstAlign)')


def median_ms(fn, runs: int) -> float:
    """Median wall time of ``fn()`` in ms over ``runs`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def check(config: str, out_dir: str, per_image: int = 3, runs: int = 10, threads: int = 1,
          seed: int = 0, realdata: str = REALDATA, keep_onnx: bool = False,
          cfg_options: dict = None, log=print) -> dict:
    """Steps 1-5 of the module docstring; returns the report dict."""
    from mmrefer.apis import ORTRefPredictor, RefInferencer, resolve_config
    from mmrefer.apis.onnx_predictor import ort_session
    from mmrefer.models.deployment import INPUT_NAMES, RefExportModel
    torch.set_num_threads(threads)
    cfg = resolve_config(config)
    name = osp.splitext(osp.basename(getattr(cfg, 'filename', None) or str(config)))[0]
    os.makedirs(out_dir, exist_ok=True)
    onnx_file = osp.join(out_dir, f'{name}.onnx')
    pairs = photo_pairs(realdata, per_image)
    report = dict(config=config, date=time.strftime('%Y-%m-%d'), threads=threads, seed=seed,
                  pairs=len(pairs), torch=torch.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        opts = tokenizer_options(cfg, realdata, tmp, log)
        opts.update(cfg_options or {})
        torch.manual_seed(seed)
        t = time.perf_counter()
        inferencer = RefInferencer(cfg, weights=None, device='cpu', batch_size=1,
                                   cfg_options=opts)
        report['params_total'] = sum(p.numel() for p in inferencer.model.parameters())
        log(f'built {name}: {report["params_total"] / 1e6:.1f} M parameters, random weights '
            f'({time.perf_counter() - t:.1f} s)')
        example = sorted(pairs, key=lambda p: len(p[1]))[:2]  # the shortest: padded tokens
        meta = pytorch2onnx.export_inferencer(
            inferencer, onnx_file, config if isinstance(config, str) else None, batch_size=2,
            images=[p for p, _ in example], sentences=[s for _, s in example],
            num_threads=threads, verbose=True)
        report.update(export_s=meta['export_s'], onnx_mb=round(os.path.getsize(onnx_file) / 2**20),
                      input_size=meta['input_size'], text_length=meta['text_length'],
                      example_check=meta['check'])
        wrapper = RefExportModel(inferencer.model)
        sess = ort_session(onnx_file, 'cpu', threads)
        names = list(wrapper.output_names)
        diff, same, total, ints_equal, lat_inputs = 0.0, 0, 0, True, None
        for path, sentence in pairs:
            inputs = pytorch2onnx.example_batch(inferencer, [path], [sentence])
            lat_inputs = lat_inputs or inputs
            c = pytorch2onnx.compare_session(wrapper, sess, inputs, meta['mask_thr'])
            n = inputs[0].shape[0] * inputs[0].shape[-2] * inputs[0].shape[-1]  # prob's pixels
            diff = max(diff, c['max_abs_prob_diff'])
            same += c['identical_mask_pixels'] * n
            total += n
            ints_equal &= c['identical_int_outputs'] == 1.0
        report.update(max_abs_prob_diff=diff, identical_mask_pixels=same / total,
                      int_outputs_equal=bool(ints_equal))
        # the answers at the photos' own size, through the ORT predictor
        predictor = ORTRefPredictor(onnx_file, batch_size=1, num_threads=threads)
        a_same, a_total, nt_same, box_diff, score_diff = 0, 0, True, 0.0, 0.0
        for path, sentence in pairs:
            a, b = inferencer(path, sentence)[0], predictor(path, sentence)[0]
            a_same += int((a['mask'] == b['mask']).sum())
            a_total += a['mask'].size
            nt_same &= a['no_target'] == b['no_target']
            box_diff = max(box_diff, float(np.abs(np.subtract(a['box'], b['box'])).max()))
            score_diff = max(score_diff, abs(a['score'] - b['score']))
        report.update(answers_identical_mask_pixels=a_same / a_total,
                      answers_same_no_target=bool(nt_same), answers_max_box_diff_px=box_diff,
                      answers_max_score_diff=score_diff)
        # latency at batch 1 (the network alone)
        feeds = {k: v.numpy() for k, v in zip(INPUT_NAMES, lat_inputs)}

        def torch_run():
            with torch.no_grad():
                wrapper(*lat_inputs)

        report['pytorch_ms'] = round(median_ms(torch_run, runs), 1)
        report['onnxruntime_ms'] = round(median_ms(lambda: sess.run(names, feeds), runs), 1)
        report['speedup'] = round(report['pytorch_ms'] / report['onnxruntime_ms'], 2)
        report['runs'] = runs
        del sess, predictor
        gc.collect()
    report['passed'] = bool(report['max_abs_prob_diff'] <= ATOL
                            and report['identical_mask_pixels'] >= MIN_IDENTICAL)
    if not keep_onnx:
        os.remove(onnx_file)
    with open(osp.join(out_dir, f'{name}_report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    return report


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='ONNX export + onnxruntime check of a paper config '
                                '(random weights, real photos), with CPU latency')
    p.add_argument('config', help='config file or name')
    p.add_argument('--out-dir', default=osp.join(REPO_ROOT, 'work_dirs', 'onnx_check'),
                   help='folder of the .onnx, its sidecar and the report JSON')
    p.add_argument('--sentences-per-image', type=int, default=3,
                   help='real sentences per photo (3 photos)')
    p.add_argument('--runs', type=int, default=10, help='timed runs per latency (median)')
    p.add_argument('--threads', type=int, default=1, help='CPU threads of torch and onnxruntime')
    p.add_argument('--seed', type=int, default=0, help='random weights seed')
    p.add_argument('--realdata', default=REALDATA, help='the shared real-data folder')
    p.add_argument('--keep-onnx', action='store_true', help='keep the .onnx file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, key=value')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for what, v in (('--sentences-per-image', args.sentences_per_image), ('--runs', args.runs),
                    ('--threads', args.threads)):
        if v < 1:
            print(f'onnx_check.py: error: {what} must be >= 1, got {v}', file=sys.stderr)
            return 2
    report = check(args.config, args.out_dir, args.sentences_per_image, args.runs, args.threads,
                   args.seed, args.realdata, args.keep_onnx, args.cfg_options)
    for k, v in report.items():
        print(f'{k} : {v}')
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())

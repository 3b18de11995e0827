"""Paper-size check on CPU: official-layout weights load, train, overfit one batch and predict.

    python tools/analysis_tools/paper_size_check.py CONFIG [--iters 3] [--overfit-iters 30]
        [--batch-size 2] [--val-samples 4] [--real-photos N] [--out FILE.json]
        [--work-dir DIR] [--threads T] [--seed 0] [--cfg-options k=v ...]

For a paper config (``configs/latentvg_beit3.py``,
``configs/latentvg/latentvg_beit3-b_grefcoco.py``,
``configs/instalign/instalign_swin-b_roberta_grefcoco.py``; shrunk ones work too):

1. writes random weights in each pretrained part's **official release layout** to a temporary
   directory (``paper_size_weights.py``): the BEiT-3 ``beit3_base_indomain_patch16_224.pth``
   (224 position table, the 491 official keys incl. ``vision_embed.mask_token``, plus MLM / MIM
   pretraining heads), the Swin ``swin_base_patch4_window12_384_22k.pth`` (official key names,
   ``attn_mask`` buffers, 22K classifier), converted by ``tools/model_converters/
   swin_to_mmrefer.py`` as a user runs it, and a RoBERTa-base ``save_pretrained`` directory
   (``RobertaForMaskedLM`` dump with the real config and tokenizer files from
   ``../shared/realdata/roberta-base``). The official ``beit3.spm`` is not reachable: a
   sentencepiece unigram model in XLM-R layout is trained on the real RefCOCO/+/g sentences of
   ``../shared/realdata/refcoco_sentences`` instead;
2. passes them with the ``--cfg-options`` keys of docs/get_started.md ("Pretrained weights"):
   ``model.pretrained``, ``model.tokenizer.spm_path`` (Latent-VG);
   ``model.backbone.init_cfg.checkpoint``, ``model.text_encoder.pretrained``,
   ``model.text_encoder.tokenizer_dir`` (InstAlign). Before the first step the model's weights
   are compared with the files: every file key must be loaded with the file's value, or be in
   :data:`SKIPPED_KEYS`; every model key must come from the file, or be in
   :data:`NEW_IN_MODEL`. Anything else fails the run with the list;
3. trains ``--iters`` iterations with mmengine's ``Runner`` (``IterBasedTrainLoop``, the
   config's optimizer, schedule, pipelines and dataset types) on SynthRef written at COCO-like
   sizes (``make_synthref(image_sizes=SYNTHREF_COCO_IMAGE_SIZES)``, cached under the work dir;
   ``refcoco+/`` and ``refcocog/`` aliases of its RefCOCO files serve the combined-RefCOCO
   ``ConcatDataset``), batch ``--batch-size``, no worker processes; then the config's own
   evaluator on the first ``--val-samples`` val samples;
4. overfits one fixed batch: the first ``--batch-size`` training samples (first part of a
   ``ConcatDataset``), no shuffle, ``Random*`` transforms removed, ``--overfit-iters``
   iterations through a new ``Runner`` at the config's base learning rate **with the warm-up
   and decay removed** (constant lr). The model keeps its own training-mode randomness
   (dropout, drop path, Latent-VG's latent dropout and Gumbel noise);
5. answers the real COCO photos of ``../shared/realdata/refcoco_sentences/images`` with their
   real sentences through :class:`mmrefer.apis.RefInferencer` (the same config, the pretrained
   files loaded by ``model.init_weights()``): one answer per sentence, every mask at the
   photo's own size.

Reported (``key : value`` lines, and JSON with ``--out``): ``config``, ``params_total``,
``train_s_per_iter`` (median of the ``--iters`` run's iterations after the first, data loading
included; ``overfit_s_per_iter`` the same over the overfit run), ``peak_rss_mb``
(``ru_maxrss`` of this process, the weight writers included), ``loss_first`` / ``loss_last`` /
``overfit_loss_ratio`` / ``overfit_curve`` / ``loss_terms_first`` / ``loss_terms_last``
(overfit run, total loss of every iteration), ``nonfinite`` (NaN/inf in a loss or a gradient
norm of either run: the run fails), ``params_without_grad`` (trainable parameters whose
``.grad`` stayed None or exactly zero in **every** overfit iteration, each with its reason from
:data:`NO_GRAD_REASONS`, else ``unexplained``), ``skipped_keys`` / ``new_in_model`` per
pretrained part, ``val_metrics``, ``infer_s_per_img`` (val loop time per sample),
``real_photos_*``, for InstAlign ``merged_logit_absmax_first`` / ``_last`` (largest |merged
logit| of Eq. 8 per decoder block, first and last overfit iteration), ``merged_logit_absmax_curve``
and ``merged_bce_sum_curve`` (per overfit iteration: the largest over blocks, the merged BCE summed
over blocks), ``load_avg_1min`` (the machine's load at the start and the end: other jobs
slow every timing down). The exit code is 1 when a check failed (key mismatch, a value not
loaded, a converter failure, non-finite numbers, wrong answers on the photos); missing the
overfit target (ratio <= 0.5) only sets ``overfit_target_met: false``.
"""
import argparse
import copy
import csv
import gc
import json
import os
import os.path as osp
import re
import resource
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import torch

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, HERE)
import paper_size_weights as psw  # noqa: E402

REALDATA = osp.join(REPO_ROOT, '..', 'shared', 'realdata')
OVERFIT_TARGET = 0.5

#: file keys that are allowed not to be loaded, per part: (regex on the file key, reason)
SKIPPED_KEYS = {
    'beit3': [
        (r'^mlm_head\.', 'BEiT-3 pretraining head (masked language modelling)'),
        (r'^mim_head\.', 'BEiT-3 pretraining head (masked image modelling)'),
        (r'^(vision_head|language_head|logit_scale|pooler|head|fc_norm)\b',
         'BEiT-3 fine-tuning task head'),
        (r'^beit3\.vision_embed\.mask_token$',
         'MIM mask token: only masked-image-modelling pretraining uses it; not built'),
        (r'^beit3\.vision_embed\.cls_token$',
         'visual CLS: the subject token takes its slot (replace_visual_cls); not built'),
    ],
    'swin': [
        (r'^head\.', 'ImageNet-22K classifier (dropped by the converter)'),
        (r'attn_mask$', 'shifted-window mask buffer; mmdet recomputes it for the input size'),
        (r'^norm\.', 'final norm of the classifier (dropped by the converter, as by mmdet, the '
                     'official detection backbone and ReLA)'),
    ],
    'roberta': [
        (r'^lm_head\.', 'RoBERTa masked-LM head (pretraining only)'),
        (r'^roberta\.pooler\.', 'RoBERTa pooler (InstAlign builds the encoder without it)'),
    ],
}
#: model keys that no official file holds, per part: (regex on the model key, reason)
NEW_IN_MODEL = {
    'beit3': [
        (r'^encoder\.layers\.\d+\.latent\.', 'Latent-VG latent-expression LayerNorms / FFN'),
        (r'^encoder\.latent_layer_norm\.', 'Latent-VG latent-expression output LayerNorms'),
    ],
    'swin': [
        (r'^norm[0-3]\.', 'mmdet output norms of the four stages (fresh, as in the official '
                          'detection backbone and ReLA)'),
    ],
    'roberta': [
        (r'position_ids$', 'position-id buffer rebuilt by transformers'),
    ],
}
#: parameters allowed to get no gradient in the overfit run: (regex on the name, reason)
NO_GRAD_REASONS = [
    (r'^backbone\.vision_embed\.mask_token$',
     'BEiT-3 MIM mask token: used only by masked-image-modelling pretraining'),
    (r'^backbone\.vision_embed\.cls_token$',
     'BEiT-3 visual CLS: replaced by the subject token (replace_visual_cls=True)'),
    (r'^text_encoder\.model\.pooler\.', 'RoBERTa pooler: InstAlign uses the word features'),
]


# ---------------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', help='config file')
    p.add_argument('--iters', type=int, default=3, help='training iterations (timed run)')
    p.add_argument('--overfit-iters', type=int, default=30,
                   help='iterations on one fixed batch')
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--val-samples', type=int, default=4, help='val samples evaluated')
    p.add_argument('--real-photos', type=int, default=None,
                   help='at most this many real sentences (default all 41)')
    p.add_argument('--out', default=None, help='write the report as JSON here')
    p.add_argument('--work-dir', default=None,
                   help='default work_dirs/paper_size_check/<config name>')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--realdata', default=REALDATA, help='the shared real-data folder')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='override config settings (applied before the weights are written, '
                   'so a shrunk architecture gets weights of its own shape)')
    args = p.parse_args(argv)
    for k in ('iters', 'overfit_iters', 'batch_size', 'val_samples'):
        if getattr(args, k) < 1:
            p.error(f'--{k.replace("_", "-")} must be >= 1, got {getattr(args, k)}')
    if args.real_photos is not None and args.real_photos < 0:
        p.error(f'--real-photos must be >= 0, got {args.real_photos}')
    return args


# ---------------------------------------------------------------------------------- key tables
def _reason(key: str, table) -> Optional[str]:
    for pattern, why in table:
        if re.search(pattern, key):
            return why
    return None


def fold_keys(keys) -> List[str]:
    """``['encoder.layers.*.latent.*.ffn.fc.weight x24', ...]``: indices folded, counted."""
    cnt = OrderedDict()
    for k in keys:
        f = re.sub(r'\.\d+(?=\.|$)', '.*', k)
        cnt[f] = cnt.get(f, 0) + 1
    return [f'{k} x{n}' if n > 1 else k for k, n in cnt.items()]


def compare_part(part: str, file_sd: Dict[str, torch.Tensor], model_sd: Dict[str, torch.Tensor],
                 to_model_key, resized=(), permuted=()) -> dict:
    """Compare a pretrained file with the loaded model part.

    Args:
        part: ``'beit3'``, ``'swin'`` or ``'roberta'`` (selects the allowed-key tables).
        file_sd: the file's tensors (official key names).
        model_sd: the model part's state dict after loading.
        to_model_key: official key -> model key (None: the key has no model counterpart).
        resized: model keys loaded through a resize (only the shape's trailing dim and the
            first rows are compared: BEiT-3's vision position table).
        permuted: model keys loaded through a fixed permutation (compared as sorted values:
            Swin's patch-merging unfold order).

    Returns:
        dict: ``loaded`` (count), ``skipped`` (file key -> reason), ``new_in_model`` (model key
        -> reason), and the failures ``unexpected`` (file keys neither loaded nor allowed),
        ``missing`` (model keys neither loaded nor allowed) and ``not_loaded`` (keys whose
        model value differs from the file's).
    """
    rep = dict(file_keys=len(file_sd), loaded=0, skipped=OrderedDict(),
               new_in_model=OrderedDict(), unexpected=[], missing=[], not_loaded=[])
    hit = set()
    for k, v in file_sd.items():
        mk = to_model_key(k)
        if mk is None or mk not in model_sd:
            why = _reason(k, SKIPPED_KEYS[part])
            if why is None:
                rep['unexpected'].append(k)
            else:
                rep['skipped'][k] = why
            continue
        hit.add(mk)
        m = model_sd[mk].detach().cpu()
        v = v.detach().cpu()
        if mk in resized:
            same = (m.shape[-1] == v.shape[-1] and
                    torch.equal(m[:3].to(v.dtype), v[:3]))
        elif mk in permuted:
            same = m.shape == v.shape and torch.equal(m.flatten().sort()[0].to(v.dtype),
                                                      v.flatten().sort()[0])
        else:
            same = m.shape == v.shape and torch.equal(m.to(v.dtype), v)
        if same:
            rep['loaded'] += 1
        else:
            rep['not_loaded'].append(mk)
    for mk in model_sd:
        if mk in hit:
            continue
        why = _reason(mk, NEW_IN_MODEL[part])
        if why is None:
            rep['missing'].append(mk)
        else:
            rep['new_in_model'][mk] = why
    return rep


# ------------------------------------------------------------------------------------ weights
def _model_part(model_cfg, name):
    t = model_cfg.get(name, {}).get('type', '') if model_cfg.get(name) else ''
    return t.split('.')[-1]


def detect_parts(cfg) -> List[str]:
    """Pretrained parts of the config's model: ``beit3``, ``swin``, ``roberta``."""
    parts = []
    backbone = _model_part(cfg.model, 'backbone')
    if backbone == 'BEiT3':
        parts.append('beit3')
    elif backbone in ('SwinTransformer', 'SDPASwinTransformer'):
        parts.append('swin')
    else:
        raise ValueError(f'paper_size_check: no official-layout writer for backbone type '
                         f'{backbone!r} (model.backbone.type); BEiT3, SwinTransformer and '
                         'SDPASwinTransformer only')
    if _model_part(cfg.model, 'text_encoder') == 'HFTextEncoder':
        mt = cfg.model.text_encoder.get('model_type', 'roberta')
        if mt != 'roberta':
            raise ValueError(f'paper_size_check: model.text_encoder.model_type={mt!r}; only '
                             'roberta has a writer')
        parts.append('roberta')
    return parts


def write_weights(cfg, parts, tmp: str, realdata: str, seed: int, log) -> dict:
    """Write each part's official-layout files under ``tmp``; returns per part the paths and
    the ``--cfg-options`` that docs/get_started.md gives for them."""
    out = {}
    if 'beit3' in parts:
        bb = cfg.model.backbone
        kw = dict(arch=bb.get('arch', 'base'), vocab_size=bb.get('vocab_size', 64010),
                  max_text_len=bb.get('max_text_len', 1024), img_size=224,
                  patch_size=bb.get('patch_size', 16), in_channels=bb.get('in_channels', 3))
        path = osp.join(tmp, 'beit3_base_indomain_patch16_224.pth')
        t = time.time()
        keys = psw.write_beit3_official(path, seed=seed, **kw)
        spm = osp.join(tmp, 'beit3.spm')
        csvs = psw.real_sentence_csvs(realdata)
        if not csvs:
            raise FileNotFoundError(f'no RefCOCO sentence CSVs under {realdata}/refcoco_sentences'
                                    '/data (needed to train the BEiT-3 sentencepiece model)')
        vocab = min(4000, int(kw['vocab_size']) - 10)
        spm_info = psw.train_sentence_spm(spm, csvs, vocab_size=vocab)
        log(f'beit3: wrote {path} ({len(keys)} keys: {len(keys) - 2} official + 2 pretraining '
            f'heads) in {time.time() - t:.1f}s')
        log(f'beit3 tokenizer: the official beit3.spm is not reachable; trained a sentencepiece '
            f'unigram model (XLM-R layout, {spm_info["pieces"]} pieces) on '
            f'{spm_info["sentences"]} real RefCOCO/+/g sentences: {spm}')
        out['beit3'] = dict(file=path, spm=spm, spm_info=spm_info,
                            cfg_options={'model.pretrained': path,
                                         'model.tokenizer.spm_path': spm})
    if 'swin' in parts:
        bb = cfg.model.backbone
        kw = dict(embed_dims=bb.get('embed_dims', 96), depths=tuple(bb.get('depths', (2, 2, 6, 2))),
                  num_heads=tuple(bb.get('num_heads', (3, 6, 12, 24))),
                  window_size=bb.get('window_size', 7),
                  pretrain_img_size=bb.get('pretrain_img_size', 224),
                  patch_size=bb.get('patch_size', 4), in_channels=bb.get('in_channels', 3),
                  mlp_ratio=bb.get('mlp_ratio', 4))
        t = time.time()
        converter_error = None
        src = osp.join(tmp, 'swin_base_patch4_window12_384_22k.pth')
        keys = psw.write_swin_official(src, seed=seed, **kw)
        if bb.get('convert_weights', False):
            dst = src  # mmdet converts the official file itself
        else:
            dst = osp.join(tmp, 'swin_base_patch4_window12_384_22k_mmdet.pth')
            sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'model_converters'))
            import swin_to_mmrefer
            argv = [src, dst]
            arch = {(128, (2, 2, 18, 2)): 'swin-b', (192, (2, 2, 18, 2)): 'swin-l',
                    (96, (2, 2, 6, 2)): 'swin-t'}.get((kw['embed_dims'], kw['depths']))
            argv += ['--arch', arch] if arch else ['--no-check']
            log(f'swin: python tools/model_converters/swin_to_mmrefer.py {" ".join(argv)}')
            try:
                swin_to_mmrefer.main(argv)
            except (KeyError, ValueError) as e:
                # a user would retry without the check; the failure stays in the report
                converter_error = f'swin_to_mmrefer.py {" ".join(argv)} failed: {e}'
                log(converter_error + '; retrying with --no-check')
                swin_to_mmrefer.main([src, dst, '--no-check'])
        log(f'swin: wrote {src} ({len(keys)} keys) in {time.time() - t:.1f}s')
        out['swin'] = dict(file=src, converted=dst, converter_error=converter_error,
                           cfg_options={'model.backbone.init_cfg.checkpoint': dst})
    if 'roberta' in parts:
        rob = osp.join(realdata, 'roberta-base')
        t = time.time()
        d = osp.join(tmp, 'roberta-base')
        keys = psw.write_roberta_dir(d, osp.join(rob, 'config.json'), rob,
                                     arch=dict(cfg.model.text_encoder.get('arch') or {}),
                                     seed=seed)
        log(f'roberta: wrote {d} (RobertaForMaskedLM save_pretrained, {len(keys)} tensors, real '
            f'config.json and tokenizer files) in {time.time() - t:.1f}s')
        out['roberta'] = dict(file=d, cfg_options={'model.text_encoder.pretrained': d,
                                                   'model.text_encoder.tokenizer_dir': d})
    return out


def _unwrap(model):
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


def check_beit3(backbone, path: str) -> dict:
    """:func:`compare_part` of an official BEiT-3 file and the loaded ``BEiT3`` backbone (the
    vision position table is resized on loading: its shape and 3 leading rows are compared)."""
    from mmrefer.utils import safe_torch_load
    sd = pick_state_dict(safe_torch_load(path, map_location='cpu'))
    return compare_part('beit3', sd, backbone.state_dict(),
                        lambda k: k[len('beit3.'):] if k.startswith('beit3.') else None,
                        resized={'encoder.embed_positions.A.weight'})


def check_swin(backbone, path: str) -> dict:
    """:func:`compare_part` of an official Swin file (before conversion) and the loaded mmdet
    ``SwinTransformer`` (patch-merging tensors compared up to the unfold permutation)."""
    sd = pick_state_dict(torch.load(path, map_location='cpu', weights_only=True))
    own = backbone.state_dict()
    return compare_part('swin', sd, own, swin_official_to_mmdet,
                        permuted={k for k in own if '.downsample.' in k})


def check_roberta(hf_model, hf_dir: str) -> dict:
    """:func:`compare_part` of a ``RobertaForMaskedLM`` directory and the loaded
    ``RobertaModel`` (``HFTextEncoder.model``)."""
    return compare_part('roberta', psw.read_weights(hf_dir), hf_model.state_dict(),
                        lambda k: k[len('roberta.'):] if k.startswith('roberta.') else None)


def pick_state_dict(ckpt) -> Dict[str, torch.Tensor]:
    """The state dict of an official checkpoint (``model`` / ``module`` / ``state_dict``)."""
    for key in ('model', 'module', 'state_dict'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def check_loaded(model, weights: dict) -> dict:
    """Per part, the comparison of its files with ``model`` after ``init_weights``."""
    reports = {}
    if 'beit3' in weights:
        reports['beit3'] = check_beit3(model.backbone, weights['beit3']['file'])
    if 'swin' in weights:
        reports['swin'] = check_swin(model.backbone, weights['swin']['file'])
    if 'roberta' in weights:
        reports['roberta'] = check_roberta(model.text_encoder.model, weights['roberta']['file'])
    return reports


def swin_official_to_mmdet(key: str) -> Optional[str]:
    """Official Swin key -> the mmdet ``SwinTransformer`` key it must land in (None: no
    counterpart). Written from the published renaming (../shared/papers/backbones.md, section
    3.1), independently of the converter, to check where each official tensor ended up."""
    if key.startswith(('head.', 'norm.')):  # the classifier and its input norm
        return None
    k = key.replace('patch_embed.proj.', 'patch_embed.projection.')
    m = re.match(r'layers\.(\d+)\.(.*)', k)
    if m:
        rest = m.group(2)
        rest = rest.replace('.attn.', '.attn.w_msa.').replace('.mlp.fc1.', '.ffn.layers.0.0.')
        rest = rest.replace('.mlp.fc2.', '.ffn.layers.1.')
        k = f'stages.{m.group(1)}.{rest}'
    return k


# ------------------------------------------------------------------------------------- hooks
def _hooks():
    from mmengine.hooks import Hook

    class RecorderHook(Hook):
        """Per iteration: wall time, every logged loss, the gradient norm before clipping, and
        which parameters got a non-zero gradient; val loop time and metrics."""
        priority = 'VERY_LOW'

        def __init__(self, weights=None):
            self.weights = weights
            self.load_report = None
            self.iters, self.with_grad, self.handles = [], set(), []
            self.val_time, self.val_samples, self.val_metrics = 0.0, 0, None
            self._sq, self._nonfinite_grads = 0.0, []
            self._merged = []  # InstAlign: max |merged logit| of each aggregation call

        def _merged_hook(self, module, args, output):
            if module.training:
                self._merged.append(float(output.detach().float().abs().max()))

        def before_train(self, runner):
            model = _unwrap(runner.model)
            if self.weights is not None:
                self.load_report = check_loaded(model, self.weights)
            for name, p in model.named_parameters():
                if p.requires_grad:
                    self.handles.append(p.register_post_accumulate_grad_hook(
                        self._grad_hook(name)))
            from mmrefer.models.instalign import AdaptiveInstanceAggregation
            for module in model.modules():  # Eq. 8's merged logits, one call per block
                if isinstance(module, AdaptiveInstanceAggregation):
                    self.handles.append(module.register_forward_hook(self._merged_hook))
            self._t = time.perf_counter()

        def _grad_hook(self, name):
            def hook(p):
                n = float(p.grad.detach().float().norm())
                if n != n or n in (float('inf'), float('-inf')):
                    self._nonfinite_grads.append(name)
                elif n > 0:
                    self.with_grad.add(name)
                self._sq += n * n
            return hook

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            now = time.perf_counter()
            logs = {k: float(v) for k, v in (outputs or {}).items()
                    if isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)}
            self.iters.append(dict(time=now - self._t, logs=logs, grad_norm=self._sq**0.5,
                                   nonfinite_grads=list(self._nonfinite_grads),
                                   merged_absmax=list(self._merged)))
            self._sq, self._nonfinite_grads, self._merged, self._t = 0.0, [], [], now

        def after_train(self, runner):
            for h in self.handles:
                h.remove()
            self.handles = []

        def before_val_iter(self, runner, batch_idx, data_batch=None):
            self._tv = time.perf_counter()

        def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.val_time += time.perf_counter() - self._tv
            self.val_samples += len(outputs or [])

        def after_val_epoch(self, runner, metrics=None):
            self.val_metrics = {k: float(v) if isinstance(v, (int, float)) else v
                                for k, v in (metrics or {}).items()}

    return RecorderHook


# ---------------------------------------------------------------------------------- the runs
def synthref_coco(root: str, log) -> str:
    """SynthRef at COCO-like sizes under ``root``, written once
    (:func:`mmrefer.datasets.synthetic.make_synthref_coco`, with the combined-RefCOCO aliases)."""
    from mmrefer.datasets.synthetic import SYNTHREF_COCO_IMAGE_SIZES, make_synthref_coco
    t = time.time()
    fresh = not osp.isfile(osp.join(root, '.complete'))
    make_synthref_coco(root)
    if fresh:
        log(f'SynthRef at COCO-like sizes {SYNTHREF_COCO_IMAGE_SIZES} written to {root} in '
            f'{time.time() - t:.1f}s')
    return root


def _drop_random(pipeline) -> list:
    return [s for s in pipeline if not str(s.get('type', '')).split('.')[-1].startswith('Random')]


def run_config(base_cfg, work_dir: str, name: str, iters: int, batch_size: int, seed: int,
               weights=None, overfit: bool = False, val_samples: int = 0):
    """Train ``iters`` iterations with ``Runner.from_cfg``; returns the recorder hook and the
    number of parameters."""
    from mmengine.runner import Runner

    from mmrefer.datasets.synthetic import dataset_leaves
    cfg = copy.deepcopy(base_cfg)
    cfg.work_dir = osp.join(work_dir, name)
    cfg.experiment_name = f'{name}_{int(time.time() * 1000)}'
    if cfg.get('visualizer'):
        cfg.visualizer.name = cfg.experiment_name  # one visualizer instance per Runner
    cfg.randomness = dict(seed=seed)
    cfg.launcher = 'none'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(key):
            cfg[key].num_workers = 0
            cfg[key].persistent_workers = False
            cfg[key].batch_size = batch_size
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    if overfit:
        ds = copy.deepcopy(dataset_leaves(cfg.train_dataloader.dataset)[0])
        ds.indices = batch_size
        ds.pipeline = _drop_random(ds.pipeline)
        cfg.train_dataloader.dataset = ds
        # infinite: a restarted finite loader makes mmengine sleep 2 s per epoch (= per step)
        cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=False)
        cfg.param_scheduler = []  # the config's base lr, no warm-up, no decay
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    elif val_samples:
        cfg.val_dataloader.dataset.indices = val_samples
        cfg.val_cfg = dict(type='ValLoop')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1, save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    runner = Runner.from_cfg(cfg)
    recorder = _hooks()(weights)
    runner.register_hook(recorder)
    runner.train()
    model = _unwrap(runner.model)
    n_params = sum(p.numel() for p in model.parameters())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    base_lr = [g['lr'] for g in runner.optim_wrapper.optimizer.param_groups]
    del runner, model
    gc.collect()
    return recorder, n_params, names, base_lr


def real_photos(cfg, realdata: str, limit: Optional[int], batch_size: int) -> dict:
    """Answer the real photos' real sentences with RefInferencer (pretrained files loaded by
    ``init_weights``); returns timing, counts and the failures."""
    from mmrefer.apis import RefInferencer
    img_dir = osp.join(realdata, 'refcoco_sentences', 'images')
    table = osp.join(img_dir, 'sentences_for_these_images.csv')
    if not osp.isfile(table):
        raise FileNotFoundError(f'{table} not found (real photos + sentences, see '
                                f'{realdata}/README.md)')
    by_img = OrderedDict()
    with open(table, newline='', encoding='utf-8') as f:
        for row in csv.DictReader(f):
            by_img.setdefault(int(row['img_id']), []).append(row['sent'])
    inferencer = RefInferencer(copy.deepcopy(cfg), weights=None, device='cpu',
                               batch_size=batch_size)
    inferencer.model.init_weights()
    inferencer.model.eval()
    import cv2
    n, failures, no_target, secs = 0, [], 0, 0.0
    for img_id, sents in by_img.items():
        if limit is not None:
            sents = sents[:max(0, limit - n)]
        if not sents:
            break
        path = osp.join(img_dir, 'COCO_train2014_%012d.jpg' % img_id)
        h, w = cv2.imread(path).shape[:2]
        t = time.perf_counter()
        answers = inferencer(path, sents)
        secs += time.perf_counter() - t
        if len(answers) != len(sents):
            failures.append(f'{path}: {len(answers)} answers for {len(sents)} sentences')
        for s, a in zip(sents, answers):
            if a['mask'].shape != (h, w):
                failures.append(f'{path} {s!r}: mask {a["mask"].shape} != photo {(h, w)}')
            if not all(map(lambda v: v == v and abs(v) != float('inf'), a['box'])):
                failures.append(f'{path} {s!r}: non-finite box {a["box"]}')
            no_target += bool(a['no_target'])
        n += len(sents)
    del inferencer
    gc.collect()
    return dict(real_photos_images=len(by_img), real_photos_sentences=n,
                real_photos_no_target=no_target,
                real_photos_s_per_sentence=round(secs / max(n, 1), 3),
                real_photos_failures=failures)


# ------------------------------------------------------------------------------------- main
def _fmt(v):
    if isinstance(v, float):
        return f'{v:.4g}'
    if isinstance(v, list) and v and all(isinstance(x, float) for x in v):
        return '[' + ', '.join(f'{x:.4g}' for x in v) + ']'
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.config import Config

    from mmrefer.datasets.synthetic import point_config_at_synthref
    from mmrefer.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    def log(msg):
        print(f'[paper_size_check] {msg}', flush=True)

    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = args.work_dir or osp.join('work_dirs', 'paper_size_check', name)
    os.makedirs(work_dir, exist_ok=True)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    parts = detect_parts(cfg)
    report = OrderedDict(config=args.config, date=time.strftime('%Y-%m-%d'),
                         threads=torch.get_num_threads(), batch_size=args.batch_size,
                         iters=args.iters, overfit_iters=args.overfit_iters, parts=parts)
    failures = []
    t_all = time.time()
    load_start = os.getloadavg()[0]  # other jobs on the machine slow every timing down
    with tempfile.TemporaryDirectory(prefix='paper_size_weights_') as tmp:
        weights = write_weights(cfg, parts, tmp, args.realdata, args.seed, log)
        opts = {k: v for w in weights.values() for k, v in w['cfg_options'].items()}
        log('loading them as a user does: --cfg-options ' +
            ' '.join(f'{k}={v}' for k, v in opts.items()))
        cfg.merge_from_dict(opts)
        if weights.get('swin', {}).get('converter_error'):
            failures.append(weights['swin']['converter_error'])
        if 'beit3' in weights:
            report['beit3_tokenizer'] = (
                f'sentencepiece unigram, {weights["beit3"]["spm_info"]["pieces"]} pieces, '
                f'trained on {weights["beit3"]["spm_info"]["sentences"]} real RefCOCO/+/g '
                'sentences (the official beit3.spm is not reachable)')
        point_config_at_synthref(cfg, synthref_coco(osp.join(work_dir, 'synthref_coco'), log))
        # point_config_at_synthref also re-points the tokenizer at SynthRef's: put ours back
        cfg.merge_from_dict(opts)

        # 1. load + train --iters + val
        log(f'training {args.iters} iterations (batch {args.batch_size})')
        rec, n_params, names, lrs = run_config(cfg, work_dir, 'train', args.iters,
                                               args.batch_size, args.seed, weights=weights,
                                               val_samples=args.val_samples)
        report['params_total'] = n_params
        report['params_trainable'] = len(names)
        times = [it['time'] for it in rec.iters]
        report['train_s_per_iter'] = round(statistics.median(times[1:] or times), 2)
        report['train_losses'] = [round(it['logs'].get('loss', float('nan')), 4)
                                  for it in rec.iters]
        loads = rec.load_report or {}
        report['skipped_keys'] = {p: dict(r['skipped']) for p, r in loads.items()}
        report['new_in_model'] = {p: fold_keys(r['new_in_model']) for p, r in loads.items()}
        report['loaded_keys'] = {p: f'{r["loaded"]} of {r["file_keys"]} file keys'
                                 for p, r in loads.items()}
        report['unexpected_keys'] = {p: fold_keys(r['unexpected']) for p, r in loads.items()}
        report['missing_keys'] = {p: fold_keys(r['missing']) for p, r in loads.items()}
        report['not_loaded_keys'] = {p: fold_keys(r['not_loaded']) for p, r in loads.items()}
        for p, r in loads.items():
            for what in ('unexpected', 'missing', 'not_loaded'):
                if r[what]:
                    failures.append(f'{p}: {len(r[what])} {what} keys: {fold_keys(r[what])}')
        report['val_samples'] = rec.val_samples
        report['val_metrics'] = rec.val_metrics
        report['infer_s_per_img'] = round(rec.val_time / max(rec.val_samples, 1), 3)
        nonfinite = _nonfinite(rec.iters, 'train')

        # 2. overfit one batch
        log(f'overfitting one batch of {args.batch_size} for {args.overfit_iters} iterations at '
            'the base learning rate (warm-up and decay removed)')
        rec2, _, names2, lrs = run_config(cfg, work_dir, 'overfit', args.overfit_iters,
                                          args.batch_size, args.seed, overfit=True)
        report['overfit_lr'] = sorted(set(lrs))
        times = [it['time'] for it in rec2.iters]
        report['overfit_s_per_iter'] = round(statistics.median(times[1:] or times), 2)
        curve = [it['logs'].get('loss', float('nan')) for it in rec2.iters]
        report['loss_first'], report['loss_last'] = round(curve[0], 4), round(curve[-1], 4)
        report['overfit_loss_ratio'] = round(curve[-1] / curve[0], 4) if curve[0] else None
        report['overfit_target_met'] = bool(report['overfit_loss_ratio'] is not None and
                                            report['overfit_loss_ratio'] <= OVERFIT_TARGET)
        report['overfit_curve'] = [round(v, 4) for v in curve]
        terms = lambda it: {k: round(v, 4) for k, v in it['logs'].items()  # noqa: E731
                            if 'loss' in k and k != 'loss'}
        report['loss_terms_first'] = terms(rec2.iters[0])
        report['loss_terms_last'] = terms(rec2.iters[-1])
        report['grad_norm_first'] = round(rec2.iters[0]['grad_norm'], 4)
        report['grad_norm_last'] = round(rec2.iters[-1]['grad_norm'], 4)
        if rec2.iters[0]['merged_absmax']:  # InstAlign: the merged-mask scale (Eq. 8)
            report.update(merged_scale(rec2.iters))
        nonfinite += _nonfinite(rec2.iters, 'overfit')
        report['nonfinite'] = nonfinite
        if nonfinite:
            failures.append(f'non-finite values: {nonfinite[:10]}')
        no_grad = [n for n in names2 if n not in rec2.with_grad]
        report['params_without_grad'] = OrderedDict(
            (n, _reason(n, NO_GRAD_REASONS) or 'unexplained') for n in no_grad)

        # 3. real photos
        if args.real_photos != 0:
            log('answering the real photos with RefInferencer')
            photos = real_photos(cfg, args.realdata, args.real_photos, args.batch_size)
            report.update(photos)
            failures += photos.pop('real_photos_failures', [])
            report.pop('real_photos_failures', None)
    report['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report['total_s'] = round(time.time() - t_all, 1)
    report['load_avg_1min'] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    report['failures'] = failures
    report['ok'] = not failures
    print()
    for k, v in report.items():
        print(f'{k} : {_fmt(v)}')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=1, default=str)
        log(f'written {args.out}')
    if failures:
        print('\nFAILED:\n  ' + '\n  '.join(failures))
    return report


def merged_scale(iters) -> dict:
    """InstAlign's merged logits (the argument of Eq. 8's sigmoid) over the overfit run: the
    largest |logit| of any decoder block per iteration, and the merged BCE summed over blocks."""
    def bce(it):
        return sum(v for k, v in it['logs'].items() if k.endswith('loss_merged_bce'))
    return dict(
        merged_logit_absmax_first=[round(v, 2) for v in iters[0]['merged_absmax']],
        merged_logit_absmax_last=[round(v, 2) for v in iters[-1]['merged_absmax']],
        merged_logit_absmax_curve=[round(max(it['merged_absmax']), 2) for it in iters],
        merged_bce_sum_curve=[round(bce(it), 4) for it in iters])


def _nonfinite(iters, run) -> List[str]:
    out = []
    for i, it in enumerate(iters):
        for k, v in it['logs'].items():
            if v != v or abs(v) == float('inf'):
                out.append(f'{run} iter {i + 1}: {k}={v}')
        g = it['grad_norm']
        if g != g or abs(g) == float('inf'):
            out.append(f'{run} iter {i + 1}: grad norm {g}')
        out += [f'{run} iter {i + 1}: grad of {n}' for n in it['nonfinite_grads']]
    return out


if __name__ == '__main__':
    sys.exit(0 if main()['ok'] else 1)

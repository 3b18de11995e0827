import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
QUICKSTART = {
    'latentvg': osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'),
    'instalign': osp.join(ROOT, 'configs', 'quickstart', 'instalign_tiny_synthref.py'),
}


def short_config(method, data_root, out_path, iters=3, batch_size=2, num_test_samples=None,
                 variant='', **overrides):
    """Write a shortened copy of a quick-start config (``variant='_ris-eval'`` for its RIS
    evaluation child): ``iters`` iterations on ``data_root``, checkpoint at the end, constant LR,
    no worker processes. Returns the config path."""
    from mmengine.config import Config
    cfg = Config.fromfile(QUICKSTART[method].replace('.py', f'{variant}.py'))
    root = str(data_root).rstrip('/') + '/'
    # the model's tokenizer files live under the quick-start data root too
    cfg.model = _repoint(cfg.model, 'data/synthref/', root)
    for split in ('train', 'val', 'test'):
        loader = cfg[f'{split}_dataloader']
        loader.dataset.data_root = root
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.batch_size = batch_size
    if num_test_samples is not None:
        cfg.val_dataloader.dataset.indices = num_test_samples
        cfg.test_dataloader.dataset.indices = num_test_samples
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=iters, by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    cfg.merge_from_dict(overrides)
    cfg.dump(out_path)
    return out_path


def _repoint(node, old_prefix, new_prefix):
    """Replace ``old_prefix`` at the start of every string inside a nested config."""
    if isinstance(node, str):
        return new_prefix + node[len(old_prefix):] if node.startswith(old_prefix) else node
    if isinstance(node, dict):
        return type(node)({k: _repoint(v, old_prefix, new_prefix) for k, v in node.items()})
    if isinstance(node, (list, tuple)):
        return type(node)(_repoint(v, old_prefix, new_prefix) for v in node)
    return node


def _env(env=None, use_source_tree=True):
    full_env = dict(os.environ)
    full_env.setdefault('OMP_NUM_THREADS', '1')
    if use_source_tree:
        full_env['PYTHONPATH'] = os.pathsep.join(
            [ROOT] + [p for p in [full_env.get('PYTHONPATH')] if p])
    full_env.update(env or {})
    return full_env


def _failed(cmd, returncode, stdout, stderr):
    return AssertionError(f'command failed ({returncode}): {" ".join(cmd)}\n'
                          f'--- stdout ---\n{stdout[-6000:]}\n'
                          f'--- stderr ---\n{stderr[-6000:]}')


def run(cmd, cwd=ROOT, timeout=900, env=None, use_source_tree=True):
    """Run a command, raising with its output on failure. ``use_source_tree`` puts the
    repository first on PYTHONPATH (scripts then import this tree's mmrefer, not the installed
    wheel); mim runs pass False so that they exercise the installed package."""
    proc = subprocess.run(cmd, cwd=cwd, env=_env(env, use_source_tree), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise _failed(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout + proc.stderr


def run_together(cmds, cwd=ROOT, timeout=900, env=None, use_source_tree=True, check=True):
    """Run independent commands at the same time (the suite's two cores import torch, mmcv and
    mmdet for both at once) as :func:`run` would run each; returns their outputs in order, or
    with ``check=False`` the ``(returncode, stdout, stderr)`` of each. Raises with the first
    failed command's output; all are waited for (or killed at ``timeout``) first."""
    full_env = _env(env, use_source_tree)
    # output to files, not pipes: a full pipe would stall a command until its turn to be read
    files = [(tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')) for _ in cmds]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=out, stderr=err, text=True)
             for cmd, (out, err) in zip(cmds, files)]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc, (out, err) in zip(procs, files):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            out.seek(0)
            err.seek(0)
            results.append((proc.returncode, out.read(), err.read()))
    finally:
        for proc, (out, err) in zip(procs, files):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
            err.close()
    if not check:
        return results
    for cmd, (returncode, stdout, stderr) in zip(cmds, results):
        if returncode != 0:
            raise _failed(cmd, returncode, stdout, stderr)
    return [stdout + stderr for _, stdout, stderr in results]


def mim_bin():
    return osp.join(osp.dirname(sys.executable), 'mim')


# ---------------------------------------------------------------------------------------------
# Paper / ablation configs at quick-start size, through --cfg-options (DDP and smoke runs)

# Size keys (relative to ``model``) taken from the quick-start config of the same model type.
# Everything else (module switches, latent count, num_class_tokens, text_mode, losses,
# instance_supervision, ...) stays as the config sets it.
SIZE_KEYS = {
    'LatentVG': (
        'pretrained', 'backbone.arch', 'backbone.img_size', 'backbone.patch_size',
        'backbone.vocab_size', 'backbone.max_text_len', 'backbone.drop_path_rate',
        'latent_init.embed_dims', 'concept_injector.embed_dims', 'concept_injector.num_concepts',
        'head.in_channels', 'head.feat_channels', 'head.embed_dims', 'head.extra_upsamples',
        'head.num_decoder_layers', 'head.decoder_heads', 'head.decoder_ffn_dims',
        'head.mlp_hidden_dims', 'head.no_target_predictor.embed_dims',
        'head.no_target_predictor.num_heads'),
    'InstAlign': (
        'backbone.embed_dims', 'backbone.depths', 'backbone.num_heads', 'backbone.window_size',
        'backbone.drop_path_rate', 'backbone.init_cfg', 'text_encoder.pretrained',
        'text_encoder.arch', 'head.in_channels', 'head.feat_channels', 'head.num_queries',
        'head.pixel_decoder.norm_cfg.num_groups', 'head.pixel_decoder.encoder.num_layers',
        'head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.embed_dims',
        'head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_heads',
        'head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_points',
        'head.pixel_decoder.encoder.layer_cfg.ffn_cfg.embed_dims',
        'head.pixel_decoder.encoder.layer_cfg.ffn_cfg.feedforward_channels',
        'head.pixel_decoder.positional_encoding.num_feats', 'head.decoder.num_layers',
        'head.decoder.num_heads', 'head.decoder.ffn_dims', 'head.positional_encoding.num_feats',
        'test_cfg.extras_topk'),
}
QUICKSTART_OF = {'LatentVG': 'latentvg', 'InstAlign': 'instalign'}
# SynthRef has only refcoco/ (unc splits), grefcoco/ and refzom/: RefCOCO+ and RefCOCOg loaders
# read its refcoco/ files (RefCOCOg's 'test' split becomes 'testB')
_SYNTHREF_DIRS = {'refcoco+/': 'refcoco/', 'refcocog/': 'refcoco/'}


def flatten_cfg(node, prefix=''):
    """Nested config -> ``{dotted key: leaf}`` (lists by index, ``_delete_`` dropped); tuples,
    an empty dict and an empty list are leaves."""
    if isinstance(node, dict) and node:
        items = [(k, v) for k, v in node.items() if k != '_delete_']
    elif isinstance(node, list) and node:
        items = list(enumerate(node))
    else:
        return {prefix: node}
    out = {}
    for k, v in items:
        out.update(flatten_cfg(v, f'{prefix}.{k}' if prefix else str(k)))
    return out


def _paper_base(config_path):
    """The single paper config an ablation inherits from (``_base_ = './paper.py'``), or None
    when the config is built from ``_base_/`` files only (a paper or quick-start config)."""
    from mmengine.config import Config
    bases = Config._get_base_files(config_path)
    bases = [bases] if isinstance(bases, str) else list(bases)
    if len(bases) != 1 or '_base_' in bases[0].replace('\\', '/').split('/'):
        return None
    return osp.normpath(osp.join(osp.dirname(config_path), bases[0]))


def ablation_keys(config_path):
    """Model keys (dotted, relative to ``model``) an ablation sets or changes relative to its
    paper base: the keys written in the ablation file itself (when it is plain Python, e.g.
    ``head.num_queries`` of the N = 100 ablation even though the base also has 100) plus every
    flattened key whose value differs from the base. Empty for a non-ablation config."""
    from mmengine.config import Config
    base = _paper_base(config_path)
    if base is None:
        return set()
    own = {}
    try:  # the file alone (an ablation file is a few dict literals)
        namespace = {}
        exec(compile(open(config_path).read(), config_path, 'exec'), namespace)
        own = flatten_cfg(dict(namespace.get('model') or {}))
    except Exception:  # noqa: BLE001  (base-variable references: rely on the value diff)
        pass
    mine = flatten_cfg(Config.fromfile(config_path).model.to_dict())
    theirs = flatten_cfg(Config.fromfile(base).model.to_dict())
    diff = {k for k in set(mine) | set(theirs) if mine.get(k, '<absent>') != theirs.get(
        k, '<absent>')}
    return set(own) | diff


def _get(node, dotted):
    for k in dotted.split('.'):
        if isinstance(node, dict) and k in node:
            node = node[k]
        elif isinstance(node, list) and k.isdigit() and int(k) < len(node):
            node = node[int(k)]
        else:
            raise KeyError(dotted)
    return node


def _size_options(model, quick_model, model_type, protected):
    """``model.*`` options setting the quick-start sizes where the config has the module."""
    def is_protected(key):
        return any(key == c or key.startswith(c + '.') or c.startswith(key + '.')
                   for c in protected)

    opts = {}
    for key in SIZE_KEYS[model_type]:
        try:
            value = _get(quick_model, key)
        except KeyError:
            raise KeyError(f'size key model.{key} is missing from the quick-start config '
                           f'{QUICKSTART[QUICKSTART_OF[model_type]]}') from None
        parent, _, leaf = key.rpartition('.')
        try:
            owner = _get(model, parent) if parent else model
        except KeyError:
            continue  # e.g. head.empty_token.* when the config has no empty token
        if not isinstance(owner, dict):
            continue  # a module the config switches off (None) stays off
        current = owner.get(leaf)
        if isinstance(value, dict):
            if not isinstance(current, dict):  # e.g. BEiT-3 arch='base' -> the tiny dict
                if is_protected(key):
                    continue
                opts[f'model.{key}._delete_'] = True
                current = {}
            for sub, v in flatten_cfg(dict(value)).items():
                if not is_protected(f'{key}.{sub}'):
                    opts[f'model.{key}.{sub}'] = v
        elif not is_protected(key):
            opts[f'model.{key}'] = value
    return opts


def _data_options(loader, name, root, scale, batch_size):
    """Point one dataloader at SynthRef (data root, refs files, split, resize scale, no
    workers)."""
    opts = {f'{name}.batch_size': batch_size, f'{name}.num_workers': 0,
            f'{name}.persistent_workers': False}

    def repoint(path):
        for old, new in _SYNTHREF_DIRS.items():
            if path.startswith(old):
                path = new + path[len(old):]
                return path.replace('refs(umd)', 'refs(unc)').replace('refs(google)',
                                                                      'refs(unc)'), True
        return path, False

    def visit(ds, prefix):
        if ds.get('type') == 'ConcatDataset' or 'datasets' in ds:
            for i, part in enumerate(ds['datasets']):
                visit(part, f'{prefix}.datasets.{i}')
            return
        if 'dataset' in ds:  # RepeatDataset / ClassBalancedDataset style wrappers
            visit(ds['dataset'], f'{prefix}.dataset')
            return
        opts[f'{prefix}.data_root'] = root
        moved = False
        for key in ('ann_file', 'split_file'):
            if ds.get(key):
                opts[f'{prefix}.{key}'], m = repoint(ds[key])
                moved = moved or m
        if moved and ds.get('split') == 'test':
            opts[f'{prefix}.split'] = 'testB'
        for j, ex in enumerate(ds.get('exclude_images_of') or []):
            opts[f'{prefix}.exclude_images_of.{j}.split_file'] = repoint(ex['split_file'])[0]
            opts[f'{prefix}.exclude_images_of.{j}.splits'] = list(dict.fromkeys(
                'testB' if s == 'test' else s for s in ex['splits']))
        if str(ds.get('type', '')).split('.')[-1] == 'RefZOMDataset':
            opts[f'{prefix}.data_prefix.img_path'] = 'images/train2014/'
        for i, step in enumerate(ds.get('pipeline') or []):
            if str(step.get('type', '')).split('.')[-1] == 'RefResize':
                opts[f'{prefix}.pipeline.{i}.scale'] = tuple(scale)

    visit(loader['dataset'], f'{name}.dataset')
    return opts


def tiny_sized_cfg_options(config_path, data_root, iters=2, batch_size=2, validate=True):
    """Flat ``--cfg-options`` (as ``mmengine.config.DictAction`` parses them; lists by index)
    that shrink a paper, ablation or quick-start config to the quick-start tiny sizes on the
    SynthRef copy ``data_root``, keeping every switch the config sets.

    * model: the ``SIZE_KEYS`` of its type (BEiT-3 / Swin / RoBERTa widths and depths, head
      widths, queries, concepts; no pretrained files) take the quick-start config's values,
      except where the module is switched off (``None``) or the ablation sets the key itself
      (:func:`ablation_keys`: e.g. ``num_queries`` of the N-ablations survives); tokenizers:
      SynthRef's (``tokenizers/beit3.spm``, ``tokenizers/roberta``);
    * data: every loader on ``data_root`` with no workers and ``batch_size`` samples;
      RefCOCO+ / RefCOCOg files become SynthRef's ``refcoco/`` ones; every ``RefResize`` uses
      the quick-start input size, which is also the tiny BEiT-3 ``img_size``;
    * schedule: ``iters`` iterations (IterBasedTrainLoop), constant LR, checkpoint and
      validation at the end (``validate=False``: no validation loop), log every iteration.

    Returns:
        dict: ``{dotted key: value}``; pass it as ``cfg.merge_from_dict(opts)`` or on a command
        line with :func:`cfg_options_argv`.
    """
    from mmengine.config import Config

    from mmrefer.datasets.synthetic import ROBERTA_DIR, SPM_FILE
    cfg = Config.fromfile(config_path)
    model_type = cfg.model.get('type')
    if model_type not in SIZE_KEYS:
        raise ValueError(f'{config_path}: model.type {model_type!r} is not one of '
                         f'{sorted(SIZE_KEYS)}')
    quick = Config.fromfile(QUICKSTART[QUICKSTART_OF[model_type]])
    root = str(data_root).rstrip('/') + '/'
    opts = _size_options(cfg.model.to_dict(), quick.model.to_dict(), model_type,
                         ablation_keys(config_path))
    if model_type == 'LatentVG':
        opts['model.tokenizer.spm_path'] = osp.join(root, SPM_FILE)
    else:
        opts['model.text_encoder.tokenizer_dir'] = osp.join(root, ROBERTA_DIR)
    scale = next(s['scale'] for s in quick.train_dataloader.dataset.pipeline
                 if str(s['type']).split('.')[-1] == 'RefResize')
    loaders = ('train', 'val', 'test') if validate else ('train', 'test')
    for split in loaders:
        if cfg.get(f'{split}_dataloader'):
            opts.update(_data_options(cfg[f'{split}_dataloader'], f'{split}_dataloader', root,
                                      scale, batch_size))
    opts.update({
        'train_cfg._delete_': True, 'train_cfg.type': 'IterBasedTrainLoop',
        'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters,
        'param_scheduler': [],
        'default_hooks.checkpoint.interval': iters, 'default_hooks.checkpoint.by_epoch': False,
        'default_hooks.logger.interval': 1,
        'log_processor.by_epoch': False, 'log_processor.window_size': 1,
    })
    if not validate:
        opts.update({'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None})
    return opts


def _cli_value(key, value):
    """One option value as DictAction reads it back (checked for strings)."""
    from mmengine.config import DictAction
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ','.join(_cli_value(key, v) for v in value)
        return f'[{inner}]' if isinstance(value, list) else f'({inner})'
    if isinstance(value, str) and DictAction._parse_iterable(value) == value:
        return value
    raise ValueError(f'--cfg-options {key}={value!r} cannot be written so that DictAction '
                     'reads it back unchanged')


def cfg_options_argv(options):
    """``{dotted key: value}`` -> ``['k=v', ...]`` for ``--cfg-options`` on a command line."""
    return [f'{k}={_cli_value(k, v)}' for k, v in options.items()]


def free_port():
    """A TCP port nothing listens on now (a fixed one can be taken by another run)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

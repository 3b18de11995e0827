"""Random weights in the official release layouts of the paper models' pretrained parts.

Used by ``paper_size_check.py`` to prove that the paper configs load what users download. Each
writer builds its key list from the published layout (``/work/shared/papers/backbones.md``
sections 1.5 and 3.1-3.2), never from mmrefer's own modules, so a key our modules stop (or
start) building shows up as a skipped (or missing) key instead of silently matching:

* BEiT-3 (microsoft/unilm ``beit3_base_indomain_patch16_224.pth``):
  ``torch.save({'model': {'beit3.' + key: tensor, <pretraining heads>}})``, the 224 position
  table (``(224/16)^2 + 3 = 199`` rows), 491 keys at base size including
  ``vision_embed.mask_token``; plus the MLM head ``mlm_head.weight [64010, 768]`` and the MIM
  head ``mim_head.weight [8192, 768]`` that the "276M" pretraining files are inferred to carry
  (backbones.md 1.4).
* Swin (``swin_base_patch4_window12_384_22k.pth`` of microsoft/Swin-Transformer):
  ``{'model': {...}}`` with ``patch_embed.proj/norm``, ``layers.{s}.blocks.{b}.{norm1, attn.qkv,
  attn.proj, attn.relative_position_bias_table, attn.relative_position_index, norm2, mlp.fc1,
  mlp.fc2}``, the shifted blocks' ``attn_mask`` buffers (the release stores them: its own
  ``load_pretrained`` deletes them before loading), ``layers.{s}.downsample.{reduction, norm}``,
  the final ``norm`` and the ImageNet-22K classifier ``head [21841, C]``.
* RoBERTa-base: a ``transformers`` directory as the public checkpoint is (a
  ``RobertaForMaskedLM`` dump: ``roberta.*`` + ``lm_head.*``, ``save_pretrained``), its
  ``config.json`` from the real one, with the real tokenizer files copied next to it.
* BEiT-3 tokenizer: the official ``beit3.spm`` is not reachable; :func:`train_sentence_spm`
  trains a sentencepiece unigram model in XLM-R layout (unk 0, bos 1, eos 2, no pad) on real
  RefCOCO/+/g sentences instead.

Random values (seeded): matrices, embeddings, tables and biases ~ N(0, 0.02), 1-D ``weight``
tensors (LayerNorm scales) ~ 1 + N(0, 0.02), integer/mask buffers computed as the official code
does. Every value is distinct from a fresh initialisation, so a tensor equal to the file's after
loading was really loaded.
"""
import csv
import glob
import io
import os
import os.path as osp
import shutil
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

#: backbones.md 1.2 / 1.5: BEiT-3 sizes (embed_dims, num_layers, num_heads, ffn_ratio)
BEIT3_ARCHS = dict(base=dict(embed_dims=768, num_layers=12, num_heads=12, ffn_ratio=4),
                   large=dict(embed_dims=1024, num_layers=24, num_heads=16, ffn_ratio=4))
#: backbones.md 1.4 [inference]: pretraining heads of the "276M" pretrained/indomain files
BEIT3_MIM_CODEBOOK = 8192
SWIN_22K_CLASSES = 21841
#: files of the real RoBERTa-base tokenizer copied into the written directory
ROBERTA_TOKENIZER_FILES = ('vocab.json', 'merges.txt', 'tokenizer.json')


# ------------------------------------------------------------------------------ random values
def _random_tensor(name: str, shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """Seeded random values: 1-D ``*weight`` (norm scales) ~ 1 + N(0, 0.02), the rest
    ~ N(0, 0.02)."""
    x = torch.randn(tuple(shape), generator=gen) * 0.02
    if len(shape) == 1 and name.endswith('weight'):
        x += 1.0
    return x


# ----------------------------------------------------------------------------------- BEiT-3
def beit3_arch(arch) -> dict:
    """``'base'`` / ``'large'`` / a dict with embed_dims, num_layers, num_heads, ffn_ratio."""
    if isinstance(arch, str):
        if arch not in BEIT3_ARCHS:
            raise KeyError(f'BEiT-3 arch {arch!r} unknown; expected {sorted(BEIT3_ARCHS)} or a '
                           'dict')
        return dict(BEIT3_ARCHS[arch])
    missing = {'embed_dims', 'num_layers', 'ffn_ratio'} - set(arch)
    if missing:
        raise KeyError(f'BEiT-3 arch dict lacks {sorted(missing)}: {dict(arch)}')
    return dict(arch)


def beit3_official_shapes(arch='base', vocab_size: int = 64010, max_text_len: int = 1024,
                          img_size: int = 224, patch_size: int = 16,
                          in_channels: int = 3) -> 'OrderedDict[str, Tuple[int, ...]]':
    """Key -> shape of the official BEiT-3 state dict (without the ``beit3.`` prefix), as
    listed in backbones.md 1.5; 491 keys at base size, vision positions ``(img/p)^2 + 3``."""
    a = beit3_arch(arch)
    c, n = int(a['embed_dims']), int(a['num_layers'])
    f = int(c * a['ffn_ratio'])
    grid = img_size // patch_size
    out = OrderedDict()
    out['text_embed.weight'] = (vocab_size, c)
    out['vision_embed.mask_token'] = (1, 1, c)
    out['vision_embed.cls_token'] = (1, 1, c)
    out['vision_embed.proj.weight'] = (c, in_channels, patch_size, patch_size)
    out['vision_embed.proj.bias'] = (c, )
    out['encoder.embed_positions.A.weight'] = (grid * grid + 3, c)
    out['encoder.embed_positions.B.weight'] = (max_text_len, c)
    for i in range(n):
        p = f'encoder.layers.{i}.'
        for x in ('A', 'B'):
            for proj in ('k', 'v', 'q', 'out'):
                out[f'{p}self_attn.{proj}_proj.{x}.weight'] = (c, c)
                out[f'{p}self_attn.{proj}_proj.{x}.bias'] = (c, )
            for ln in ('self_attn.inner_attn_ln', 'self_attn_layer_norm', 'final_layer_norm'):
                out[f'{p}{ln}.{x}.weight'] = (c, )
                out[f'{p}{ln}.{x}.bias'] = (c, )
            out[f'{p}ffn.{x}.fc1.weight'] = (f, c)
            out[f'{p}ffn.{x}.fc1.bias'] = (f, )
            out[f'{p}ffn.{x}.fc2.weight'] = (c, f)
            out[f'{p}ffn.{x}.fc2.bias'] = (c, )
            out[f'{p}ffn.{x}.ffn_layernorm.weight'] = (f, )
            out[f'{p}ffn.{x}.ffn_layernorm.bias'] = (f, )
    for x in ('A', 'B'):
        out[f'encoder.layer_norm.{x}.weight'] = (c, )
        out[f'encoder.layer_norm.{x}.bias'] = (c, )
    return out


def beit3_pretrain_head_shapes(arch='base', vocab_size: int = 64010) -> Dict[str, tuple]:
    """Pretraining heads outside the ``beit3.`` prefix: MLM over the text vocabulary and MIM
    over the BEiT v2 codebook (backbones.md 1.4, an inference from the 276M count)."""
    c = int(beit3_arch(arch)['embed_dims'])
    return {'mlm_head.weight': (vocab_size, c), 'mim_head.weight': (BEIT3_MIM_CODEBOOK, c)}


def write_beit3_official(path: str, seed: int = 0, pretrain_heads: bool = True,
                         **shape_kwargs) -> Dict[str, tuple]:
    """Write ``torch.save({'model': {'beit3.' + key: tensor, heads...}}, path)``.

    ``shape_kwargs`` go to :func:`beit3_official_shapes` (arch, vocab_size, max_text_len,
    img_size (224), patch_size, in_channels). Returns the written key -> shape."""
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict(('beit3.' + k, _random_tensor(k, s, gen))
                     for k, s in beit3_official_shapes(**shape_kwargs).items())
    if pretrain_heads:
        heads = beit3_pretrain_head_shapes(shape_kwargs.get('arch', 'base'),
                                           shape_kwargs.get('vocab_size', 64010))
        sd.update((k, _random_tensor(k, s, gen)) for k, s in heads.items())
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save({'model': sd}, path)
    return OrderedDict((k, tuple(v.shape)) for k, v in sd.items())


def train_sentence_spm(path: str, csv_files: Iterable[str], vocab_size: int = 4000,
                       column: str = 'sent') -> dict:
    """Train a sentencepiece unigram model in XLM-R layout (unk 0, bos 1, eos 2, no pad) on
    the ``column`` of every CSV file, write it to ``path``; returns dict(sentences, pieces).

    The tokenizer ids are then those of :class:`BEiT3Tokenizer` (piece + 1, ``<mask>`` =
    pieces + 1), so ``vocab_size`` must stay below the model's text vocabulary - 1."""
    import sentencepiece as spm
    corpus = set()
    files = sorted(csv_files)
    if not files:
        raise FileNotFoundError('train_sentence_spm: no CSV file given')
    for fn in files:
        with open(fn, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise KeyError(f'{fn}: no column {column!r} (columns: {reader.fieldnames})')
            corpus.update(r[column].strip() for r in reader if r[column].strip())
    corpus = sorted(corpus)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=buf, vocab_size=vocab_size,
        model_type='unigram', character_coverage=0.9995, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(buf.getvalue())
    pieces = spm.SentencePieceProcessor(model_file=path).get_piece_size()
    return dict(sentences=len(corpus), pieces=pieces)


# ------------------------------------------------------------------------------------- Swin
def swin_relative_position_index(window: int) -> torch.Tensor:
    """``[w*w, w*w]`` int64 index into the ``(2w-1)^2`` bias table (Swin ``WindowAttention``)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                        indexing='ij')).flatten(1)           # 2, w*w
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def swin_attn_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """``[nW, w*w, w*w]`` float mask (0 / -100) of a shifted block at ``resolution``
    (Swin ``SwinTransformerBlock``); nW = (resolution / window)^2."""
    img = torch.zeros(1, resolution, resolution, 1)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    n = resolution // window
    win = img.view(1, n, window, n, window, 1).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def swin_official_shapes(embed_dims: int = 128, depths: Sequence[int] = (2, 2, 18, 2),
                         num_heads: Sequence[int] = (4, 8, 16, 32), window_size: int = 12,
                         pretrain_img_size: int = 384, patch_size: int = 4,
                         in_channels: int = 3, mlp_ratio: float = 4,
                         num_classes: int = SWIN_22K_CLASSES) -> 'OrderedDict[str, tuple]':
    """Key -> shape (or ``('buffer', tensor)`` for the index / mask buffers) of an official
    Swin checkpoint. A stage whose resolution is at most the window uses the whole stage as
    its window and never shifts (no ``attn_mask``), as in the official code."""
    out = OrderedDict()
    c = embed_dims
    out['patch_embed.proj.weight'] = (c, in_channels, patch_size, patch_size)
    out['patch_embed.proj.bias'] = (c, )
    out['patch_embed.norm.weight'] = (c, )
    out['patch_embed.norm.bias'] = (c, )
    res = pretrain_img_size // patch_size
    for s, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim = c * 2**s
        win = min(window_size, res)
        hidden = int(dim * mlp_ratio)
        for b in range(depth):
            p = f'layers.{s}.blocks.{b}.'
            out[p + 'norm1.weight'] = (dim, )
            out[p + 'norm1.bias'] = (dim, )
            out[p + 'attn.relative_position_bias_table'] = ((2 * win - 1)**2, heads)
            out[p + 'attn.relative_position_index'] = ('buffer',
                                                       swin_relative_position_index(win))
            out[p + 'attn.qkv.weight'] = (3 * dim, dim)
            out[p + 'attn.qkv.bias'] = (3 * dim, )
            out[p + 'attn.proj.weight'] = (dim, dim)
            out[p + 'attn.proj.bias'] = (dim, )
            out[p + 'norm2.weight'] = (dim, )
            out[p + 'norm2.bias'] = (dim, )
            out[p + 'mlp.fc1.weight'] = (hidden, dim)
            out[p + 'mlp.fc1.bias'] = (hidden, )
            out[p + 'mlp.fc2.weight'] = (dim, hidden)
            out[p + 'mlp.fc2.bias'] = (dim, )
            if b % 2 == 1 and res > window_size:
                out[p + 'attn_mask'] = ('buffer', swin_attn_mask(res, win, win // 2))
        if s < len(depths) - 1:
            out[f'layers.{s}.downsample.reduction.weight'] = (2 * dim, 4 * dim)
            out[f'layers.{s}.downsample.norm.weight'] = (4 * dim, )
            out[f'layers.{s}.downsample.norm.bias'] = (4 * dim, )
            res //= 2
    last = c * 2**(len(depths) - 1)
    out['norm.weight'] = (last, )
    out['norm.bias'] = (last, )
    out['head.weight'] = (num_classes, last)
    out['head.bias'] = (num_classes, )
    return out


def write_swin_official(path: str, seed: int = 0, **shape_kwargs) -> Dict[str, tuple]:
    """Write ``torch.save({'model': {...}}, path)`` in the official Swin layout (see
    :func:`swin_official_shapes`); returns key -> shape."""
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for k, s in swin_official_shapes(**shape_kwargs).items():
        sd[k] = s[1].clone() if s[0] == 'buffer' else _random_tensor(k, s, gen)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save({'model': sd}, path)
    return OrderedDict((k, tuple(v.shape)) for k, v in sd.items())


# ----------------------------------------------------------------------------------- RoBERTa
def write_roberta_dir(out_dir: str, config_json: str, tokenizer_dir: str,
                      arch: Optional[dict] = None, seed: int = 0) -> List[str]:
    """A ``RobertaForMaskedLM`` with random weights saved by ``save_pretrained`` (what the
    public roberta-base checkpoint holds: ``roberta.*`` without pooler, ``lm_head.*``), its
    config from ``config_json`` updated with ``arch``, plus the tokenizer files of
    ``tokenizer_dir``. Returns the state-dict keys written."""
    from transformers import RobertaConfig, RobertaForMaskedLM
    if not osp.isfile(config_json):
        raise FileNotFoundError(f'write_roberta_dir: {config_json} not found')
    cfg = RobertaConfig.from_json_file(config_json)
    for k, v in (arch or {}).items():
        setattr(cfg, k, v)
    model = RobertaForMaskedLM(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(_random_tensor(name, p.shape, gen))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    copied = 0
    for fn in ROBERTA_TOKENIZER_FILES:
        src = osp.join(tokenizer_dir, fn)
        if osp.isfile(src):
            shutil.copy(src, osp.join(out_dir, fn))
            copied += 1
    if not copied:
        raise FileNotFoundError(f'write_roberta_dir: none of {ROBERTA_TOKENIZER_FILES} in '
                                f'{tokenizer_dir}')
    return read_weight_keys(out_dir)


def read_weight_keys(hf_dir: str) -> List[str]:
    """Tensor names stored in a transformers directory (``model.safetensors`` or
    ``pytorch_model.bin``)."""
    st = osp.join(hf_dir, 'model.safetensors')
    if osp.isfile(st):
        from safetensors import safe_open
        with safe_open(st, framework='pt') as f:
            return list(f.keys())
    binf = osp.join(hf_dir, 'pytorch_model.bin')
    if osp.isfile(binf):
        return list(torch.load(binf, map_location='cpu', weights_only=True))
    raise FileNotFoundError(f'{hf_dir}: no model.safetensors nor pytorch_model.bin')


def read_weights(hf_dir: str) -> Dict[str, torch.Tensor]:
    """All tensors of a transformers directory's weight file."""
    st = osp.join(hf_dir, 'model.safetensors')
    if osp.isfile(st):
        from safetensors.torch import load_file
        return load_file(st)
    return torch.load(osp.join(hf_dir, 'pytorch_model.bin'), map_location='cpu',
                      weights_only=True)


def real_sentence_csvs(realdata: str) -> List[str]:
    """The RefCOCO/+/g evaluation-sentence CSVs under ``realdata``."""
    return sorted(glob.glob(osp.join(realdata, 'refcoco_sentences', 'data', '*.csv')))

"""Official BEiT-3 checkpoint -> :class:`~mmrefer.models.backbones.BEiT3` state dict.

Shared by ``BEiT3.init_weights`` and ``tools/model_converters/beit3_to_mmrefer.py``.
Official files (microsoft/unilm ``beit3``) are ``torch.save({'model': sd, ...})`` with keys
``beit3.<our key>`` plus task heads (``vision_head``, ``language_head``, ``logit_scale``, ...).
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

POS_KEY = 'encoder.embed_positions.A.weight'
# rows of the vision position table before the patch grid: 2 unused fairseq rows + CLS
NUM_EXTRA_POS = 3


def pick_state_dict(ckpt: dict, filename: str = '<checkpoint>') -> Dict[str, Tensor]:
    """Take ``ckpt['model']``, ``ckpt['module']`` or ``ckpt['state_dict']``, else ``ckpt``."""
    if not isinstance(ckpt, dict):
        raise TypeError(f'{filename}: expected a dict checkpoint, got {type(ckpt).__name__}')
    for key in ('model', 'module', 'state_dict'):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def strip_prefix(sd: Dict[str, Tensor], prefix: Optional[str] = None,
                 filename: str = '<checkpoint>') -> Tuple[Dict[str, Tensor], list]:
    """Keep the keys under ``prefix`` (stripped); return them and the dropped keys.

    With ``prefix=None`` the prefix is detected: ``beit3.`` (official), ``backbone.`` (our
    converted files), ``module.`` wrappers, or none.
    """
    if prefix is None:
        for cand in ('beit3.', 'backbone.', 'module.beit3.', 'module.'):
            if any(k.startswith(cand) for k in sd):
                prefix = cand
                break
        else:
            prefix = ''
    if prefix and not any(k.startswith(prefix) for k in sd):
        raise KeyError(f'{filename}: no key starts with prefix {prefix!r} '
                       f'(first keys: {list(sd)[:5]})')
    kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    dropped = [k for k in sd if not k.startswith(prefix)]
    return kept, dropped


def interpolate_pos_embed(pos: Tensor, grid: Sequence[int],
                          num_extra: int = NUM_EXTRA_POS) -> Tensor:
    """Resize the vision position table ``[num_extra + g*g, C]`` to ``grid=(h, w)``.

    The ``num_extra`` leading rows (fairseq 0/1 + CLS) are kept; the ``g x g`` patch part is
    resized bicubically (``align_corners=False``), as unilm's ``load_model_and_may_interpolate``.
    """
    n, c = pos.shape
    g = int(round((n - num_extra)**0.5))
    if g * g != n - num_extra:
        raise ValueError(f'{POS_KEY}: {n} rows is not {num_extra} + a square grid')
    h, w = int(grid[0]), int(grid[1])
    if (g, g) == (h, w):
        return pos
    extra, patches = pos[:num_extra], pos[num_extra:]
    patches = patches.reshape(1, g, g, c).permute(0, 3, 1, 2).float()
    patches = F.interpolate(patches, size=(h, w), mode='bicubic', align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(h * w, c).to(pos.dtype)
    return torch.cat([extra, patches], dim=0)


def convert_official(sd: Dict[str, Tensor], grid: Sequence[int], prefix: Optional[str] = None,
                     filename: str = '<checkpoint>') -> Tuple[Dict[str, Tensor], list]:
    """Official (or already converted) state dict -> our backbone keys at patch ``grid``.

    Returns ``(state_dict, dropped_keys)``; ``dropped_keys`` are the task heads etc.
    """
    sd, dropped = strip_prefix(pick_state_dict(sd, filename), prefix, filename)
    if POS_KEY in sd:
        sd[POS_KEY] = interpolate_pos_embed(sd[POS_KEY], grid)
    return sd, dropped


def check_shapes(sd: Dict[str, Tensor], model_sd: Dict[str, Tensor], filename: str) -> None:
    """Raise one ValueError listing every key whose shape differs from the model's."""
    bad = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}'
           for k, v in sd.items() if k in model_sd and v.shape != model_sd[k].shape]
    if bad:
        raise ValueError(f'{filename}: shape mismatch for {len(bad)} key(s): ' + '; '.join(bad))

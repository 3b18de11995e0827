"""get_flops.py counts attention matmuls, which fused SDPA hides from FlopCounterMode."""
import os.path as osp
import sys

import torch
import torch.nn.functional as F
from mmengine.config import Config

ROOT = osp.join(osp.dirname(__file__), '..', '..')
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import get_flops  # noqa: E402


def _explicit_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   **kwargs):
    """softmax(q k^T * scale + mask) v with plain matmuls (always visible to the counter)."""
    w = q @ k.transpose(-2, -1) * (scale if scale is not None else q.shape[-1]**-0.5)
    if attn_mask is not None:
        w = w.masked_fill(~attn_mask, float('-inf')) if attn_mask.dtype == torch.bool \
            else w + attn_mask
    return w.softmax(-1) @ v


def test_attention_is_counted(monkeypatch):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'quickstart', 'latentvg_tiny_synthref.py'))
    fused = get_flops.count(cfg, 128, 128, 16)
    monkeypatch.setattr(F, 'scaled_dot_product_attention', _explicit_sdpa)
    explicit = get_flops.count(cfg, 128, 128, 16)
    assert fused['params'] == explicit['params']
    assert fused['flops'] == explicit['flops']
    # BEiT-3 attention alone: 4 layers x 2 matmuls x T^2 x C multiply-adds, T = 1 + 64 + 16
    # text tokens + 2 latent groups; it must be part of the total
    t = 1 + 64 + 16
    assert fused['macs'] > 4 * 2 * t * t * 64

"""Deprecated alias of :mod:`mmrefer.structures.geometry`, kept for old imports.

``mask_to_original`` now interpolates bilinearly and thresholds (it used nearest on a binary
mask); see :mod:`mmrefer.structures.geometry`.
"""
from .geometry import box_to_input, box_to_original, content_region, mask_to_original

__all__ = ['mask_to_original', 'box_to_original', 'box_to_input', 'content_region']

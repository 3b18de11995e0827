"""High-level inference: :class:`RefInferencer` (image + sentences -> mask, box, no-target)."""
from .inferencer import (RefInferencer, build_inference_pipeline, config_search_roots,
                         resolve_config)

__all__ = ['RefInferencer', 'build_inference_pipeline', 'config_search_roots', 'resolve_config']

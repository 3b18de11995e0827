import mmdet.models  # noqa: F401  (parents' lazy imports are not triggered by mmengine)

from . import (backbones, detectors, heads, language_models, layers, losses,  # noqa: F401
               task_modules)

from .base_ref import BaseRefDataset, load_coco_instances
from .grefcoco import GRefCOCODataset
from .refcoco import RefCOCODataset
from .refzom import RefZOMDataset
from .safe_pickle import UnsafePickleError, load_refs, safe_pickle_load
from .synthetic import make_synthref
from .transforms import *  # noqa: F401,F403

__all__ = ['BaseRefDataset', 'load_coco_instances', 'RefCOCODataset', 'GRefCOCODataset',
           'RefZOMDataset', 'UnsafePickleError', 'load_refs', 'safe_pickle_load', 'make_synthref']

from .checkpoint_compat import (CHECKPOINT_SAFE_GLOBALS, install_checkpoint_shim,
                                safe_torch_load)
from .setup_env import register_all_modules

__all__ = ['register_all_modules', 'install_checkpoint_shim', 'safe_torch_load',
           'CHECKPOINT_SAFE_GLOBALS']
from .misc import import_submodules  # noqa: E402

__all__ += ['import_submodules']

from .checkpoint import (CHECKPOINT_SAFE_GLOBALS, UnsafeCheckpointError, checkpoint_safe_globals,
                         runner_checkpoint_loading, safe_checkpoint_loading, safe_torch_load)
from .checkpoint_report import CheckpointReport, checkpoint_report, group_keys
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'runner_checkpoint_loading', 'safe_checkpoint_loading', 'safe_torch_load', 'UnsafeCheckpointError',
    'checkpoint_safe_globals', 'CHECKPOINT_SAFE_GLOBALS', 'CheckpointReport', 'checkpoint_report',
    'group_keys'
]

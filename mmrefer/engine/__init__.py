"""Runner hooks (the visualisation hook lives in mmrefer.visualization)."""
from .amp_loops import AmpTestLoop, AmpValLoop
from .autocast_optim_wrapper import AutocastOptimWrapper
from .checkpoint_report_hook import CheckpointReportHook
from .merged_groups_constructor import (MergedGroupsOptimWrapperConstructor, merge_param_groups,
                                        plain_param_groups)
from .rng_state_hook import RNGStateHook

__all__ = ['AmpTestLoop', 'AmpValLoop', 'AutocastOptimWrapper', 'CheckpointReportHook',
           'MergedGroupsOptimWrapperConstructor', 'RNGStateHook', 'merge_param_groups',
           'plain_param_groups']

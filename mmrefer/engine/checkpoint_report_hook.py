"""``CheckpointReportHook``: after the runner loads a checkpoint (``load_from``, ``resume``,
``mim test -C``), log how its state dict fits the model, grouped by module
(:func:`mmrefer.utils.checkpoint_report`), instead of only mmengine's flat key lists."""
import logging
import re

from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmrefer.registry import HOOKS
from mmrefer.utils.checkpoint_report import checkpoint_report


@HOOKS.register_module()
class CheckpointReportHook(Hook):
    """Log the grouped missing / unexpected / mis-shaped keys of every loaded checkpoint.

    Args:
        revise_keys (list[tuple]): ``(pattern, replacement)`` applied to the checkpoint keys first,
            as mmengine's loader does (default: strip ``module.``).
    """

    priority = 'VERY_LOW'

    def __init__(self, revise_keys=((r'^module\.', ''), )):
        self.revise_keys = [tuple(r) for r in revise_keys]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
        for pattern, repl in self.revise_keys:
            state = {re.sub(pattern, repl, k): v for k, v in state.items()}
        path = getattr(runner, '_load_from', None)
        report = checkpoint_report(runner.model, state,
                                   source=f'the checkpoint {path}' if path else 'the checkpoint')
        if report:
            print_log(report.format(), logger='current', level=logging.WARNING)
        # a checkpoint of another model fills nothing: never train on from or test random weights
        report.check_loaded(f'checkpoint {path}' if path else 'the loaded checkpoint')

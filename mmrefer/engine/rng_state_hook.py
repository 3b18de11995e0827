import random

import numpy as np
import torch
from mmengine.hooks import Hook

from mmrefer.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the Python, NumPy and torch random states in every checkpoint and restore them on
    resume, so that training k iterations, saving, resuming and training to n reproduces the
    losses and weights of training to n straight (stochastic layers such as Gumbel noise and
    token dropout draw from these generators). mmengine only re-seeds at start.

    Checkpoint key: ``rng_state`` = ``{'python': tuple, 'numpy': dict, 'torch': ByteTensor,
    'cuda': list[ByteTensor]}`` (numpy's state is stored as a plain dict so that it loads under
    ``torch.load(weights_only=True)``).
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint['rng_state'] = {
            'python': random.getstate(),
            'numpy': dict(name=name, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                          has_gauss=int(has_gauss), cached=float(cached)),
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # only restore on resume (load_from for fine-tuning keeps the fresh seed)
        state = checkpoint.get('rng_state')
        if state is None or not runner._resume:
            return
        random.setstate(_as_tuple(state['python']))
        np_state = state['numpy']
        np.random.set_state((np_state['name'], np_state['keys'].numpy().astype(np.uint32),
                             np_state['pos'], np_state['has_gauss'], np_state['cached']))
        torch.set_rng_state(state['torch'])
        if state['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuple(x):
    if isinstance(x, (list, tuple)):
        return tuple(_as_tuple(v) for v in x)
    return x

"""A readable report of how a checkpoint's state dict fits a model.

mmengine lists every missing and unexpected key on its own line (a BEiT-3 backbone alone has
~200), which hides what actually went wrong. :func:`checkpoint_report` groups the keys by
module instead::

    missing keys (in the model, not in the checkpoint): 96 in 2 group(s)
      backbone.encoder.layers.*: 64 missing (of 96), e.g. backbone.encoder.layers.2.ffn.fc1.weight
      head: 32 missing (of 32), e.g. head.mask_mlps.0.layers.0.weight
    shape mismatches (key: checkpoint shape vs model shape): 1
      backbone.text_embed.weight: (64, 96) vs (128, 96)

A key's group is the shortest module prefix that is *wholly* missing from the checkpoint (for
unexpected keys: wholly unknown to the model), cut at the first numeric index (a layer number)
or at ``max_depth`` names; numeric parts then become ``*`` so that layers 2 and 3 of a stack
share one line. ``(of N)`` counts the model's keys (for unexpected keys the checkpoint's) in the
group, so a line ``(of N)`` with equal counts means that whole module is absent.

:class:`~mmrefer.engine.CheckpointReportHook` logs it after the runner loads a checkpoint
(``load_from``, ``resume``, ``mim test -C``), ``RefInferencer`` after loading its weights and
``BEiT3.load_checkpoint`` for an official BEiT-3 file (mmengine's own loader is left as it is).
``num_batches_tracked`` buffers are never reported missing.
"""
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log

__all__ = ['CheckpointReport', 'checkpoint_report', 'group_keys', 'format_groups']

_NUM = re.compile(r'^\d+$')


def _prefixes(key: str, max_depth: int) -> List[str]:
    """Module prefixes of ``key`` (parameter name excluded), shortest first, up to the first
    numeric part (inclusive) or ``max_depth`` names (plus a numeric part right after them)."""
    parts = key.split('.')[:-1]
    out = []
    for i, part in enumerate(parts):
        numeric = bool(_NUM.match(part))
        if i >= max_depth and not numeric:  # a layer index right after the cap is kept
            break
        out.append('.'.join(parts[:i + 1]))
        if numeric:
            break
    return out or [key]


def _wildcard(prefix: str) -> str:
    return '.'.join('*' if _NUM.match(p) else p for p in prefix.split('.'))


def _matches(key: str, pattern: str) -> bool:
    kp, pp = key.split('.'), pattern.split('.')
    return len(kp) >= len(pp) and all(p == '*' or p == k for k, p in zip(kp, pp))


def group_keys(keys: Iterable[str], others: Iterable[str], max_depth: int = 3,
               population: Optional[Iterable[str]] = None) -> 'OrderedDict[str, dict]':
    """Group ``keys`` by module.

    Args:
        keys: the keys to group (e.g. the missing ones).
        others: keys on the other side (e.g. the checkpoint's); a group never spans a module
            that also holds one of them, so a partially loaded module is reported at the level
            where it is partial.
        max_depth (int): at most this many module names in a group.
        population: the keys each group's total is counted from (default ``keys``).

    Returns:
        OrderedDict: ``group -> dict(count, total, example)``, largest groups first.
    """
    keys = list(keys)
    taken = set()  # every module prefix that holds a key of the other side
    for o in others:
        parts = o.split('.')
        taken.update('.'.join(parts[:i]) for i in range(1, len(parts) + 1))
    population = keys if population is None else list(population)
    groups: Dict[str, List[str]] = {}
    for key in keys:
        cands = _prefixes(key, max_depth)
        chosen = cands[-1]
        for p in cands:  # shortest prefix that no key of the other side lives under
            if p not in taken:
                chosen = p
                break
        groups.setdefault(_wildcard(chosen), []).append(key)
    out = OrderedDict()
    for g, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        total = sum(_matches(k, g) for k in population)
        out[g] = dict(count=len(members), total=max(total, len(members)), example=members[0])
    return out


def format_groups(groups: 'OrderedDict[str, dict]') -> str:
    """``'encoder.layers.*.latent (24 of 24), ...'``: a one-line summary of :func:`group_keys`."""
    return ', '.join(f'{name} ({g["count"]} of {g["total"]})' for name, g in groups.items())


@dataclass
class CheckpointReport:
    """Missing / unexpected keys and shape mismatches between a model and a state dict.

    Attributes:
        missing (list[str]): model keys the state dict lacks (``num_batches_tracked`` ignored).
        unexpected (list[str]): state-dict keys the model lacks.
        shape_mismatch (list[tuple]): ``(key, checkpoint_shape, model_shape)``.
        missing_groups, unexpected_groups (OrderedDict): see :func:`group_keys`.
        other_errors (list[str]): any other message the loader produced.
        total (int): the model's keys (``num_batches_tracked`` ignored).
    """
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    missing_groups: 'OrderedDict[str, dict]' = field(default_factory=OrderedDict)
    unexpected_groups: 'OrderedDict[str, dict]' = field(default_factory=OrderedDict)
    other_errors: List[str] = field(default_factory=list)
    source: str = 'the state dict'
    total: int = 0

    @property
    def loaded(self) -> int:
        """Model keys the state dict filled (present with the model's shape)."""
        return self.total - len(self.missing) - len(self.shape_mismatch)

    @property
    def nothing_loaded(self) -> bool:
        """The state dict filled none of the model's keys (a checkpoint of another model)."""
        return self.total > 0 and self.loaded <= 0

    def check_loaded(self, what: str = 'checkpoint') -> None:
        """Raise a ``ValueError`` naming ``what`` when nothing was loaded."""
        if self.nothing_loaded:
            example = f', e.g. {self.unexpected[0]!r}' if self.unexpected else ''
            raise ValueError(
                f'{what}: none of the model\'s {self.total} keys is in it ({len(self.unexpected)} '
                f'keys the model does not have{example}, {len(self.shape_mismatch)} of another '
                'shape): is it a checkpoint of another model or config?')

    def __bool__(self) -> bool:
        """True when the model and the state dict do not match exactly."""
        return bool(self.missing or self.unexpected or self.shape_mismatch or self.other_errors)

    def format(self) -> str:
        """The grouped, human-readable report ('' when everything matched)."""
        if not self:
            return ''
        lines = [f'The model and {self.source} do not match: {len(self.missing)} missing, '
                 f'{len(self.unexpected)} unexpected, {len(self.shape_mismatch)} shape '
                 f'mismatch(es); {self.loaded} of the model\'s {self.total} keys loaded.']
        for title, groups, word in (
                ('missing keys (in the model, not in the checkpoint)', self.missing_groups,
                 'missing'),
                ('unexpected keys (in the checkpoint, not in the model)', self.unexpected_groups,
                 'unexpected')):
            if groups:
                n = sum(g['count'] for g in groups.values())
                lines.append(f'{title}: {n} in {len(groups)} group(s)')
                lines += [f'  {name}: {g["count"]} {word} (of {g["total"]}), e.g. {g["example"]}'
                          for name, g in groups.items()]
        if self.shape_mismatch:
            lines.append('shape mismatches (key: checkpoint shape vs model shape; not loaded): '
                         f'{len(self.shape_mismatch)}')
            lines += [f'  {k}: {tuple(a)} vs {tuple(b)}' for k, a, b in self.shape_mismatch]
        if self.other_errors:
            lines.append('other errors:')
            lines += [f'  {e}' for e in self.other_errors]
        return '\n'.join(lines)

    __str__ = format


def _unwrap(model):
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def checkpoint_report(model: torch.nn.Module,
                      state_dict: Mapping[str, torch.Tensor],
                      max_depth: int = 3,
                      missing: Optional[Sequence[str]] = None,
                      unexpected: Optional[Sequence[str]] = None,
                      logger=None,
                      source: str = 'the state dict') -> CheckpointReport:
    """Compare ``state_dict`` with ``model.state_dict()`` and group the differences by module.

    Args:
        model (nn.Module): the model (wrappers such as DDP are unwrapped).
        state_dict (Mapping): the checkpoint's state dict (after any key revision).
        max_depth (int): see :func:`group_keys`.
        missing, unexpected (list[str], optional): the loader's own lists (they include what
            load hooks changed); computed from the key sets when not given.
        logger: if given (a logger, its name, or ``'current'``), the report is logged there as
            a warning when the two do not match.
        source (str): how the state dict is named in the report (e.g. the checkpoint path).

    Returns:
        CheckpointReport
    """
    own = _unwrap(model).state_dict()
    if missing is None:
        missing = [k for k in own if k not in state_dict]
    if unexpected is None:
        unexpected = [k for k in state_dict if k not in own]
    missing = [k for k in missing if 'num_batches_tracked' not in k]
    unexpected = list(unexpected)
    mismatch = []
    for k, v in state_dict.items():
        if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape):
            mismatch.append((k, tuple(v.shape), tuple(own[k].shape)))
    report = CheckpointReport(
        missing=missing, unexpected=unexpected, shape_mismatch=mismatch,
        missing_groups=group_keys(missing, state_dict.keys(), max_depth, population=own.keys()),
        unexpected_groups=group_keys(unexpected, own.keys(), max_depth,
                                     population=state_dict.keys()),
        source=source, total=sum('num_batches_tracked' not in k for k in own))
    if logger is not None and report:
        print_log(report.format(), logger=logger, level=logging.WARNING)
    return report

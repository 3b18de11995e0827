"""The joint token sequence of Latent-VG as one object (Sec. 3.1-3.2).

The BEiT-3 encoder runs one sequence ``X [B, T, C]`` made of consecutive groups::

    X = [ v_0 | v_1 .. v_P | t_cls t_1 .. t_m | Z^1 | ... | Z^N ]
          ^ visual CLS slot (the subject token s when it replaces the CLS)
    Z^i = [ z_cls^i | s^i | a^i_1 .. a^i_{k_i} ]          (k_i + 2 tokens)

    group_sizes = [1 + P, L, k_1 + 2, ..., k_N + 2],   L = m + 1

:class:`TokenLayout` is built by the detector from the patch grid, the text length and the latent
lengths and handed to the backbone (``group_sizes``), the subject distributor (subject slots) and
the visual concept injector (patches, text CLS, attribute slices), so no module counts positions
itself.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ['TokenLayout', 'as_layout', 'positions_slice', 'take_tokens']


@dataclass(frozen=True)
class TokenLayout:
    """Positions of every token group in the joint sequence.

    Args:
        num_vis (int): ``1 + P`` (visual CLS slot and patches).
        num_text (int): ``L`` text tokens (``<s>`` first).
        latent_sizes (tuple[int]): ``k_i + 2`` for every latent expression.
        subject_slot (int): position of ``s^i`` inside a latent group (1).
        attr_start (int): first attribute position inside a latent group (2).
    """
    num_vis: int
    num_text: int
    latent_sizes: Tuple[int, ...] = ()
    subject_slot: int = 1
    attr_start: int = 2

    def __post_init__(self):
        object.__setattr__(self, 'latent_sizes', tuple(int(n) for n in self.latent_sizes))
        if self.num_vis < 1 or self.num_text < 1:
            raise ValueError(f'TokenLayout: num_vis={self.num_vis} and num_text={self.num_text} '
                             'must be >= 1')
        for n in self.latent_sizes:
            if n <= self.attr_start or self.subject_slot >= self.attr_start:
                raise ValueError(f'TokenLayout: a latent group of {n} tokens has no room for the '
                                 f'CLS, subject (slot {self.subject_slot}) and attributes (from '
                                 f'{self.attr_start})')

    @classmethod
    def build(cls, num_patches: int, text_len: int,
              attr_lengths: Sequence[int] = ()) -> 'TokenLayout':
        """From the patch count ``P``, the text length ``L`` and the attribute lengths
        ``k_i``."""
        return cls(1 + num_patches, text_len, tuple(k + 2 for k in attr_lengths))

    # ------------------------------------------------------------------ groups
    @property
    def group_sizes(self) -> List[int]:
        """``[1 + P, L, k_1 + 2, ..., k_N + 2]`` (what the BEiT-3 encoder routes by)."""
        return [self.num_vis, self.num_text, *self.latent_sizes]

    @property
    def num_latents(self) -> int:
        return len(self.latent_sizes)

    @property
    def length(self) -> int:
        """``T``, the sequence length."""
        return sum(self.group_sizes)

    @property
    def offsets(self) -> List[int]:
        """Start of every group."""
        out, start = [], 0
        for n in self.group_sizes:
            out.append(start)
            start += n
        return out

    # ------------------------------------------------------------------ positions
    @property
    def patches(self) -> slice:
        """The ``P`` patch tokens."""
        return slice(1, self.num_vis)

    @property
    def text_cls(self) -> int:
        """Position of the text ``<s>`` (``t_cls``)."""
        return self.num_vis

    def latent(self, i: int) -> slice:
        """All tokens of latent expression ``i``."""
        start = self.offsets[2 + i]
        return slice(start, start + self.latent_sizes[i])

    def latent_cls(self, i: int) -> int:
        return self.offsets[2 + i]

    def subject(self, i: int) -> int:
        """Position of ``s^i`` (overwritten by the subject distributor)."""
        return self.offsets[2 + i] + self.subject_slot

    def attrs(self, i: int) -> slice:
        """Attribute tokens ``a^i`` of latent expression ``i``."""
        start = self.offsets[2 + i]
        return slice(start + self.attr_start, start + self.latent_sizes[i])

    @property
    def class_tokens(self) -> List[int]:
        """``[t_cls, z_cls^1, ..., z_cls^N]``: the tokens the head reads."""
        return [self.text_cls] + [self.latent_cls(i) for i in range(self.num_latents)]


def as_layout(layout, x=None, owner: str = 'TokenLayout') -> TokenLayout:
    """A :class:`TokenLayout`, or group sizes ``[1 + P, L, n_1, ..., n_N]`` turned into one;
    with a sequence ``x [B, T, C]``, also check that ``T`` is the layout's length."""
    if not isinstance(layout, TokenLayout):
        sizes = [int(n) for n in layout]
        if len(sizes) < 2:
            raise ValueError(f'group sizes {sizes} must be [1 + P, L, n_1, ..., n_N]')
        layout = TokenLayout(sizes[0], sizes[1], tuple(sizes[2:]))
    if x is not None and x.size(1) != layout.length:
        raise ValueError(f"{owner}: sequence length {x.size(1)} != the layout's "
                         f'{layout.length} ({layout.group_sizes})')
    return layout


def positions_slice(positions: Sequence[int]) -> Optional[slice]:
    """Increasing, evenly spaced ``positions`` as a ``slice`` (one position: ``p:p+1``); else
    ``None``."""
    positions = list(positions)
    if len(positions) == 1:
        return slice(positions[0], positions[0] + 1)
    step = positions[1] - positions[0] if len(positions) > 1 else 0
    if step > 0 and all(b - a == step for a, b in zip(positions, positions[1:])):
        return slice(positions[0], positions[-1] + 1, step)
    return None


def take_tokens(x: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """``x[:, positions]`` for ``x [B, T, C]`` as a new tensor, built from slices. Indexing with
    a Python list copies the list to ``x``'s device and, on a GPU, waits for that copy (a host
    synchronisation per call, found by ``tools/analysis_tools/gpu_check.py``'s audit)."""
    span = positions_slice(positions)
    if span is not None:
        return x[:, span].clone(memory_format=torch.contiguous_format)
    return torch.cat([x[:, p:p + 1] for p in positions], dim=1)

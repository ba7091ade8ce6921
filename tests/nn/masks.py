"""Record the regularizer masks a kernel stack draws, for reference loops in tests.

`KernelStackBase` draws every mask through a method: `_kernel_weight_mask` (weight
drop, per layer-direction), `_kernel_step_masks` (the masks that change the
recurrent step, per layer-direction) and `_kernel_locked_mask` (locked dropout
between layers). Wrapping one on a module instance records what it returns,
without changing what is drawn.
"""

from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

from torch import Tensor


@contextmanager
def recorded_step_masks(module) -> Iterator[List[List[Optional[Tensor]]]]:
    """Yields a list that receives, per layer-direction k in run order, the masks
    [rec (B, W), zone_h (T, B, W), zone_c (T, B, H)] the module drew (None: off)."""
    found: List[List[Optional[Tensor]]] = []
    draw = module._kernel_step_masks

    def record(k, batch, steps, like):
        masks = draw(k, batch, steps, like)
        found.append([None if m is None else m.clone() for m in masks])
        return masks

    module._kernel_step_masks = record
    try:
        yield found
    finally:
        del module._kernel_step_masks


@contextmanager
def recorded_weight_masks(module) -> Iterator[List[Tuple[int, Optional[Tensor]]]]:
    """Yields a list that receives (k, M/(1-P)) for every weight-drop mask drawn,
    per layer-direction k in run order (mask None: not drawn, in eval)."""
    found: List[Tuple[int, Optional[Tensor]]] = []
    draw = module._kernel_weight_mask

    def record(k, w_hh):
        mask = draw(k, w_hh)
        found.append((k, None if mask is None else mask.clone()))
        return mask

    module._kernel_weight_mask = record
    try:
        yield found
    finally:
        del module._kernel_weight_mask


@contextmanager
def recorded_locked_masks(module) -> Iterator[List[Tuple[int, Tensor]]]:
    """Yields a list that receives (layer, mask (B, F)) for every locked dropout
    mask drawn after a layer, rows in the caller's order of the sequences."""
    found: List[Tuple[int, Tensor]] = []
    draw = module._kernel_locked_mask

    def record(layer, batch, features, like):
        mask = draw(layer, batch, features, like)
        found.append((layer, mask.clone()))
        return mask

    module._kernel_locked_mask = record
    try:
        yield found
    finally:
        del module._kernel_locked_mask

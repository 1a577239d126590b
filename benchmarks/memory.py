"""Exact accounting of tensor memory on any device, for the benchmarks.

`PeakMemory` intercepts every operator (a `TorchDispatchMode`) and tracks the
bytes of the storages created inside it until they are freed, so peak memory
can be measured on a CPU, where torch keeps no allocator statistics.
"""

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakMemory(TorchDispatchMode):
    """Live bytes of tensors created inside the mode, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.owners = {}

    def _free(self, key, nbytes):
        if self.owners.pop(key, None) is not None:
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self.owners:
                    self.owners[key] = True
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._free, key, nbytes)
        return out

"""unipan: Unifying Training and Inference for Panoptic Segmentation (Li, Qi, Torr, CVPR 2020)."""

import os

# PyTorch's CPU allocator backs every allocation of 2 MB or more with transparent huge pages when
# THP_MEM_ALLOC_ENABLE=1. Inference at 1024x2048 allocates tensors of tens of MB per operation; with 4 KB
# pages the kernel's page faults took a third of the time after the detector (benchmarks/inference.py).
# torch reads the variable once, at its first allocation: it takes effect when this package is imported
# before torch (``kedro run``, the command lines); set it to 0 beforehand to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"

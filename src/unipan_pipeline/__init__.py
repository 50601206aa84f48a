"""unipan: Unifying Training and Inference for Panoptic Segmentation (Li, Qi, Torr, CVPR 2020)."""

__version__ = "0.1.0"

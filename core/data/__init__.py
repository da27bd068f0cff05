"""Embedded default data: the procedural motion-action dataset."""

from core.data.synthetic import (CLASSES, NUM_CLASSES, SPLIT_OFFSETS, SyntheticClip, class_index,
                                 make_clip, make_split, parse_synthetic)

__all__ = ["CLASSES", "NUM_CLASSES", "SPLIT_OFFSETS", "SyntheticClip", "class_index", "make_clip",
           "make_split", "parse_synthetic"]

"""Data: reading images, paired datasets, transforms, pyramids, synthetic scenes, pair making.

The public entry points are re-exported here; see ``docs/ARCHITECTURE.md`` for the contracts
(image arrays from :func:`read_image`, item dicts from :func:`build_dataset`).
"""
from __future__ import annotations

from .datasets import (
    AlignedPairs,
    FolderPairs,
    LabelMapPairs,
    build_dataset,
    check_dataset,
    encode_input,
    input_channels,
    input_read_mode,
)
from .io import (IMAGE_EXTENSIONS, list_images, prepare_output_dir, prepare_output_file, read_image, to_tensor,
                 to_uint8, write_image)
from .pairs import make_pairs
from .pyramid import build_pyramid, pyramid_multiple
from .synthetic import generate_synthetic, make_scene
from .synthetic_faces import FACE_CLASSES, SyntheticFace, SyntheticFaces, render_face, write_synthetic_faces
from .transforms import PairedTransform

__all__ = [
    "FACE_CLASSES",
    "SyntheticFace",
    "SyntheticFaces",
    "render_face",
    "write_synthetic_faces",
    "AlignedPairs",
    "FolderPairs",
    "IMAGE_EXTENSIONS",
    "LabelMapPairs",
    "PairedTransform",
    "build_dataset",
    "build_pyramid",
    "check_dataset",
    "encode_input",
    "generate_synthetic",
    "input_channels",
    "input_read_mode",
    "list_images",
    "make_pairs",
    "make_scene",
    "prepare_output_dir",
    "prepare_output_file",
    "pyramid_multiple",
    "read_image",
    "to_tensor",
    "to_uint8",
    "write_image",
]

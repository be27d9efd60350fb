"""JPEG-DL: a trainable JPEG compression layer (soft quantization of 8×8 DCT coefficients)."""

from .config import JpegConfig
from .init import INIT_METHODS, abs_avg_tables, initialize_tables, sensitivity_tables, tables_from_sensitivity
from .layer import MODES, JpegLayer, jpeg_layers, set_jpeg_mode
from .tables import STANDARD_CHROMA, STANDARD_LUMA, quality_scale, scaled_table, standard_tables
from .training import JpegTableTraining

__all__ = [
    "INIT_METHODS",
    "MODES",
    "STANDARD_CHROMA",
    "STANDARD_LUMA",
    "JpegConfig",
    "JpegLayer",
    "JpegTableTraining",
    "abs_avg_tables",
    "initialize_tables",
    "jpeg_layers",
    "quality_scale",
    "scaled_table",
    "sensitivity_tables",
    "tables_from_sensitivity",
    "set_jpeg_mode",
    "standard_tables",
]

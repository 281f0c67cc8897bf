"""THE one preprocessing implementation (training, export metadata, live): face crop, optical
flow, flow images, frame selection. See docs/ARCHITECTURE.md (slstt.preprocess)."""

from slstt.preprocess.face import (
    LANDMARKS,
    REGIONS,
    CropBox,
    FaceLandmarker,
    apply_crop,
    crop_box,
    default_face_model_path,
    eye_line_angle,
    face_box,
)
from slstt.preprocess.flow import compute_flow, encode_flow, flow_images_to_input
from slstt.preprocess.frames import frame_at, select_positions
from slstt.preprocess.pipeline import FlowClip, clip_to_flow_images, flow_magnitude_series

__all__ = [
    "LANDMARKS", "REGIONS", "CropBox", "FaceLandmarker", "apply_crop", "crop_box", "face_box",
    "default_face_model_path", "eye_line_angle", "compute_flow", "encode_flow",
    "flow_images_to_input", "frame_at", "select_positions", "FlowClip", "clip_to_flow_images",
    "flow_magnitude_series",
]

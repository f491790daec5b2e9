"""Face detection, alignment, image loading and video helpers (numpy, OpenCV, ONNX Runtime; no PyTorch).

>>> from litefer.vision import load_image, create_detector, crop_face
>>> rgb = load_image("photo.jpg")                 # uint8 RGB, EXIF-rotated
>>> faces = create_detector("auto").detect(rgb)   # [Face(box, score, landmarks)]
>>> crop = crop_face(rgb, "aligned112", landmarks=faces[0].landmarks)

See ``docs/detectors.md`` for the detectors, how they were chosen and what to install.
"""
from litefer.vision.align import (ARCFACE_112, BOX_LANDMARKS, CROPS, FER_48, crop_face, face_transform,
                                  landmarks_from_box, template, umeyama)
from litefer.vision.detect import (AUTO_ORDER, DetectorUnavailable, Face, FaceDetector, available_detectors,
                                   create_detector, list_detectors, register_detector)
from litefer.vision.io import (IMAGE_EXTS, MAX_PIXELS, VIDEO_EXTS, ImageLoadError, iter_image_files, load_image,
                               to_rgb)

__all__ = [
    "ARCFACE_112", "BOX_LANDMARKS", "CROPS", "FER_48", "crop_face", "face_transform", "landmarks_from_box",
    "template", "umeyama",
    "AUTO_ORDER", "DetectorUnavailable", "Face", "FaceDetector", "available_detectors", "create_detector",
    "list_detectors", "register_detector",
    "IMAGE_EXTS", "MAX_PIXELS", "VIDEO_EXTS", "ImageLoadError", "iter_image_files", "load_image", "to_rgb",
]

"""AnimalCLAP Edge runtime: stream audio, detect species and traits, log detections.

Runs on recorders (Jetson, Raspberry Pi class, any Linux box) with numpy and
onnxruntime; it never imports torch, transformers, `training` or `export`.
"""

__version__ = "0.1.0"

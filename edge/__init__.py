"""Line side of edge-inspect: grab frames, batch them, run the bundle, publish verdicts.

Importing this package must stay cheap and must not need torch or a GPU: backends
(onnxruntime, tensorrt) are imported lazily by the code that uses them.
"""

__version__ = "0.1.0"  # the one place: setup.cfg reads it (attr:), bundles record it

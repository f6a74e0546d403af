"""Training side of edge-inspect: learn from good parts, export one bundle for the line.

Needs torch (the ``train`` extra). Never imports ``edge`` or ``calibration``: the line side
reads what this package writes (``bundle.yaml`` + ``model.onnx``), nothing more.

From Python::

    from export.patchcore import PatchCoreConfig, export_patchcore
    export_patchcore("data/bottle", "bundles/bottle-patchcore", PatchCoreConfig(coreset_ratio=0.01))
"""

"""Training side of edge-inspect: learn from good parts, export one bundle for the line.

Needs torch (the ``train`` extra). Dependencies run export → calibration → edge, never back:
export uses ``edge.bundle`` (the bundle contract: schema version, hashing) and ``edge.engines``
(engine records) so writer and reader share one definition; the line side reads what this
package writes (``bundle.yaml`` + ``model.onnx``) and never imports it.

From Python::

    from export.patchcore import PatchCoreConfig, export_patchcore
    export_patchcore("data/bottle", "bundles/bottle-patchcore", PatchCoreConfig(coreset_ratio=0.01))
"""

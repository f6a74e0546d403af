"""The line side must run on a Jetson or GPU box with no torch: import it with torch made unimportable."""

from __future__ import annotations

import subprocess
import sys

BLOCK = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'torchvision', 'timm'}:
            raise ImportError(f'{name} is blocked: the line side must not need it')
sys.meta_path.insert(0, _NoTorch())
import edge, edge.daemon, edge.cli, edge.check, edge.capture, edge.genicam, edge.backends.onnxruntime, edge.sources, edge.listen, edge.inspector
import calibration.calibrate, calibration.cli, calibration.eval_cli, calibration.report, calibration.evaluate
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'timm', 'export'})
print('loaded:', loaded)
assert not loaded, loaded
assert 'harvesters' not in sys.modules, 'harvesters is for GenICam sources only, imported when one opens'
"""


def test_line_side_imports_without_torch():
    r = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "loaded: []" in r.stdout


def test_import_edge_is_light():
    """`import edge` alone pulls in no runtime: backends load lazily."""
    code = "import sys, edge; print(sorted(m for m in ('onnxruntime', 'zmq', 'cv2', 'tensorrt') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr

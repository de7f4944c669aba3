"""Deploying a finished run: export to ONNX or TorchScript with a parity check (``tunesmith export``).

Note: the function :func:`export` shadows its module's name on this package; reach the module itself
with ``importlib.import_module("tunesmith.deploy.export")``.
"""

from __future__ import annotations

from tunesmith.deploy.export import FORMATS, ExportResult, export

__all__ = ["FORMATS", "ExportResult", "export"]

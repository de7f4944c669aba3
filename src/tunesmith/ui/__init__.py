"""A local web UI (``tunesmith ui``): launch, watch, compare and inspect runs in the browser.

:func:`create_app` builds the FastAPI app over a runs directory; :func:`run_ui` serves it with uvicorn.
The pages are static files in ``tunesmith/ui/static`` (no build step, nothing from the network).
"""

from tunesmith.ui.app import create_app, run_ui

__all__ = ["create_app", "run_ui"]

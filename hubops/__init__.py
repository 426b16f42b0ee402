"""hubops: a GPU-backed multi-user JupyterHub for a research lab, driven from one repo.

This package must stay importable without its dependencies: ``python3 -m hubops.quickstart``
runs before anything is installed.
"""

from __future__ import annotations

__version__ = "0.1.0"

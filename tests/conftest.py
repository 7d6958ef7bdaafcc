"""Make ``tests.support`` importable however pytest is invoked.

``python -m pytest`` from the repository root already has the root on
sys.path; a bare ``pytest`` (rootdir-relative imports) does not.
"""

import sys
from pathlib import Path

_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

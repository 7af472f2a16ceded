"""Check this evidence package offline, with nothing but Python 3.11 or later (no network, nothing to install):

    python3 verifier/verify_export.py . --central-key KEY

from the package's top folder. The `evidence` folder beside this file is the verifier (docs/FORMAT.md §14).
"""

import sys
import tempfile
from pathlib import Path

# Compiled files are neither written into the package (a disc is read-only, a copy must stay as its manifest
# lists it) nor read from it: a __pycache__ slipped in beside the checked sources would run instead of them.
sys.dont_write_bytecode = True
sys.pycache_prefix = tempfile.mkdtemp(prefix="verify-export-")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence.package import main  # noqa: E402  (found only once the path above is set)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

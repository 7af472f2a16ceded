"""Check this evidence package offline, with nothing but Python 3.11 or later (no network, nothing to install):

    python3 verifier/verify_export.py . --central-key KEY

from the package's top folder. The `evidence` folder beside this file is the verifier (docs/FORMAT.md §14).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # a disc is read-only, and a copy must stay as the manifest lists it

from evidence.package import main  # noqa: E402  (found only once the path above is set)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The verifier a third party runs with nothing but CPython 3.11+ (FORMAT §7.5): no package to install, no
network. An export carries the files `verifier_sources()` names, in a folder `evidence/`; from the folder
that holds it:

    python3 -m evidence.standalone SESSION_FOLDER --key DEVICE_KEY_BASE64

prints what `recorder verify` prints and exits 0 when every session verifies, 1 when one does not. Signatures
are checked by `cryptography` if that happens to be installed, else by evidence/ed25519.py; both give the same
verdicts (evidence/keys.py).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

from evidence.errors import EvidenceError
from evidence.keys import load_public_key_b64
from evidence.layout import session_folders
from evidence.verify import verify_session

PACKAGE = "evidence"
_HERE = Path(__file__).resolve().parent
_ROOTS = (f"{PACKAGE}.standalone", f"{PACKAGE}.verify", f"{PACKAGE}.audit", f"{PACKAGE}.package")
"""This entry point, a session's verifier, the access audit's check (`check_audit`) and an export package's
check (`check_package`)."""


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _run_at_import(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements of a module's body that run when it is imported: into `if`/`try` blocks, but not into
    functions and classes (their imports are for what verifying does not do: decrypting) nor under
    `if TYPE_CHECKING:`."""
    found: list[ast.stmt] = []
    for statement in body:
        found.append(statement)
        if isinstance(statement, ast.If):
            if not _is_type_checking(statement.test):
                found += _run_at_import(statement.body)
            found += _run_at_import(statement.orelse)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, *(h.body for h in statement.handlers), statement.orelse,
                          statement.finalbody):
                found += _run_at_import(block)
    return found


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    path = _HERE.joinpath(*parts[1:]).with_suffix(".py") if len(parts) > 1 else _HERE / "__init__.py"
    return path if path.is_file() else None


def _imported(module: str) -> set[str]:
    """The modules of this package that importing `module` imports."""
    path = _module_file(module)
    assert path is not None
    names: set[str] = set()
    for node in _run_at_import(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: this package is flat
                base = f"{PACKAGE}.{base}".rstrip(".")
            names.add(base)
            # `from evidence import keys` imports the module evidence.keys.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if _module_file(name) is not None}


def verifier_sources() -> list[Path]:
    """The files of this package a standalone verification imports (this module, evidence.verify and
    evidence.audit, and what they import when imported), read from their import statements, so the list
    follows the code. Copy them into a folder `evidence/` to verify with nothing but Python."""
    seen: set[str] = set()
    todo = [PACKAGE, *_ROOTS]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += _imported(module)
    return sorted(path for module in seen if (path := _module_file(module)) is not None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m evidence.standalone",
        description="Verify recorded sessions offline with nothing but Python: every entry's form, chain and "
                    "signature under the device's key, every segment's SHA-256 and size, no segment or entry "
                    "missing, added or moved, the timeline covered, the session closed (docs/FORMAT.md §7).")
    parser.add_argument("path", type=Path, help="a session folder, or a folder holding sessions")
    parser.add_argument("--key", required=True, metavar="BASE64",
                        help="the device's public key (base64), as central enrolled it: the signatures are "
                             "checked against it")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        load_public_key_b64(args.key)
    except EvidenceError as err:
        print(f"verify: --key: {err}; give the device's base64 public key", file=sys.stderr)
        return 2
    folders = list(session_folders(args.path))
    if not folders:
        print(f"verify: {args.path}: no session found (a session folder has an entries/ subfolder)", file=sys.stderr)
        return 2
    try:
        reports = [verify_session(folder, args.key) for folder in folders]
    except EvidenceError as err:
        print(f"verify: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_json() for r in reports], indent=1, ensure_ascii=False))
    else:
        for report in reports:
            print(report.text("--key"))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

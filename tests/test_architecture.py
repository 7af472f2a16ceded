"""The walls between the packages (docs/ARCHITECTURE.md, "Which package may import which"): every import
in the tree keeps to the map, no package or module imports in a circle, and central's receiver runs
without the device's media libraries."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def _the_map() -> tuple[dict[str, set[str]], dict[str, set[str]], set[str], set[str]]:
    """The table of ARCHITECTURE.md's "Which package may import which", and the modules of firmware_py its
    text lets import central: the document is the map, so the two cannot drift apart."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Which package may import which", 1)[1].split("\n## ", 1)[0]
    may, may_not = {}, {}
    for row in re.finditer(r"^\| `(\w+)` \| ([^|]*)\| ([^|]*)\|$", section, re.MULTILINE):
        may[row.group(1)] = set(re.findall(r"`(\w+)`", row.group(2)))
        may_not[row.group(1)] = set(re.findall(r"`(\w+)`", row.group(3)))
    also = set(re.findall(r"`(firmware_py\.\w+)`", section.split("may also import `central`", 1)[1].split("\n\n")[0]))
    media = set(re.findall(r"`(central\.[\w.]+)`", section.split("may also import `av`", 1)[1].split("\n\n")[0]))
    return may, may_not, also, media


MAY_IMPORT, NO_THIRD_PARTY, ALSO_CENTRAL, ALSO_AV = _the_map()
PACKAGES = tuple(MAY_IMPORT)


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
            # `from evidence import layout` imports the module evidence.layout.
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names
                      if (ROOT / Path(*node.module.split("."), f"{alias.name}.py")).exists()]
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_map_covers_every_package_of_the_product() -> None:
    assert set(PACKAGES) == {"evidence", "hal", "capture", "provisioning", "mqtt", "central", "firmware_py"}
    assert "av" in NO_THIRD_PARTY["evidence"] and "numpy" in NO_THIRD_PARTY["central"]
    assert {"firmware_py.cli", "firmware_py.rig", "firmware_py.demo", "firmware_py.crash_trials"} == ALSO_CENTRAL
    assert {"central.web.playback"} == ALSO_AV


def test_every_import_keeps_to_the_map() -> None:
    broken = []
    for package in PACKAGES:
        for path in _sources(package):
            module = _module(path)
            allowed = MAY_IMPORT[package] | {package} | ({"central"} if module in ALSO_CENTRAL else set())
            for name, line in _imports(path):
                top = name.split(".")[0]
                if top in PACKAGES and top not in allowed:
                    broken.append(f"{path.relative_to(ROOT)}:{line}: {package} may not import {name}")
                if top in NO_THIRD_PARTY.get(package, set()) and not (top == "av" and module in ALSO_AV):
                    broken.append(f"{path.relative_to(ROOT)}:{line}: {package} may not import {name}")
                if top == "tests":
                    broken.append(f"{path.relative_to(ROOT)}:{line}: the product may not import {name}")
    for path in sorted((ROOT / "bench").rglob("*.py")):
        broken += [f"{path.relative_to(ROOT)}:{line}: bench may not import {name}"
                   for name, line in _imports(path) if name.split(".")[0] == "tests"]
    assert not broken, "\n".join(broken)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in the graph, as the list of its nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_package_and_no_module_imports_in_a_circle() -> None:
    packages: dict[str, set[str]] = {p: set() for p in PACKAGES}
    modules: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in _sources(package):
            module = _module(path)
            for name, _ in _imports(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != package and module not in ALSO_CENTRAL:
                    packages[package].add(top)
            modules[module] = {name for name, _ in _imports(path, top_level_only=True)
                               if name.split(".")[0] in PACKAGES and name != module}
    modules = {m: {n for n in deps if n in modules} for m, deps in modules.items()}
    assert _cycle(packages) is None, f"packages import in a circle: {' -> '.join(_cycle(packages) or [])}"
    assert _cycle(modules) is None, f"modules import in a circle: {' -> '.join(_cycle(modules) or [])}"


def test_central_receiver_runs_without_the_media_libraries() -> None:
    probe = ("import sys, central.receiver, central.cli, evidence.verify; "
             "print(sorted(m for m in ('av', 'numpy', 'gpiozero', 'sounddevice', 'PIL') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_verifier_needs_only_the_evidence_core() -> None:
    probe = ("import sys, evidence.verify; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'av', 'numpy', 'paho', 'capture', 'hal', "
             "'mqtt', 'central', 'firmware_py', 'provisioning'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_each_side_installs_without_the_others_libraries() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}

    base, device, central = names(project["dependencies"]), names(extras["device"]), names(extras["central"])
    assert base == {"cryptography"}, "the evidence core, and so `recorder verify`, needs nothing else"
    media_and_hardware = {"av", "numpy", "pillow", "gpiozero", "sounddevice", "picamera2", "lgpio", "tinydb"}
    assert media_and_hardware <= device | names(extras["pi"]), "the device's libraries are in its extras"
    assert not central & (media_and_hardware - {"av"}), "central installs none of the device's hardware libraries"
    assert "av" in central, "central's web application remuxes segments for the browser with PyAV"
    assert "room-recorder" in names(extras["pi"]) and "picamera2" in names(extras["pi"])

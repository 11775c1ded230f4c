"""The documentation's promises that code can check: every object the API reference lists has a
docstring, the README stays a front page, and avae's modules import each other in one direction."""
import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _api_objects() -> list[str]:
    """Dotted names of everything docs/api.md renders: each ``::: target`` and its ``members``; a module
    rendered without a members list shows all its public functions and classes (its ``__all__``)."""
    listed: dict[str, list[str] | None] = {}
    target = None
    for line in (REPO / "docs" / "api.md").read_text().splitlines():
        if line.startswith("::: "):
            target = line[4:].strip()
            listed[target] = None
        elif target and (m := re.match(r"\s+members: \[(.*)\]", line)):
            listed[target] = [name.strip() for name in m.group(1).split(",")]
    names = []
    for target, members in listed.items():
        names.append(target)
        if members is None and isinstance(obj := _resolve(target), type(importlib)):
            members = [n for n in getattr(obj, "__all__", []) if callable(getattr(obj, n))]
        names.extend(f"{target}.{name}" for name in members or [])
    return names


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("name", _api_objects())
def test_every_object_the_api_reference_lists_has_a_docstring(name):
    obj = _resolve(name)
    if isinstance(obj, (tuple, list, dict, str)):  # constants are documented where they are defined
        return
    doc = (obj.__doc__ or "").strip()
    assert doc, f"{name} has no docstring"
    # a dataclass without one gets its signature as __doc__: that documents nothing
    assert not doc.startswith(f"{getattr(obj, '__name__', '')}("), f"{name} has only its generated signature"


def test_the_readme_is_a_front_page():
    assert len((REPO / "README.md").read_bytes()) <= 12 * 1024


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The avae modules ``path`` imports, at any depth of the file (a function's lazy import counts)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([f"{node.module}.{a.name}" for a in node.names] + [node.module]
                 if isinstance(node, ast.ImportFrom) and node.module else
                 [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("avae"):
                found.add(name)
                break
    return found


def test_no_import_cycle_among_avaes_modules():
    """Data flows one way (data -> transforms -> nets -> models -> align -> train -> evaluate -> report):
    no module reaches itself through the modules it imports, lazy imports inside functions included."""
    root = REPO / "src"
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "avae").rglob("*.py")}
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)

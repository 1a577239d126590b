"""The API reference covers the public surface: every `__all__` name of every public module.

A name is covered when a `::: module` directive on some docs page renders the
module that defines it (mkdocstrings renders the module's documented public
members), or a `::: module.Name` directive renders it by name. mkdocstrings
skips members without a docstring, so each covered name must also have one
(for a constant or a type alias: a string literal right after its assignment).
Every API page must be reachable from the nav of `mkdocs.yml`.
"""

import ast
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "discdiff"
DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$")


def public_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return names


def directives() -> dict[str, dict]:
    """`::: target` → its options (a `members:` list restricts what a module directive shows)."""
    found = {}
    for page in sorted((ROOT / "docs").rglob("*.md")):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            match = DIRECTIVE.match(line)
            if not match:
                continue
            block = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith((" ", "\t")):
                    break
                block.append(following)
            options = yaml.safe_load("\n".join(block) or "{}") or {}
            found[match.group(1)] = options.get("options", {})
    return found


@cache
def top_level_docstrings(module: str) -> dict[str, bool]:
    """Names assigned at the top of `module`, and whether a docstring follows each."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    body = ast.parse(path.read_text()).body
    result = {}
    for node, following in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        else:
            continue
        documented = (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        )
        for target in targets:
            result[target] = documented
    return result


def home(module: str, name: str) -> tuple[str, str, bool]:
    """(defining module, qualified name, has a docstring) of `module.name`."""
    obj = getattr(importlib.import_module(module), name)
    defined_in = getattr(obj, "__module__", None) or ""
    if callable(obj) and hasattr(obj, "__qualname__") and defined_in.startswith("discdiff"):
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__  # not inherited
        return obj.__module__, obj.__qualname__, bool(doc)
    for candidate in [module, *public_modules()]:  # a constant or alias: where it is assigned
        assigned = top_level_docstrings(candidate)
        if name in assigned and getattr(importlib.import_module(candidate), name) is obj:
            return candidate, name, assigned[name]
    raise AssertionError(f"cannot find where {module}.{name} is defined")


def covered(target_module: str, qualname: str, rendered: dict[str, dict]) -> bool:
    if f"{target_module}.{qualname}" in rendered:
        return True
    if target_module not in rendered:
        return False
    members = rendered[target_module].get("members")
    if members is None or members is True:
        return not qualname.startswith("_")
    return bool(members) and qualname.split(".")[0] in members


PUBLIC = [
    (module, name)
    for module in public_modules()
    for name in getattr(importlib.import_module(module), "__all__", [])
]


def test_there_is_a_public_surface():
    assert len(PUBLIC) > 50
    assert "discdiff.testing" in public_modules()


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_is_rendered(module, name):
    defining, qualname, documented = home(module, name)
    assert covered(defining, qualname, directives()), (
        f"{module}.{name} (defined as {defining}.{qualname}) is on no API page: add "
        f"`::: {defining}` to a page under docs/api/"
    )
    assert documented, f"{defining}.{qualname} has no docstring, so mkdocstrings would skip it"


def nav_pages(entries) -> set[str]:
    pages = set()
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages |= nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_api_pages_are_in_the_nav():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        assert f"api/{page.name}" in nav, f"docs/api/{page.name} is not in the mkdocs.yml nav"

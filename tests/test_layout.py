"""The package layout: studies above the library, a parsing-only CLI, distinct module names.

Read from the source (every `import` statement, at the top of a module or
inside a function), so a lazy import counts as much as a top-level one.
"""

import ast
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "discdiff"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The discdiff modules `path` imports (`from a import b` counts `a` and `a.b`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "discdiff" or name.startswith("discdiff.")}


MODULES = {_module(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_library_never_imports_the_studies():
    above = ("discdiff.studies", "discdiff.cli")
    importers = sorted(
        module
        for module, imported in MODULES.items()
        if not any(_under(module, a) for a in above)
        and any(_under(name, "discdiff.studies") for name in imported)
    )
    assert importers == []
    # The walk does find imports of the studies: the CLI's.
    assert any(_under(n, "discdiff.studies") for n in MODULES["discdiff.cli"])


def test_evaluation_does_not_import_the_configuration_layer():
    evaluation = {m: i for m, i in MODULES.items() if _under(m, "discdiff.evaluation")}
    assert "discdiff.evaluation.metrics" in evaluation
    above = ("discdiff.config", "discdiff.runs", "discdiff.harness", "discdiff.finetune")
    assert {m for m, imported in evaluation.items() if set(above) & set(imported)} == set()


def test_the_cli_imports_only_drivers_errors_and_help_texts():
    allowed = (
        "discdiff._io",  # error types
        "discdiff.config",  # ConfigError, describe_config (the help's config reference)
        "discdiff.data.sft",  # SFTDataError
        "discdiff.harness",
        "discdiff.finetune",
        "discdiff.presets",  # help texts
        "discdiff.runs",
        "discdiff.studies",
        "discdiff.tokenizer_loader",  # RemoteCodeError
        "discdiff.training.lora",  # LoraSpec.parse
    )
    imported = {
        name
        for name in MODULES["discdiff.cli"]
        if name in MODULES and not any(_under(name, a) for a in allowed)
    }
    assert imported == set()


def test_module_names_are_distinct():
    names = Counter(path.stem for path in PACKAGE.rglob("*.py") if path.name != "__init__.py")
    assert [name for name, count in names.items() if count > 1] == []

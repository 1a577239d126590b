"""Build hooks for the docs site (`mkdocs.yml` names this file twice).

- As a griffe extension (`mkdocstrings` → `extensions:`): a docstring's
  `Example:` section is read as the Google style's `Examples:` section, so its
  `>>>` lines render as code. Google's parser reads only the plural as examples
  and any other `Word:` header as an admonition of plain Markdown, where each
  `>>>` line would start a nested blockquote.
- As an mkdocs hook (`hooks:`): a fence opened as ```` ```python no-run ````
  (shown, not run, by `tests/test_docs.py`: a hub download) renders as Python.
"""

import re

import griffe

EXAMPLE_HEADER = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
NO_RUN_FENCE = re.compile(r"^(\s*)```python no-run[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Reads a docstring's `Example:` header as `Examples:`."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        """Renames the header before the docstring is parsed (parsing is lazy)."""
        if obj.docstring is not None:
            obj.docstring.value = EXAMPLE_HEADER.sub(r"\1Examples:", obj.docstring.value)


def on_page_markdown(markdown: str, **kwargs) -> str:
    """Renders ```` ```python no-run ```` fences as Python code."""
    return NO_RUN_FENCE.sub(r"\1```python", markdown)

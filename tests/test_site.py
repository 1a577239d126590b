"""The built docs site works offline and renders what its sources mean.

MathJax is vendored (docs/javascripts/mathjax/), so formulas render without
network access, and the theme's Google Fonts are off. Every page's prose is
rendered: docstring examples as code, fences as code blocks, each formula
inside one `arithmatex` element.
"""

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Resources(HTMLParser):
    """URLs a page loads: script and image sources, stylesheets, icons, fonts, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video") and values.get("src"):
            self.urls.append(values["src"])
        if tag == "link" and values.get("href"):
            rel = set((values.get("rel") or "").split())
            if rel & {"stylesheet", "preload", "preconnect", "icon", "modulepreload", "prefetch"}:
                self.urls.append(values["href"])


class _Prose(HTMLParser):
    """The text a page shows outside code, scripts and formulas, and its formulas' TeX."""

    VERBATIM = frozenset({"code", "pre", "script", "style", "textarea"})
    VOID = frozenset({"br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, str]] = []
        self.prose: list[str] = []
        self.math: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append((tag, dict(attrs).get("class") or ""))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if any("arithmatex" in classes.split() for _, classes in self.open):
            self.math.append(data)
        elif not any(tag in self.VERBATIM for tag, _ in self.open):
            self.prose.append(data)


def _external(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)]
    done = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def test_the_site_loads_nothing_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    loaded = {}
    for page in pages:
        parser = _Resources()
        parser.feed(page.read_text())
        loaded[page] = parser.urls
        external = [url for url in parser.urls if _external(url)]
        assert not external, (page.relative_to(site), external)
        for url in parser.urls:  # and every local one is there
            path = url.split("#")[0].split("?")[0]
            base = site if path.startswith("/") else page.parent  # 404.html links from the root
            target = (base / path.lstrip("/")).resolve()
            assert target.is_file(), (page.relative_to(site), url)
    for sheet in site.rglob("*.css"):
        assert "fonts.googleapis" not in sheet.read_text(), sheet
    concepts = loaded[site / "concepts" / "index.html"]
    assert any(url.endswith("javascripts/mathjax/tex-mml-chtml.js") for url in concepts)
    fonts = site / "javascripts" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert (fonts / "MathJax_Main-Regular.woff").is_file()
    assert (fonts / "MathJax_Math-Italic.woff").is_file()


def test_every_page_renders_its_code_and_math(site):
    """Examples are code blocks, fences are closed, every `$` is inside a formula."""
    api = sorted((site / "api").glob("*/index.html"))
    assert len(api) > 40
    examples = 0
    for page in sorted(site.rglob("*.html")):
        html = page.read_text()
        name = page.relative_to(site)
        parser = _Prose()
        parser.feed(html)
        prose = "".join(parser.prose)
        assert not re.search(r"<summary>Examples?</summary>\s*<blockquote>", html), name
        assert "```" not in prose, (name, "a fence rendered as text")
        assert "$" not in prose, (name, re.findall(r".{0,60}\$.{0,60}", prose)[:3])
        for tex in parser.math:
            assert "$$" not in tex, (name, "two formulas ran into one", tex[:120])
        lines = [line.strip() for line in prose.splitlines()]
        assert not [line for line in lines if line.startswith(">")], (name, "a doctest as prose")
        examples += html.count('<span class="gp">&gt;&gt;&gt; </span>')
    assert examples >= 40  # the docstrings' examples, highlighted as Python sessions
    schedules = (site / "api" / "schedules" / "index.html").read_text()
    assert '<span class="n">LogLinear</span><span class="p">()</span>' in schedules
    for source in ("tutorials/own-denoiser", "run-llms"):  # with `python no-run` fences
        fences = (ROOT / "docs" / f"{source}.md").read_text().count("```") // 2
        assert (site / source / "index.html").read_text().count('<div class="highlight">') == fences

"""The built docs site works offline: every script, style, font and image it loads ships with it.

MathJax is vendored (docs/javascripts/mathjax/), so formulas render without
network access, and the theme's Google Fonts are off.
"""

import os
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

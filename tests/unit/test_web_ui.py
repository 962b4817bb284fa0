"""The chat page at `/` over real sockets on the fake engine: the page, its assets, headers, 404s,
path traversal, `--no-ui`, the API key; and the static tree itself (references resolve, licences
present, nothing that the content-security-policy would block). The browser test is tests/e2e/test_web_ui_browser.py.
"""
from __future__ import annotations

import argparse
import http.client
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from awqserve.cli import serve
from awqserve.entrypoints.openai.server_config import ServerConfig
from awqserve.ui import STATIC_DIR, StaticAssets
from server_harness import RunningServer, run_server

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-page-test"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(ServerConfig()) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


def assert_not_found(r: httpx.Response | tuple[int, bytes]) -> None:
    status, body = (r.status_code, r.content) if isinstance(r, httpx.Response) else r
    assert status == 404, body
    err = httpx.Response(404, content=body).json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "not_found"


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (httpx would normalise dot segments)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# ---- the page and its assets ----

def test_page_is_served_with_a_strict_csp(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="ui/js/app.js"></script>' in r.text
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'" and csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path, kind", [
    ("/ui/app.css", "text/css; charset=utf-8"),
    ("/ui/js/app.js", "text/javascript; charset=utf-8"),
    ("/ui/favicon.svg", "image/svg+xml"),
    ("/ui/vendor/dompurify-3.5.0/purify.es.mjs", "text/javascript; charset=utf-8"),
    ("/ui/vendor/marked-18.2.1/LICENSE", "text/plain; charset=utf-8"),
])
def test_assets_have_their_content_types(client: httpx.Client, path: str, kind: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == kind and r.content
    assert r.headers["x-content-type-options"] == "nosniff"
    vendored = path.startswith("/ui/vendor/")
    assert ("immutable" in r.headers["cache-control"]) == vendored


def test_etag_revalidation(client: httpx.Client) -> None:
    first = client.get("/ui/js/app.js")
    again = client.get("/ui/js/app.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == first.headers["etag"]
    assert client.get("/ui/js/app.js", headers={"if-none-match": '"other"'}).status_code == 200


def test_head_request(client: httpx.Client) -> None:
    r = client.head("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/", "/ui/js", "/ui/vendor", "/ui/app.py", "/index.html"])
def test_unknown_assets_are_404_envelopes(client: httpx.Client, path: str) -> None:
    assert_not_found(client.get(path))


@pytest.mark.parametrize("target", [
    "/ui/../awqserve/ui/routes.py", "/ui/../../pyproject.toml", "/ui/js/../../routes.py",
    "/ui/%2e%2e/routes.py", "/ui/..%2froutes.py", "/ui/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/ui//etc/passwd", "/ui/%2fetc%2fpasswd", "/ui/..\\routes.py", "/ui/vendor/../../__init__.py",
    "/ui/js/../index.html",  # even a real file: only exact names are served
])
def test_path_traversal_finds_nothing(srv: RunningServer, target: str) -> None:
    assert_not_found(raw_get(srv.url, target))


def test_page_and_api_coexist(client: httpx.Client) -> None:
    assert client.get("/v1/models").status_code == 200 and client.get("/health").status_code == 200


# ---- switches: --no-ui, --api-key ----

def test_no_ui_turns_the_page_off() -> None:
    with run_server(ServerConfig(ui=False)) as s, s.client() as c:
        assert_not_found(c.get("/"))
        assert_not_found(c.get("/ui/js/app.js"))
        assert c.get("/v1/models").status_code == 200


def test_no_ui_flag() -> None:
    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    assert serve.build_configs(p.parse_args([]), environ={})[0].ui is True
    assert serve.build_configs(p.parse_args(["--no-ui"]), environ={})[0].ui is False


def test_api_key_guards_the_api_not_the_page() -> None:
    with run_server(ServerConfig(api_keys=(KEY,))) as s, s.client() as c:
        assert c.get("/").status_code == 200
        assert c.get("/ui/js/api.js").status_code == 200 and c.get("/ui/app.css").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}).status_code == 401
        assert c.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200


# ---- the static tree ----

def test_asset_table_skips_what_it_must_not_serve(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "ok.js").write_text("export {};")
    (tmp_path / "secret.py").write_text("x = 1")
    (tmp_path / ".hidden.js").write_text("x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("outside")
    (tmp_path / "link.txt").symlink_to(outside)
    assert set(StaticAssets(tmp_path).files) == {"index.html", "ok.js"}


def test_missing_page_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="chat page is missing"):
        StaticAssets(tmp_path)


def test_page_references_resolve() -> None:
    """Every `ui/...` link in index.html and every relative import of the modules names a served file."""
    names = set(StaticAssets().files)
    html = (STATIC_DIR / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="ui/([^"]+)"', html)
    assert "js/app.js" in refs and "app.css" in refs
    missing = [r for r in refs if r not in names]
    for js in sorted(STATIC_DIR.glob("js/*.js")):
        for spec in re.findall(r'from\s+"(\.[^"]+)"', js.read_text()):
            target = (js.parent / spec).resolve().relative_to(STATIC_DIR).as_posix()
            if target not in names:
                missing.append(f"{js.name} imports {spec}")
    assert not missing


def test_nothing_the_csp_would_block() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), "inline style or handler"
    for js in STATIC_DIR.glob("js/*.js"):
        text = js.read_text()
        assert "eval(" not in text and "new Function" not in text, js.name
        assert "setAttribute(\"style\"" not in text, js.name
        if js.name != "markdown.js":  # the one place HTML is inserted, after DOMPurify
            assert "innerHTML" not in text, js.name


def test_vendored_libraries_carry_licences() -> None:
    vendor = STATIC_DIR / "vendor"
    folders = [d for d in vendor.iterdir() if d.is_dir()]
    assert len(folders) == 3
    readme = (vendor / "README.md").read_text()
    for d in folders:
        assert re.fullmatch(r"[a-z.]+-\d+\.\d+\.\d+", d.name), d.name
        assert (d / "LICENSE").is_file(), f"{d.name} has no LICENSE"
        assert f"`{d.name}`" in readme, f"{d.name} is not listed in vendor/README.md"
    size = sum(f.stat().st_size for f in vendor.rglob("*") if f.is_file())
    assert size < 400_000, f"vendored files grew to {size} bytes"


def test_package_data_ships_the_page() -> None:
    """pyproject's package-data globs cover every static file (else an installed server has no page)."""
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["awqserve"]
    pkg = ROOT / "awqserve"
    files = {f.relative_to(pkg).as_posix() for f in STATIC_DIR.rglob("*") if f.is_file()}
    covered = {f.relative_to(pkg).as_posix() for g in globs for f in pkg.glob(g) if f.is_file()}
    assert not sorted(files - covered), "add the ui/static globs to [tool.setuptools.package-data]"

"""WeChat images end to end: GIF, WebP, a 3 MB PNG and remote images (served by a real local HTTP
server) pushed against the WeChat contract server (tests/wechat_server.py); what the platform
received is checked byte by byte. Also the pipeline (channels/wechat/images.py) and the downloader's
refusals on their own."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from publisher.channels.wechat import images

from publisher.cli import main
from tests.wechat_server import APP_ID, SECRET, WeChatServer

UPLOADIMG, MATERIAL = "cgi-bin/media/uploadimg", "cgi-bin/material/add_material"
LIMIT = 1024 * 1024


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kw)
    return out.getvalue()


def noise(w: int, h: int) -> Image.Image:
    """A photo-like image that no lossless format compresses (the worst case for size)."""
    return Image.frombytes("RGB", (w, h), os.urandom(w * h * 3))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (120, 80), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


# ---- a local HTTP server for remote images ----------------------------------------------------


class ImageSite:
    """127.0.0.1 on an ephemeral port: path -> (content type, body, delay before the body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes, float]] = {}
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                site.hits.append(self.path)
                if self.path not in site.routes:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ctype, body, delay = site.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                time.sleep(delay)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client that gave up early is fine
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site():
    s = ImageSite()
    yield s
    s.close()


@pytest.fixture
def server():
    with WeChatServer() as srv:
        yield srv


ISSUE = """---
date: 2026-12-07
status: ready
cover: images/cover.webp
---

# 嵌入式AI简报 (2026-12-07)

**关注模型压缩、低比特量化、移动端推理加速优化、部署**

> 导读：本期1条。「博文」图片测试。

## 博文

- [图片各种格式 | 示例专栏](https://example.com/blog/images)
摘要：动图、WebP、大截图和两张远程图片。
![动图](images/anim.gif)
![WebP](images/fig.webp)
![大截图](images/screenshot.png)
![远程一]({remote1})
![远程二]({remote2})
"""


def make_project(root: Path, server: WeChatServer, site: ImageSite, monkeypatch, *, remote2: str = "/b.jpg",
                 timeout: float = 5.0, allow_private: bool = True) -> Path:
    folder = root / "issues" / "images"
    folder.mkdir(parents=True)
    (folder / "anim.gif").write_bytes(animated_gif())
    (folder / "fig.webp").write_bytes(encode(noise(400, 300), "WEBP", quality=90))
    big = encode(noise(1100, 1000), "PNG")
    assert len(big) > 3 * 1000 * 1000
    (folder / "screenshot.png").write_bytes(big)
    (folder / "cover.webp").write_bytes(encode(Image.new("RGB", (1000, 1000), (0, 90, 200)), "WEBP"))
    site.routes["/a.png"] = ("image/png", encode(noise(300, 200), "PNG"), 0)
    site.routes["/b.jpg"] = ("image/jpeg", encode(noise(200, 200), "JPEG"), 0)
    source = ISSUE.format(remote1=site.url("/a.png"), remote2=site.url(remote2))
    (root / "issues" / "2026-12-07.md").write_text(source, encoding="utf-8")
    (root / "publisher.toml").write_text(
        # the account's QR: generated from an explicitly configured target (a push refuses without one)
        '[newsletter]\nqr_target = "https://mp.weixin.qq.com/mp/profile_ext?action=home&__biz=MzTEST=="\n\n'
        '[paths]\nissues = "issues"\nout = "build"\nledger = "publisher.db"\n\n'
        f"[network]\nallow_private = {json.dumps(allow_private)}\n\n"
        f'[wechat]\napp_id = "{APP_ID}"\napi_base = "{server.url}"\nremote_image_timeout = {timeout}\n',
        encoding="utf-8")
    monkeypatch.chdir(root)
    monkeypatch.delenv("PUBLISHER_CONFIG", raising=False)
    monkeypatch.setenv("PUBLISHER_WECHAT_SECRET", SECRET)
    return root


def push(capsys, *args: str) -> tuple[int, str]:
    rc = main(["push", "2026-12-07", "--channel", "wechat", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_every_image_uploaded_as_jpg_or_png_under_1mb_and_a_second_push_uploads_nothing(
        tmp_path, server, site, monkeypatch, capsys):
    make_project(tmp_path, server, site, monkeypatch)
    rc, out = push(capsys)
    assert rc == 0, out
    # gif, webp, screenshot, two remote images and the QR code
    assert server.count(UPLOADIMG) == 6 and server.count(MATERIAL) == 1
    assert server.state.rejected == []
    for data in server.state.uploads.values():
        assert images.sniff(data) in ("jpeg", "png") and len(data) < LIMIT
    (art,) = next(iter(server.state.drafts.values()))
    content = art["content"]
    srcs = __import__("re").findall(r'<img\b[^>]*?\bsrc="([^"]+)"', content)
    assert len(srcs) == 6 and all(s.startswith("http://mmbiz.qpic.cn/") for s in srcs), srcs
    assert set(srcs) == set(server.state.uploads)
    # the GIF became its first frame (red), the cover the feed card's 2.35:1
    gif_url = srcs[0]
    with Image.open(io.BytesIO(server.state.uploads[gif_url])) as first:
        assert first.convert("RGB").getpixel((5, 5)) == (255, 0, 0)
    with Image.open(io.BytesIO(server.state.materials[art["thumb_media_id"]])) as cover:
        assert abs(cover.width / cover.height - 2.35) < 0.01
    assert site.hits == ["/a.png", "/b.jpg"]

    # second push: nothing uploaded and nothing downloaded again, same URLs in the draft
    rc, out = push(capsys, "--force")
    assert rc == 0, out
    assert server.count(UPLOADIMG) == 6 and server.count(MATERIAL) == 1
    assert site.hits == ["/a.png", "/b.jpg"]
    (art2,) = next(iter(server.state.drafts.values()))
    assert art2["content"] == content


def test_same_remote_content_at_two_urls_uploaded_once(tmp_path, server, site, monkeypatch, capsys):
    make_project(tmp_path, server, site, monkeypatch, remote2="/a-copy.png")
    site.routes["/a-copy.png"] = site.routes["/a.png"]
    rc, out = push(capsys)
    assert rc == 0, out
    assert server.count(UPLOADIMG) == 5  # the copy found by content hash


@pytest.mark.parametrize("route, words", [
    (("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024), 0), "is 3.00 MB, over the 2.00 MB download cap"),
    (("text/html", b"<html>not found</html>", 0), "is not an image: the server says Content-Type text/html"),
    (("image/png", b"<html>oops</html>", 0), "is not an image: its content"),
    (("image/png", encode(Image.new("RGB", (10, 10)), "PNG"), 3.0), "timed out after 0.5 s"),
])
def test_bad_remote_image_refused_naming_the_issue_line_before_any_upload(
        tmp_path, server, site, monkeypatch, capsys, route, words):
    make_project(tmp_path, server, site, monkeypatch, remote2="/bad", timeout=0.5)
    with (tmp_path / "publisher.toml").open("a") as f:
        f.write("remote_image_max_bytes = 2097152\n")
    site.routes["/bad"] = route
    rc, out = push(capsys)
    assert rc == 1
    line = ISSUE.splitlines().index("![远程二]({remote2})") + 1
    assert f"2026-12-07.md:{line}: remote image {site.url('/bad')} {words}" in out, out
    assert "Traceback" not in out
    assert server.count(UPLOADIMG) == 0 and server.state.drafts == {}  # nothing sent: no partial push


def test_loopback_refused_unless_configured(tmp_path, server, site, monkeypatch, capsys):
    make_project(tmp_path, server, site, monkeypatch, allow_private=False)
    rc, out = push(capsys)
    assert rc == 1
    assert "is a private, loopback, link-local or reserved address (127.0.0.1)" in out
    assert "[network] allow_private" in out
    assert site.hits == [] and server.count(UPLOADIMG) == 0


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.png", "file:///etc/passwd", "http:///x.png"])
def test_download_only_http_and_https(url):
    with pytest.raises(images.ImageError, match="only http:// and https://"):
        images.download(url, max_bytes=1000, timeout=1, allow_private=True)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "169.254.169.254", "[::1]", "0.0.0.0", "localhost"])
def test_download_refuses_private_addresses(host):
    with pytest.raises(images.ImageError, match="private, loopback, link-local or reserved"):
        images.download(f"http://{host}/x.png", max_bytes=1000, timeout=1)


def test_redirect_to_loopback_refused_and_redirect_followed_when_allowed(site):
    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", site.url("/a.png"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    site.routes["/a.png"] = ("image/png", encode(Image.new("RGB", (4, 4)), "PNG"), 0)
    hop = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=hop.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hop.server_address[1]}/r"
        assert images.sniff(images.download(url, max_bytes=10_000, timeout=2, allow_private=True)) == "png"
    finally:
        hop.shutdown()
        hop.server_close()


# ---- the pipeline ---------------------------------------------------------------------------


def test_fit_keeps_small_jpg_and_png_unchanged():
    png = encode(Image.new("RGB", (50, 50), "white"), "PNG")
    assert images.fit(png).data == png


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "GIF"])
def test_fit_converts_other_formats_to_png(fmt):
    im = Image.new("RGB", (64, 48), (10, 200, 30))
    fitted = images.fit(encode(im, fmt))
    assert fitted.format == "png" and images.sniff(fitted.data) == "png" and fitted.note


def test_fit_recompresses_within_the_quality_floor_or_refuses():
    big = encode(noise(1200, 1000), "PNG")
    fitted = images.fit(big)
    assert fitted.format == "jpeg" and len(fitted.data) < LIMIT
    assert "quality" in fitted.note
    # a limit that cannot be met above quality 70 and 480 px: refused, never degraded further
    with pytest.raises(images.ImageError, match="without going below JPEG quality 70 and 480 px"):
        images.fit(big, limit=20_000)


def test_transparent_png_flattened_on_white_when_it_must_become_jpeg():
    im = noise(1000, 1000).convert("RGBA")
    im.putalpha(0)  # fully transparent
    im.paste((255, 0, 0, 255), (0, 0, 10, 10))
    fitted = images.fit(encode(im, "PNG"), limit=300_000)
    with Image.open(io.BytesIO(fitted.data)) as out:
        assert out.convert("RGB").getpixel((500, 500))[0] > 240  # white, not black


def test_decompression_bomb_refused_before_decoding():
    # a PNG header claiming 20000 × 20000 pixels
    im = Image.new("1", (20000, 20000))
    with pytest.raises(images.ImageError, match="more than the 50,000,000 pixels"):
        images.fit(encode(im, "PNG"), limit=100)

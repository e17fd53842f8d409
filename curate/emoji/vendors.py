"""Where each emoji vendor's artwork is installed, and its rasters at a given size, cached on disk.

The artwork ships in registry packages (docs/emoji-pool.md): OpenMoji and Twemoji as npm packages
under one project-local prefix, Noto Color Emoji as a Debian font. Nothing is downloaded at run
time: a missing vendor is a ConfigError naming the command that installs it. SVGs are rasterised
with resvg once per (vendor, version, size, codepoint) into the cache; later builds only read PNGs.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from curate.errors import ConfigError
from curate.extras import require

ASSETS_ENV = "CURATE_EMOJI_ASSETS"  # the npm prefix holding node_modules/openmoji and node_modules/@twemoji/svg
NOTO_ENV = "CURATE_EMOJI_NOTO_FONT"  # path of NotoColorEmoji.ttf
CACHE_ENV = "CURATE_EMOJI_CACHE"  # where rasters are cached
INSTALL = "bash scripts/emoji_assets.sh"

POOL_VENDORS = ("openmoji", "twemoji")
EVAL_VENDOR = "noto"
VENDORS = (*POOL_VENDORS, EVAL_VENDOR)
NOTO_DEFAULT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
NOTO_STRIKE = 109  # the font's only bitmap strike; FreeType refuses other sizes for CBDT fonts
REPO = Path(__file__).resolve().parents[2]
_NPM = {"openmoji": ("openmoji", "color/svg"), "twemoji": ("@twemoji/svg", ".")}


def asset_roots() -> list[Path]:
    """npm prefixes searched in order: $CURATE_EMOJI_ASSETS alone when set, else the venv's and the repo's."""
    if os.environ.get(ASSETS_ENV):
        return [Path(os.environ[ASSETS_ENV])]
    roots = [Path(sys.prefix) / "share" / "curate-emoji", REPO / ".venv" / "share" / "curate-emoji"]
    return list(dict.fromkeys(roots))


def package_dir(vendor: str) -> Path:
    """node_modules/<package> of an npm-installed vendor (openmoji, twemoji)."""
    package, svg_sub = _NPM[vendor]
    tried = []
    for root in asset_roots():
        path = root / "node_modules" / package
        if (path / svg_sub).is_dir() and (path / "package.json").is_file():
            return path
        tried.append(str(path))
    raise ConfigError(f"emoji vendor {vendor} (npm {package}) not found in {', '.join(tried)}: "
                      f"install it with `{INSTALL}` or point ${ASSETS_ENV} at its npm prefix")


def noto_font() -> Path:
    path = Path(os.environ.get(NOTO_ENV) or NOTO_DEFAULT)
    if not path.is_file():
        raise ConfigError(f"emoji vendor noto (Noto Color Emoji) not found at {path}: install it with `{INSTALL}` "
                          f"(apt-get install fonts-noto-color-emoji) or set ${NOTO_ENV}")
    return path


def openmoji_data() -> list[dict]:
    """OpenMoji's per-emoji metadata (CLDR annotation, tags, skin tone), from its npm package."""
    path = package_dir("openmoji") / "data" / "openmoji.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: reinstall OpenMoji with `{INSTALL}`")
    return json.loads(path.read_text(encoding="utf-8"))


def vendor_version(vendor: str) -> str:
    """Part of the cache key, so an upgraded vendor never reuses another version's rasters."""
    if vendor == EVAL_VENDOR:
        font = noto_font()
        return f"font{font.stat().st_size}"
    return json.loads((package_dir(vendor) / "package.json").read_text())["version"]


def svg_path(vendor: str, codepoint: int) -> Path:
    svg_sub = _NPM[vendor][1]
    # OpenMoji names files by upper-case hex, Twemoji by lower-case hex (both without FE0F for one codepoint).
    name = f"{codepoint:04X}.svg" if vendor == "openmoji" else f"{codepoint:x}.svg"
    return package_dir(vendor) / svg_sub / name


def noto_font_object() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(noto_font()), NOTO_STRIKE)


def noto_has(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """A character without a glyph in the font renders as an empty box (zero height)."""
    _, top, _, bottom = font.getbbox(text)
    return bottom > top


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "curate" / "emoji"


def _fit(img: Image.Image, size: int) -> Image.Image:
    """The artwork cropped to its opaque pixels and scaled to fill a size x size square (vendors pad differently)."""
    img = img.convert("RGBA")
    alpha = np.asarray(img)[..., 3]
    ys, xs = np.nonzero(alpha > 8)
    if len(xs):
        img = img.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    w, h = img.size
    scale = size / max(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    out = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    out.paste(img, ((size - img.size[0]) // 2, (size - img.size[1]) // 2))
    return out


def _render_svg(path: Path, size: int) -> Image.Image:
    resvg_py = require("resvg_py", "emoji", "rasterising emoji SVGs")
    side = round(size * 1.25)  # rendered larger, then cropped to the artwork and fitted
    png = resvg_py.svg_to_bytes(svg_path=str(path), width=side, height=side, skip_system_fonts=True)
    return _fit(Image.open(io.BytesIO(bytes(png))), size)


def _render_noto(font: ImageFont.FreeTypeFont, text: str, size: int) -> Image.Image:
    from PIL import ImageDraw

    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    return _fit(canvas, size)


def _write_atomic(path: Path, data: bytes) -> None:
    # Several builds (or Ray workers) may fill the cache at once: each file appears whole or not at all.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load_artwork(vendor: str, emojis: list[str], size: int, cache_dir: str | Path | None = None
                 ) -> dict[str, Image.Image]:
    """RGBA size x size rasters of `emojis` (single-codepoint emoji strings) by one vendor, by emoji.

    Cached as <cache>/<vendor>-<version>/<size>/<HEX>.png; only missing ones are rasterised."""
    if vendor not in VENDORS:
        raise ConfigError(f"unknown emoji vendor {vendor!r}: one of {', '.join(VENDORS)}")
    folder = cache_root(cache_dir) / f"{vendor}-{vendor_version(vendor)}" / str(size)
    font = noto_font_object() if vendor == EVAL_VENDOR else None
    out: dict[str, Image.Image] = {}
    for text in emojis:
        cp = ord(text[0])
        path = folder / f"{cp:04X}.png"
        if path.is_file():
            with Image.open(path) as cached:
                out[text] = cached.convert("RGBA")
            continue
        img = _render_noto(font, text, size) if font is not None else _render_svg(svg_path(vendor, cp), size)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        _write_atomic(path, buf.getvalue())
        out[text] = img
    return out

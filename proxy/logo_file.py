"""The image `[login] login_logo_file` names: read and checked once, at load (the settings'
check) and at start (pages/logo.py serves it)."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 1024 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml", "image/webp")


@dataclass(frozen=True)
class Logo:
    body: bytes
    content_type: str


def read_logo(path: str) -> Logo:
    """The image at `path`; ValueError saying what is wrong with it."""
    kind = mimetypes.guess_type(path)[0] or ""
    if kind not in IMAGE_TYPES:
        raise ValueError("must be a .png, .jpg, .gif, .svg or .webp image")
    try:
        with Path(path).open("rb") as image:
            body = image.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(body) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    return Logo(body, kind)

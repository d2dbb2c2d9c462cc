"""Images for OMERO.web's thumbnails: IQuery finds them, a ThumbnailStore paints them.

Enough of OMERO for ``conn.getObject("Image", id)`` and ``ImageWrapper.getThumbnail``, i.e.
``/webgateway/render_thumbnail/<id>/`` and ``/webclient/render_thumbnail/<id>/``. A session
sees the images of its user's groups; others are not found (OMERO.web answers 404, or its
placeholder on the webclient's view). Thumbnails are JPEGs painted from the image's id and hue
(Pillow, which omero-web needs anyway): cells on a dark field, like a fluorescence image.
"""

from __future__ import annotations

import io
import math
import random
import threading
from typing import Any

import omero
import omero.api

from tests.omero_sim import model
from tests.omero_sim.directory import Image
from tests.omero_sim.fallback import fail_fast
from tests.omero_sim.state import SimState

THUMBNAIL_STORE = "omero.api.ThumbnailStore"  # identity names: THUMBNAIL_STORE + "/" + uuid


def _ids(params: Any) -> set[int] | None:
    """The ids a query is restricted to (`:ids` or `:id`), None when it names none."""
    values = dict(getattr(params, "map", None) or {})
    found: set[int] = set()
    for name in ("ids", "id", "iid"):
        value = values.get(name)
        if value is None:
            continue
        unwrapped = omero.rtypes.unwrap(value)
        found.update(int(v) for v in (unwrapped if isinstance(unwrapped, list) else [unwrapped]))
        return found
    return None


@fail_fast
class QueryI(omero.api.IQuery):  # type: ignore[misc]
    """Image queries only; any other query fails with an error that names it."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def _images(self, query: str, params: Any, current: Any) -> list[Any]:
        session = self.state.session_of(current)
        if "Image" not in query:
            raise omero.InternalException(None, None, f"omero_sim does not simulate {query!r}")
        ids = _ids(params)
        directory = self.state.directory
        return [
            model.image(directory, found)
            for found in directory.images_for(session.user)
            if ids is None or found.id in ids
        ]

    def findAllByQuery_async(self, cb: Any, query: str, params: Any, current: Any) -> None:
        try:
            cb.ice_response(self._images(query, params, current))
        except Exception as error:
            cb.ice_exception(error)

    def findByQuery_async(self, cb: Any, query: str, params: Any, current: Any) -> None:
        try:
            found = self._images(query, params, current)
            cb.ice_response(found[0] if found else None)
        except Exception as error:
            cb.ice_exception(error)

    def get_async(self, cb: Any, kind: str, obj_id: int, current: Any) -> None:
        self.find_async(cb, kind, obj_id, current)

    def find_async(self, cb: Any, kind: str, obj_id: int, current: Any) -> None:
        try:
            params = omero.sys.ParametersI()
            params.addId(obj_id)
            found = self._images(kind, params, current)
            cb.ice_response(found[0] if found else None)
        except Exception as error:
            cb.ice_exception(error)


def paint(image: Image, longest: int) -> bytes:
    """A JPEG of `image`, its longest side `longest` pixels: cells of its hue on black."""
    from PIL import Image as Canvas
    from PIL import ImageDraw, ImageFilter

    width, height = image.size
    scale = max(1, min(longest, 2048)) / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = Canvas.new("RGB", size)
    draw = ImageDraw.Draw(canvas)
    rng = random.Random(image.id)  # the same picture every time
    red, green, blue = (
        round(255 * (0.5 + 0.5 * math.cos(2 * math.pi * (image.hue - k / 3)))) for k in range(3)
    )
    for _ in range(24):
        x, y = rng.random() * size[0], rng.random() * size[1]
        r = (0.04 + 0.06 * rng.random()) * max(size)
        glow = 0.4 + 0.6 * rng.random()
        fill = (round(red * glow), round(green * glow), round(blue * glow))
        draw.ellipse((x - r, y - r * 0.8, x + r, y + r * 0.8), fill=fill)
    canvas = canvas.filter(ImageFilter.GaussianBlur(max(1, max(size) // 100)))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=85)
    return out.getvalue()


@fail_fast
class ThumbnailStoreI(omero.api.ThumbnailStore):  # type: ignore[misc]
    """One servant for every store handed out; each identity keeps the pixels it was set to."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self._pixels: dict[str, int] = {}
        self._lock = threading.Lock()

    def _image(self, current: Any) -> Image:
        session = self.state.session_of(current)
        with self._lock:
            pixels_id = self._pixels.get(current.id.name)
        visible = {i.id: i for i in self.state.directory.images_for(session.user)}
        if pixels_id is None or pixels_id not in visible:
            raise omero.ApiUsageException(None, None, "setPixelsId was not called")
        return visible[pixels_id]

    def setPixelsId_async(self, cb: Any, pixels_id: int, current: Any) -> None:
        session = self.state.session_of(current)
        if pixels_id not in {i.id for i in self.state.directory.images_for(session.user)}:
            cb.ice_exception(omero.SecurityViolation(None, None, f"no pixels {pixels_id}"))
            return
        with self._lock:
            self._pixels[current.id.name] = pixels_id
        cb.ice_response(True)  # rendering settings exist

    def getRenderingDefId_async(self, cb: Any, current: Any) -> None:
        try:
            cb.ice_response(self._image(current).id)
        except omero.ServerError as error:
            cb.ice_exception(error)

    def setRenderingDefId_async(self, cb: Any, rdef_id: int, current: Any) -> None:
        cb.ice_response()

    def resetDefaults_async(self, cb: Any, current: Any) -> None:
        cb.ice_response()

    def _thumbnail(self, cb: Any, longest: Any, current: Any) -> None:
        try:
            image = self._image(current)
        except omero.ServerError as error:
            cb.ice_exception(error)
            return
        side = omero.rtypes.unwrap(longest) or 96
        cb.ice_response(paint(image, int(side)))

    def getThumbnailByLongestSide_async(self, cb: Any, size: Any, current: Any) -> None:
        self._thumbnail(cb, size, current)

    def getThumbnailByLongestSideDirect_async(self, cb: Any, size: Any, current: Any) -> None:
        self._thumbnail(cb, size, current)

    def getThumbnail_async(self, cb: Any, x: Any, y: Any, current: Any) -> None:
        self._thumbnail(cb, max(omero.rtypes.unwrap(x) or 0, omero.rtypes.unwrap(y) or 0), current)

    def getThumbnailDirect_async(self, cb: Any, x: Any, y: Any, current: Any) -> None:
        self.getThumbnail_async(cb, x, y, current)

    def isInProgress_async(self, cb: Any, current: Any) -> None:
        cb.ice_response(False)

    def thumbnailExists_async(self, cb: Any, x: Any, y: Any, current: Any) -> None:
        cb.ice_response(True)

    def close_async(self, cb: Any, current: Any) -> None:
        with self._lock:
            self._pixels.pop(current.id.name, None)
        cb.ice_response()

    def activate_async(self, cb: Any, current: Any) -> None:
        cb.ice_response()

    def passivate_async(self, cb: Any, current: Any) -> None:
        cb.ice_response()

"""Reading multipart/form-data uploads of evidence images, in memory only.

Werkzeug's default form parser spools any file part over 500 KB to a temporary file on disk. Evidence
photos must never be written anywhere, so the two evidence endpoints parse the body themselves with an
in-memory stream factory, under a body limit sized for 5 images of 10 MB (the rest of the API keeps the
small JSON limit). A part over 10 MB is read and then refused with 422 naming the part, so the client
learns which image was too large; only a body over the whole limit is a 413.

An upload is charged before its body is read: `UPLOAD_COST` units (the request and the most images it
may carry) come off the platform's bucket in the `requires` check, and `settle` returns the units of the
images that were not sent. So a client out of quota never gets an image decoded.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from flask import request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import UnsupportedMediaType
from werkzeug.formparser import FormDataParser

from ledger.domain.pdq_hash import MAX_IMAGE_BYTES
from ledger.errors import InvalidInput
from ledger.services.evidence import MAX_IMAGES
from ledger.services.platforms import Principal, charge
from ledger.services.runtime import Runtime

# Room for MAX_IMAGES images of MAX_IMAGE_BYTES, one more (so a sixth image is named in a 422, not
# refused as a 413), and the multipart framing and the JSON part.
BODY_LIMIT = (MAX_IMAGES + 1) * MAX_IMAGE_BYTES + 1024 * 1024
FORM_FIELD_LIMIT = 256 * 1024
MAX_PARTS = 32
UPLOAD_COST = 1 + MAX_IMAGES


def settle(rt: Runtime, who: Principal, images: int) -> None:
    """Give back the units charged in advance for images the upload did not carry."""
    unused = MAX_IMAGES - min(images, MAX_IMAGES)
    if unused:
        charge(rt, who, -unused)


def _in_memory(*_: Any, **__: Any) -> IO[bytes]:
    """Werkzeug's stream factory hook: every part goes to memory, whatever its size or name."""
    return io.BytesIO()


@dataclass
class Upload:
    images: list[bytes] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def multipart_doc(
    properties: dict[str, Any], required: Sequence[str], encoding: dict[str, Any]
) -> dict[str, Any]:
    """The OpenAPI requestBody of a multipart endpoint (flask-smorest documents only what it parses)."""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": properties, "required": list(required)},
                "encoding": encoding,
            }
        },
    }


IMAGE_TYPES = "image/jpeg, image/png, image/webp, image/gif, image/bmp, image/tiff"
IMAGES_PROPERTY = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_IMAGES,
    "items": {"type": "string", "format": "binary"},
    "description": f"1 to {MAX_IMAGES} images (JPEG, PNG, WebP, GIF, BMP or TIFF), each at most "
    f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB and at least 64x64 pixels. Repeat the `images` part per image.",
}


def read_upload(file_field: str = "images", text_fields: Sequence[str] = ()) -> Upload:
    """Parse the request body as multipart/form-data; 415 for another media type, 422 for unknown parts."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("send the body as multipart/form-data")
    request.max_content_length = BODY_LIMIT  # Flask 3.1: per request; over it, werkzeug answers 413
    parser = FormDataParser(
        stream_factory=_in_memory,
        max_form_memory_size=FORM_FIELD_LIMIT,
        max_content_length=BODY_LIMIT,
        max_form_parts=MAX_PARTS,
    )
    _, form, files = parser.parse(
        request.stream, request.mimetype, request.content_length, request.mimetype_params
    )
    upload = Upload()
    errors: dict[str, list[str]] = {}
    for name in set(form) | set(files):
        if name != file_field and name not in text_fields:
            errors[name] = ["unknown part"]
    for name in text_fields:
        values: list[str] = list(form.getlist(name))
        for stored in files.getlist(name):  # a JSON part sent as a file is fine too
            values.append(_read(stored).decode("utf-8", errors="replace"))
        if len(values) > 1:
            errors[name] = ["give this part once"]
        elif values:
            upload.fields[name] = values[0]
    upload.images = [_read(stored) for stored in files.getlist(file_field)]
    if form.getlist(file_field):  # text parts are decoded as UTF-8, which would mangle an image
        errors[file_field] = ["send each image as a file part, with a filename"]
    if errors:
        raise InvalidInput("the upload has unexpected parts", errors)
    return upload


def _read(stored: FileStorage) -> bytes:
    stream = stored.stream
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()
    return bytes(stream.read())


def json_part(upload: Upload, name: str) -> Any:
    raw = upload.fields.get(name)
    if raw is None:
        raise InvalidInput(f"the '{name}' part is required", {name: ["missing part"]})
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidInput(f"the '{name}' part is not valid JSON", {name: ["not valid JSON"]}) from None

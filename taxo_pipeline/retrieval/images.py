"""Product images as retrieval queries: only rows whose bytes decode as an image are sent."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError


@dataclass
class ImageQueries:
    product_ids: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    without_image: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)  # product id -> why it was skipped


def image_queries(product_ids: Sequence[str], images: Sequence[bytes | None]) -> ImageQueries:
    queries = ImageQueries()
    for product_id, data in zip(product_ids, images, strict=True):
        if not data:
            queries.without_image.append(product_id)
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()  # reads the whole stream: truncated or corrupt files fail here
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            queries.broken[product_id] = f"{type(exc).__name__}: {exc}"
            continue
        queries.product_ids.append(product_id)
        queries.images.append(data)
    return queries

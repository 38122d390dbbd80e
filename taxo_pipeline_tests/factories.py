"""Test inputs: the offline data in ../shared/data, and small product files in the Hugging Face
shard schema with real JPEG bytes."""

import base64
import io
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from taxo_pipeline.settings import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SAMPLE_PRODUCTS = SHARED_DATA / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = SHARED_DATA / "shopify-taxonomy" / "categories.txt"

HATS = "Apparel & Accessories > Clothing Accessories > Hats"
PANAMA = "Apparel & Accessories > Clothing Accessories > Hats > Panama Hats"
SCARVES = "Apparel & Accessories > Clothing Accessories > Scarves & Shawls"
PANTS = "Apparel & Accessories > Clothing > Pants"
RACKS = "Home & Garden > Decor > Coat & Hat Racks"

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def jpeg(color: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def product(title="Straw hat", description="A woven straw hat.", truth=PANAMA, potentials=(HATS,), image=True, color=(200, 180, 90)):
    return {
        "product_title": title,
        "product_description": description,
        "product_image": {"bytes": jpeg(color), "path": f"{title}.jpg"} if image is True else image,
        "ground_truth_category": truth,
        "potential_product_categories": list(potentials) if potentials is not None else None,
        "ground_truth_brand": "Brand",
        "ground_truth_is_secondhand": False,
    }


def write_shard(path: Path, rows: list[dict]) -> Path:
    schema = pa.schema(
        [
            ("product_title", pa.string()),
            ("product_description", pa.string()),
            ("product_image", IMAGE_TYPE),
            ("ground_truth_category", pa.string()),
            ("potential_product_categories", pa.list_(pa.string())),
            ("ground_truth_brand", pa.string()),
            ("ground_truth_is_secondhand", pa.bool_()),
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def png_in_markdown(markdown: str) -> bytes:
    """The PNG bytes of markdown's one inline `data:image/png;base64` image."""
    (encoded,) = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    return base64.b64decode(encoded, validate=True)

"""Test inputs: the offline data in ../shared/data, and small product files in the Hugging Face
shard schema with real JPEG bytes."""

import base64
import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from taxo_pipeline.settings import PROJECT_ROOT

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SAMPLE_PRODUCTS = SHARED_DATA / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = SHARED_DATA / "shopify-taxonomy" / "categories.txt"
GOOGLE_MAPPING = SHARED_DATA / "shopify-taxonomy" / "google-mapping" / "shopify_2025-08_to_google_2021-09-21.txt"
GOOGLE_CATEGORIES = SHARED_DATA / "shopify-taxonomy" / "google-mapping" / "full_names.yml"
MERCHANT_EXPORTS = SHARED_DATA / "shopify-merchant-exports" / "raw"

HATS = "Apparel & Accessories > Clothing Accessories > Hats"
PANAMA = "Apparel & Accessories > Clothing Accessories > Hats > Panama Hats"
SCARVES = "Apparel & Accessories > Clothing Accessories > Scarves & Shawls"
PANTS = "Apparel & Accessories > Clothing > Pants"
RACKS = "Home & Garden > Decor > Coat & Hat Racks"
CAMPING = "Sporting Goods > Outdoor Recreation > Camping & Hiking"
SUBTREE = "Apparel & Accessories > Clothing Accessories"
HAIR = f"{SUBTREE} > Hair Accessories"
SUBTREE_PRODUCTS = [  # title, description, label (2 at L3, 3 at L4, 1 at L5)
    ("Straw Panama hat", "A handwoven straw Panama hat with a black ribbon.", PANAMA),
    ("Wool beanie", "A warm knitted wool beanie for winter.", f"{SUBTREE} > Hats > Beanies"),
    ("Baseball cap", "A cotton baseball cap with an adjustable strap.", f"{SUBTREE} > Hats > Baseball Caps"),
    ("Silk scarf", "A long silk scarf with a floral print.", SCARVES),
    ("Leather belt", "A brown leather belt with a brass buckle.", f"{SUBTREE} > Belts"),
    ("Velvet scrunchies", "Soft velvet scrunchies to tie a ponytail.", f"{HAIR} > Ponytail Holders > Scrunchies"),
]



def subtree_sources(root: Path) -> Path:
    """`root` with categories.txt, the real taxonomy cut to one L1 node and its Clothing Accessories
    subtree (113 categories, down to L5), and products.jsonl, SUBTREE_PRODUCTS labelled in it: small
    enough that every model run on them costs little."""
    root.mkdir(parents=True, exist_ok=True)
    lines = TAXONOMY.read_text().splitlines()
    kept = [line for line in lines[3:] if line.split(" : ")[1].strip() in ("Apparel & Accessories",)
            or line.split(" : ")[1].strip().startswith(SUBTREE)]  # fmt: skip
    (root / "categories.txt").write_text("\n".join([*lines[:3], *kept]) + "\n")
    rows = [{"product_title": t, "product_description": d, "ground_truth_category": c} for t, d, c in SUBTREE_PRODUCTS]
    (root / "products.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


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


SAMPLE_BRANCHES = ("Apparel & Accessories", "Luggage & Bags", "Animals & Pet Supplies")


def sample_taxonomy(path: Path) -> Path:
    """The real categories.txt cut to what the pipeline tests read (about 1,600 of its 14,606 categories):
    every L1 and L2 node, the sample's categories and the factories' (RACKS, CAMPING) with their ancestors,
    and the whole of SAMPLE_BRANCHES, where most factory products live. A test about the full taxonomy's
    scale reads TAXONOMY itself."""
    wanted = set()
    truths = [json.loads(line)["ground_truth_category"] for line in SAMPLE_PRODUCTS.read_text().splitlines()]
    for parts in (truth.split(" > ") for truth in [*truths, RACKS, CAMPING]):
        wanted |= {" > ".join(parts[: i + 1]) for i in range(len(parts))}
    lines = TAXONOMY.read_text().splitlines()

    def kept(line: str) -> bool:
        category = line.split(" : ", 1)[1].strip()
        return category in wanted or category.count(" > ") <= 1 or category.split(" > ")[0] in SAMPLE_BRANCHES

    path.write_text("\n".join([line for line in lines if " : " not in line or line.startswith("#") or kept(line)]) + "\n")
    return path


def png_in_markdown(markdown: str) -> bytes:
    """The PNG bytes of markdown's one inline `data:image/png;base64` image."""
    (encoded,) = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    return base64.b64decode(encoded, validate=True)

"""The F1-per-approach bar chart: a PNG whose bars are as long as their values, and the markdown
that embeds it inline; the precision-at-coverage line chart."""

import io

from PIL import Image

from taxo_pipeline.evaluation.charts import (
    FOOTER,
    GROUP,
    HEADER,
    LENIENT,
    LINE_COLOURS,
    PAD,
    PLOT,
    SIDE,
    STRICT,
    WIDTH,
    Bar,
    bar_chart,
    line_chart,
    markdown_image,
)
from taxo_pipeline_tests.factories import png_in_markdown

BARS = [
    Bar("text-retrieval (full-path)", 0.5, 0.625),
    Bar("text-retrieval (leaf)", 0.25, 0.25),
    Bar("nli (L1 F1)", 0.0, 0.1),
]


def bands(image: Image.Image, colour: tuple[int, int, int]) -> list[int]:
    """Top to bottom, each band of rows holding `colour`: how many pixels of it its middle row has."""
    pixels = image.load()
    counts = [sum(pixels[x, y] == colour for x in range(image.width)) for y in range(image.height)]
    found, start = [], None
    for y, count in enumerate([*counts, 0]):
        if count and start is None:
            start = y
        elif not count and start is not None:
            found.append(counts[(start + y - 1) // 2])
            start = None
    return found


def test_chart_is_a_png_with_one_group_per_approach():
    image = Image.open(io.BytesIO(bar_chart("hF1 per approach: org/model", BARS)))
    assert image.format == "PNG"
    assert image.size == (WIDTH, HEADER + len(BARS) * GROUP + FOOTER)


def test_bar_lengths_are_proportional_to_the_values():
    image = Image.open(io.BytesIO(bar_chart("hF1 per approach: org/model", BARS))).convert("RGB")
    # the first band of each colour is its legend swatch; a zero value draws no bar
    swatch, *strict = bands(image, STRICT)
    assert strict == [round(0.5 * PLOT), round(0.25 * PLOT)]
    assert strict[0] == 2 * strict[1] and swatch < strict[1]
    _, *lenient = bands(image, LENIENT)
    assert lenient == [round(0.625 * PLOT), round(0.25 * PLOT), round(0.1 * PLOT)]


def test_markdown_embeds_the_same_png():
    png = bar_chart("hF1 per approach: org/model", BARS)
    markdown = markdown_image(png, "hF1 per approach")
    assert markdown.startswith("![hF1 per approach](data:image/png;base64,")
    assert png_in_markdown(markdown) == png


def test_a_line_chart_draws_each_line_where_its_values_are():
    # a horizontal line at 0.5 from coverage 0 to 1, and a point-free second series
    png = line_chart("precision at coverage", "coverage", [("exact", [0.0, 1.0], [0.5, 0.5]), ("l1", [0.3], [0.9])])
    image = Image.open(io.BytesIO(png))
    pixels = image.load()
    left, top = PAD + 36, HEADER
    row = [x for x in range(image.width) if pixels[x, top + SIDE // 2] == LINE_COLOURS[0]]
    assert min(row) == left and max(row) == left + SIDE  # the whole axis, at half its height
    assert not any(pixels[x, top + SIDE // 2 - 20] == LINE_COLOURS[0] for x in range(image.width))

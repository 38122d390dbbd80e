"""Horizontal bar charts of F1 per approach and line charts (precision at coverage) as PNG bytes, drawn
with pillow alone, and the markdown that embeds one inline (the Dagster UI renders data-URI images in
markdown metadata)."""

import base64
import io
from collections.abc import Sequence
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

STRICT, LENIENT = (31, 119, 180), (158, 202, 225)
INK, GRID = (40, 40, 40), (225, 225, 225)
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
PAD, BAR, GAP = 12, 14, 10
LABELS, PLOT = 360, 400  # label column and the axis 0..1, in pixels: a bar is value * PLOT long
WIDTH = PAD + LABELS + PLOT + 48 + PAD  # 48: room for the value printed after a full bar
HEADER, GROUP, FOOTER = PAD + 44, 2 * BAR + GAP, 20 + PAD  # title and legend; one approach; tick labels


class Bar(NamedTuple):
    label: str
    strict: float
    lenient: float


def bar_chart(title: str, bars: Sequence[Bar]) -> bytes:
    """One group per bar, top to bottom: strict, then lenient (lighter) below it, each value at its end."""
    font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    image = Image.new("RGB", (WIDTH, HEADER + len(bars) * GROUP + FOOTER), "white")
    draw = ImageDraw.Draw(image)
    left, bottom = PAD + LABELS, HEADER + len(bars) * GROUP
    draw.text((PAD, PAD), title, fill=INK, font=font)
    for x, colour, name in ((left, STRICT, "strict"), (left + 90, LENIENT, "lenient")):
        draw.rectangle([x, PAD + 24, x + 11, PAD + 35], fill=colour)
        draw.text((x + 16, PAD + 30), name, fill=INK, font=small, anchor="lm")
    for tick in TICKS:
        x = left + round(tick * PLOT)
        draw.line([(x, HEADER - 4), (x, bottom)], fill=GRID)
        draw.text((x, bottom + 4), f"{tick:g}", fill=INK, font=small, anchor="mt")
    for i, bar in enumerate(bars):
        y = HEADER + i * GROUP
        draw.text((PAD, y + BAR), _fit(draw, bar.label, font), fill=INK, font=font, anchor="lm")
        for top, value, colour in ((y, bar.strict, STRICT), (y + BAR, bar.lenient, LENIENT)):
            if length := round(value * PLOT):  # pillow rejects an empty rectangle
                draw.rectangle([left, top, left + length - 1, top + BAR - 1], fill=colour)
            draw.text((left + length + 4, top + BAR // 2), f"{value:.3f}", fill=INK, font=small, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fit(draw: ImageDraw.ImageDraw, label: str, font: ImageFont.FreeTypeFont) -> str:
    """The label, cut with an ellipsis where it would run into the bars."""
    if draw.textlength(label, font=font) <= LABELS - PAD:
        return label
    while draw.textlength(label + "…", font=font) > LABELS - PAD:
        label = label[:-1]
    return label + "…"


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


LINE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44))
SIDE = 320  # the square plot of a line chart, in pixels


def line_chart(title: str, x_label: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> bytes:
    """Lines on 0..1 x 0..1 axes (e.g. precision against coverage): (name, xs, ys) per line, in its colour."""
    font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    left, top = PAD + 36, HEADER
    image = Image.new("RGB", (left + SIDE + 2 * PAD, top + SIDE + FOOTER + 16), "white")
    draw = ImageDraw.Draw(image)
    draw.text((PAD, PAD), title, fill=INK, font=font)
    for i, (name, _, _) in enumerate(series):
        x = left + i * 110
        draw.rectangle([x, PAD + 24, x + 11, PAD + 35], fill=LINE_COLOURS[i % len(LINE_COLOURS)])
        draw.text((x + 16, PAD + 30), name, fill=INK, font=small, anchor="lm")
    for tick in TICKS:
        x, y = left + round(tick * SIDE), top + SIDE - round(tick * SIDE)
        draw.line([(x, top), (x, top + SIDE)], fill=GRID)
        draw.line([(left, y), (left + SIDE, y)], fill=GRID)
        draw.text((x, top + SIDE + 4), f"{tick:g}", fill=INK, font=small, anchor="mt")
        draw.text((left - 4, y), f"{tick:g}", fill=INK, font=small, anchor="rm")
    draw.text((left + SIDE // 2, top + SIDE + 20), x_label, fill=INK, font=small, anchor="mt")
    for i, (_, xs, ys) in enumerate(series):
        points = [(left + round(x * SIDE), top + SIDE - round(y * SIDE)) for x, y in zip(xs, ys)]
        if len(points) > 1:
            draw.line(points, fill=LINE_COLOURS[i % len(LINE_COLOURS)], width=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

"""What a product looks like to a text encoder. The reference queries with the description alone;
the title is the densest statement of what the product is, so the richer query puts it first."""

from __future__ import annotations

from collections.abc import Sequence


def title_and_description(title: str | None, description: str | None) -> str:
    """`Title. Description`: the title leads, so it survives the encoder's truncation of long
    descriptions (all-MiniLM-L6-v2 keeps 256 tokens)."""
    title, description = (title or "").strip(), (description or "").strip()
    if not title or not description:
        return title or description
    return f"{title}{'' if title[-1] in '.!?:;' else '.'} {description}"


def title_and_description_queries(titles: Sequence[str | None], descriptions: Sequence[str | None]) -> list[str]:
    return [title_and_description(t, d) for t, d in zip(titles, descriptions, strict=True)]

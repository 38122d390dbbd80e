"""A toy approach registered only through TAXO_APPROACHES, to show that one module is all a new approach
needs: each product gets the categories whose leaf name shares the most words with its title, ties in
taxonomy order. It calls no model, so its figures can be worked out by hand."""

import re

from taxo_pipeline.approaches.spec import MODEL, Approach, Classified, ClassifyRequest


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def classify(request: ClassifyRequest) -> Classified:
    leaves = [(path, words(path.split(" > ")[-1])) for path in request.taxonomy.paths]
    ranked = []
    for title in request.products["product_title"].to_list():
        overlap = [(path, float(len(words(title) & leaf))) for path, leaf in leaves]
        ranked.append(sorted(overlap, key=lambda pair: -pair[1])[: request.top_k])
    return Classified(request.products["product_id"].to_list(), ranked)


APPROACH = Approach(
    name="toy-title-words",
    description="Categories whose leaf name shares the most words with the title.",
    classify=classify,
    partitioning=MODEL,
    families=("text", "image"),
    stage="query_encode",
    batch_size=1,
    documents="both",  # it reads no category documents: its results sit beside score fusion's
)

"""Metrics on small cases computed by hand (seed-rules.md, "Metrics")."""

import pytest

from taxo_pipeline.evaluation.metrics import (
    ancestors,
    evaluate_l1,
    evaluate_paths,
    hierarchical_prf,
    latency_summary,
    lenient_references,
    macro_at_level,
    macro_prf,
)

HATS = "Apparel & Accessories > Clothing Accessories > Hats"
SCARVES = "Apparel & Accessories > Clothing Accessories > Scarves & Shawls"
PANTS = "Apparel & Accessories > Clothing > Pants"
RACKS = "Home & Garden > Decor > Coat & Hat Racks"
APPAREL = "Apparel & Accessories"


def test_ancestors_are_every_prefix():
    assert ancestors(HATS) == {APPAREL, "Apparel & Accessories > Clothing Accessories", HATS}
    assert ancestors(None) == set() and ancestors("") == set()


def test_hierarchical_is_micro_averaged_over_the_corpus():
    # pair 1: sibling leaf, overlap 2 of 3/3; pair 2: other branch, overlap 0 of 3/3
    # pair 3: exact, 3 of 3/3. Sums: overlap 5, predicted 9, relevant 9.
    prf = hierarchical_prf([SCARVES, RACKS, PANTS], [HATS, HATS, PANTS])
    assert prf.precision == pytest.approx(5 / 9)
    assert prf.recall == pytest.approx(5 / 9)
    assert prf.f1 == pytest.approx(5 / 9)


def test_hierarchical_empty_prediction_and_shorter_reference():
    # empty prediction: adds 0 predicted and 3 relevant; prediction L3 vs reference L1: overlap 1, pred 3, ref 1
    prf = hierarchical_prf([None, HATS], [PANTS, APPAREL])
    p, r = 1 / 3, 1 / 4
    assert prf.precision == pytest.approx(p)
    assert prf.recall == pytest.approx(r)
    assert prf.f1 == pytest.approx(2 * p * r / (p + r))


def test_hierarchical_all_empty_is_zero():
    prf = hierarchical_prf([None], [HATS])
    assert (prf.precision, prf.recall, prf.f1) == (0.0, 0.0, 0.0)


def test_lenient_takes_a_matching_potential_as_reference():
    refs = lenient_references([SCARVES, RACKS, None], [HATS, HATS, HATS], [[SCARVES], [PANTS], [HATS]])
    assert refs == [SCARVES, HATS, HATS]


def test_macro_label_set_is_union_and_zero_denominators_give_zero():
    # pairs (a,a) tp a; (b,a) fp b + fn a; (a,c) fp a + fn c
    # a: tp1 fp1 fn1 -> p .5 r .5 f .5; b: p 0 r 0; c: p 0 r 0; means over 3 labels
    prf = macro_prf(["a", "b", "a"], ["a", "a", "c"])
    assert prf.precision == pytest.approx(0.5 / 3)
    assert prf.recall == pytest.approx(0.5 / 3)
    assert prf.f1 == pytest.approx(0.5 / 3)
    assert macro_prf([None], [None]).f1 == 0.0


def test_macro_at_level_skips_short_references_and_nulls_short_predictions():
    # level 3: reference APPAREL (L1 only) skipped; prediction APPAREL vs HATS is null -> fn only
    preds = [HATS, APPAREL, HATS]
    refs = [HATS, HATS, APPAREL]
    prf = macro_at_level(preds, refs, 3)
    # kept pairs: (HATS, HATS) tp; (None, HATS) fn -> HATS: p 1, r .5, f 2/3 ; single label
    assert prf.precision == pytest.approx(1.0)
    assert prf.recall == pytest.approx(0.5)
    assert prf.f1 == pytest.approx(2 / 3)
    # level 1 keeps all three, all APPAREL: 3 tp
    assert macro_at_level(preds, refs, 1).f1 == pytest.approx(1.0)


def test_evaluate_paths_strict_and_lenient_blocks():
    result = evaluate_paths([SCARVES], [HATS], [[SCARVES]])
    assert result["strict"]["hierarchical"]["f1"] == pytest.approx(2 / 3)
    assert result["lenient"]["hierarchical"]["f1"] == pytest.approx(1.0)
    assert result["strict"]["macro"]["l2"]["f1"] == pytest.approx(1.0)
    assert result["strict"]["macro"]["l3"]["f1"] == pytest.approx(0.0)
    assert set(result["lenient"]["macro"]) == {"l1", "l2", "l3"}


def test_evaluate_l1_macro_over_all_sorted_labels_with_lenient_potentials():
    labels = [APPAREL, "Home & Garden", "Sporting Goods"]
    preds = [APPAREL, "Home & Garden"]
    truths = [HATS, PANTS]
    potentials = [[], [RACKS]]
    result = evaluate_l1(preds, truths, potentials, labels)
    # strict: Apparel tp1 fn1 -> p1 r.5 f2/3; Home fp1 -> 0; Sporting -> 0 (no support, still averaged)
    assert result["strict"]["f1"] == pytest.approx((2 / 3) / 3)
    assert result["strict"]["precision"] == pytest.approx(1 / 3)
    # lenient: second product's potential is under Home & Garden -> both correct; Sporting still 0
    assert result["lenient"]["f1"] == pytest.approx(2 / 3)


def test_latency_percentiles_are_linear_interpolated():
    summary = latency_summary([10.0, 20.0, 30.0, 40.0], batch_size=8)
    assert summary == {"p50": 25.0, "p95": pytest.approx(38.5), "request_count": 4, "batch_size": 8}
    assert latency_summary([], 8)["request_count"] == 0

"""Hostile text through every free-text field of the store: stored and read back verbatim (or refused with
the store's typed error), never a crash, and no other row changed. Every value goes in through ``?``
parameters; one query built by string formatting would fail here (a quote crashes it, a crafted name runs
its own SQL)."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.data.names import InvalidNameError, check_name, check_reader
from dashboard.data.store import (
    BUILTIN_CONCEPTS,
    DrawingRecord,
    FindingRecord,
    ImageRecord,
    NotFoundError,
    Store,
    UnknownConceptError,
    ValidationError,
)
from dashboard.engine.dissection import label_units_from_drawing

HOSTILE = [
    "O'Brien",
    "x'); DELETE FROM concepts; --",
    "x'; DELETE FROM concepts WHERE 'a'='a",
    "' OR '1'='1",
    '"; DROP TABLE annotations; --',
    "?", "$1", "%s %(x)s {0} {}", "\\'", "''", "--", "/*", "NULL", "null", "  spaced  ",
    "Ünïcødé 名前 🙂 ‮", "a" * 80,
]


def _snapshot(store: Store) -> dict:
    """Every row of the tables a hostile write must leave alone (other than its own rows)."""
    return {
        "concepts": store.query("SELECT * FROM concepts ORDER BY name"),
        "bystander_case": store.get_case("bystander"),
        "bystander_image": store.get_image("bystander-img"),
        "bystander_annotations": [a.annotation_id for a in store.list_annotations(image_id="bystander-img")],
        "bystander_labels": store.list_unit_labels("bystander-card", "bn2"),
        "bystander_findings": store.list_findings("bystander-img"),
        "readers": {r["reader"] for r in store.query("SELECT reader FROM readers")},
    }


@pytest.fixture
def busy_store(store):
    """A store with a bystander case, image, drawing, unit label and finding that nothing should touch."""
    store.save_case("bystander", "synthetic", description="keep me", patient_ref="P-1")
    store.save_image(ImageRecord("bystander-img", "bystander", "files/b.dcm", "sha-b", rows=64, cols=64))
    store.save_annotation(DrawingRecord(image_id="bystander-img", concept="fat", reader="dr-b", patch_x0=0, patch_y0=0,
                                        patch_size=32, shape="rect", geometry=[1, 1, 9, 9], mask_png=b"png",
                                        model_card="bystander-card"),
                          unit_ious={"model_card": "bystander-card", "layer": "bn2", "units": [3], "ious": [0.5]})
    store.save_findings([FindingRecord("bystander-f", "bystander-img", "fat", source="truth")])
    return store


def _round_trip(store: Store, text: str, n: int) -> None:
    """Write ``text`` into every free-text field the store accepts (ids made unique with ``#n``), read each
    back, and check it is verbatim, or that the store refused it with its typed error."""
    before = _snapshot(store)
    case_id, image_id = f"{text}#c{n}", f"{text}#i{n}"
    store.save_case(case_id, text, description=text, patient_ref=text)
    case = store.get_case(case_id)
    assert (case["source"], case["description"], case["patient_ref"]) == (text, text, text)
    assert store.ensure_case(case_id, "other") is False and store.get_case(case_id)["source"] == text
    assert store.save_image(ImageRecord(image_id, case_id, f"files/{n}.dcm", f"{text}#sha{n}", rows=8, cols=8,
                                        laterality=text, view=text, modality=text, source_key=f"{text}#k{n}"))
    img = store.get_image(image_id)
    assert (img["case_id"], img["sha256"], img["laterality"], img["view"], img["modality"]) == (
        case_id, f"{text}#sha{n}", text, text, text)
    assert store.find_image_by_sha256(f"{text}#sha{n}")["image_id"] == image_id
    assert store.find_image_by_source(f"{text}#k{n}")["image_id"] == image_id
    assert [r["image_id"] for r in store.list_images(case_id=case_id, source=text)] == [image_id]
    store.save_findings([FindingRecord(f"{text}#f{n}", image_id, text, pathology=text, source=text,
                                       attributes={text: text})])
    [f] = store.list_findings(image_id)
    assert (f["finding_id"], f["concept"], f["pathology"], f["source"]) == (f"{text}#f{n}", text, text, text)

    # reader names: trimmed, then verbatim; or refused with ValidationError
    try:
        expected_reader = check_reader(text)
    except InvalidNameError:
        expected_reader = None
    if expected_reader is None:
        with pytest.raises(ValidationError):
            store.save_reader(text)
    else:
        assert store.save_reader(text) == expected_reader
        assert store.query("SELECT reader FROM readers WHERE reader = ?", [expected_reader]) == [
            {"reader": expected_reader}]

    # a drawing whose reader, model card and layer are the hostile text
    drawing = DrawingRecord(image_id=image_id, concept="mass-round", reader=text, patch_x0=0, patch_y0=0,
                            patch_size=32, shape=text, geometry={"label": text}, mask_png=b"png", model_card=text)
    ious = {"model_card": text, "layer": text, "units": [1, 2], "ious": [0.3, 0.4]}
    if expected_reader is None:
        with pytest.raises(ValidationError):
            store.save_annotation(drawing, unit_ious=ious)
        assert store.list_annotations(image_id=image_id) == []
    else:
        aid = store.save_annotation(drawing, unit_ious=ious)
        [ann] = store.list_annotations(image_id=image_id, model_card=text)
        assert (ann.annotation_id, ann.reader, ann.model_card, ann.shape, ann.geometry) == (
            aid, expected_reader, text, text, {"label": text})
        labels = store.list_unit_labels(text, text)
        assert [(r["unit"], r["annotation_id"], r["reader"]) for r in labels] == [
            (1, aid, expected_reader), (2, aid, expected_reader)]
        store.delete_annotation(aid, actor=expected_reader)
        assert store.list_annotations(image_id=image_id) == [] and store.list_unit_labels(text, text) == []

    # concept descriptions: verbatim, or refused; a hostile concept *name* is unknown, never run
    try:
        ok = text == "" or bool(check_name(text, "concept description", 200))  # empty: no description
    except InvalidNameError:
        ok = False
    name = f"custom-{n}"
    if ok:
        assert store.save_concept(name, description=text) == name
        assert store.get_concept(name)["description"] == text
    else:
        with pytest.raises(ValidationError):
            store.save_concept(name, description=text)
    with pytest.raises(UnknownConceptError):
        store.get_concept(text + "#no-such-concept")
    with pytest.raises(NotFoundError):
        store.get_image(text + "#no-such-image")

    after = _snapshot(store)
    assert {k: v for k, v in after.items() if k not in ("concepts", "readers")} == {
        k: v for k, v in before.items() if k not in ("concepts", "readers")}
    assert [c for c in after["concepts"] if c["name"] != name] == before["concepts"]
    assert after["readers"] - before["readers"] <= {expected_reader} and before["readers"] <= after["readers"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_round_trips_verbatim(busy_store, text):
    _round_trip(busy_store, text, 0)
    assert len([c for c in busy_store.list_concepts() if c["builtin"]]) == len(BUILTIN_CONCEPTS)


def test_reader_named_o_brien_and_a_crafted_name(busy_store):
    """The two readers a formatted query would fail on: one crashes it, the other deletes every concept."""
    for i, reader in enumerate(("O'Brien", "x'); DELETE FROM concepts; --")):
        res = label_units_from_drawing(
            busy_store, DrawingRecord(image_id="bystander-img", concept="vessel", reader=reader, patch_x0=0,
                                      patch_y0=0, patch_size=32, shape="rect", geometry=[2, 2, 20, 20],
                                      model_card="bystander-card"),
            layer="bn2", ious=[0.0, 0.1, 0.8 + 0.1 * i], tau=0.2)
        assert res.labeled_units.tolist() == [2]
        assert [a.reader for a in busy_store.list_annotations(image_id="bystander-img", concept="vessel")][-1] == reader
    assert len(busy_store.list_concepts()) == len(BUILTIN_CONCEPTS)
    assert {a.reader for a in busy_store.list_annotations()} == {"dr-b", "O'Brien", "x'); DELETE FROM concepts; --"}


_counter = itertools.count(1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
       | st.sampled_from(HOSTILE).flatmap(lambda h: st.text(max_size=6).map(lambda t: h + t)))
def test_any_text_round_trips_or_is_refused(busy_store, text):
    """Random text (control characters, NUL, quotes, any script) through every free-text field."""
    _round_trip(busy_store, text, next(_counter))

"""Domains: the cards' [domain] tables, an image's domain from its source and header, the warning, the pick."""
from __future__ import annotations

import pytest

import model_zoo
from dashboard.data.domain import (
    FFDM,
    FILM,
    SYNTHETIC,
    UNKNOWN,
    ImageDomain,
    domain_warning,
    image_domain,
    suggest_card,
)


@pytest.fixture(scope="module")
def cards():
    return {c.name: c for c in model_zoo.list_cards()}


def test_every_built_in_card_records_its_training_domain(cards):
    assert cards["demo-lite0-synth"].domain["modality"] == SYNTHETIC
    assert cards["mias-lite0"].domain["modality"] == FILM
    assert cards["mias-lite0"].domain["sources"] == ["mini-mias"]
    assert cards["mias-lite0"].domain["pixel_spacing_mm"] == 0.2
    assert "Joyce-Loebl" in cards["mias-lite0"].domain["vendor"]
    assert cards["imagenet-lite0"].domain["modality"] == "natural photographs"
    # the recorded [training] tables are untouched by the domain
    assert cards["mias-lite0"].training["patchset"]["sources"] == ["mini-mias"]


def test_card_domain_survives_a_save(cards, tmp_path):
    saved = model_zoo.save_card(cards["mias-lite0"], tmp_path / "mias-lite0.toml")
    assert model_zoo.read_card(saved.path).domain == cards["mias-lite0"].domain


@pytest.mark.parametrize(("source", "meta", "modality", "expected"), [
    ("synthetic", {"Modality": "MG"}, "MG", SYNTHETIC),
    ("cbis-ddsm", {"Modality": "MG"}, "MG", FILM),
    ("mini-mias", {"format": "PGM"}, "", FILM),
    ("ingest", {"Modality": "MG", "PresentationIntentType": "FOR PRESENTATION", "Manufacturer": "HOLOGIC, Inc."},
     "MG", FFDM),
    ("ingest", {"Modality": "MG", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.2.1"}, "MG", FFDM),
    ("ingest", {"Modality": "MG", "Manufacturer": "GE MEDICAL SYSTEMS"}, "MG", FFDM),
    ("ingest", {"Modality": "MG", "ConversionType": "DF", "Manufacturer": "Lumisys"}, "MG", FILM),
    ("ingest", {"Modality": "MG", "ConversionType": "WSD"}, "MG", FILM),
    ("ingest", {"Modality": "MG"}, "MG", UNKNOWN),
    ("ingest", {"format": "PNG"}, "", UNKNOWN),
])
def test_image_domain_from_source_and_header(source, meta, modality, expected):
    assert image_domain(source, meta, modality).modality == expected


def test_warning_names_both_domains_and_is_empty_on_a_match(cards):
    film = image_domain("cbis-ddsm", {})
    text = domain_warning(cards["demo-lite0-synth"], film)
    assert "demo-lite0-synth was trained on synthetic phantoms" in text
    assert "this image is a digitised film" in text and "not calibrated" in text
    assert domain_warning(cards["mias-lite0"], film) == ""
    assert domain_warning(cards["demo-lite0-synth"], image_domain("synthetic", {})) == ""
    assert "FFDM" in domain_warning(cards["mias-lite0"], ImageDomain(FFDM, "test"))


def test_suggest_card_picks_the_card_of_the_images_domain(cards):
    film = [image_domain("cbis-ddsm", {}), image_domain("mini-mias", {})]
    assert suggest_card(cards.values(), film, "demo-lite0-synth") == "mias-lite0"
    assert suggest_card(cards.values(), [image_domain("synthetic", {})], "mias-lite0") == "demo-lite0-synth"
    assert suggest_card(cards.values(), [ImageDomain(FFDM, "test")], "demo-lite0-synth") == ""  # none trained on FFDM
    assert suggest_card(cards.values(), [ImageDomain(UNKNOWN, "test")], "demo-lite0-synth") == ""
    assert suggest_card(cards.values(), film + [image_domain("synthetic", {})], "x") == ""  # a mixed case
    # imagenet-lite0 gives no lesion score: never suggested
    assert suggest_card(cards.values(), [ImageDomain("natural photographs", "t")], "x") == ""

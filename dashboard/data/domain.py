"""Domains: what kind of image a model was trained on, what kind an image is, and the warning when they differ.

A card's ``[domain]`` table says what its model saw in training (``modality``: "ffdm", "digitised film",
"synthetic" or "natural photographs"; ``sources``; ``pixel_spacing_mm``; vendor or digitiser). An image's
domain comes from its case's source and its header summary (``images.meta``):

- the synthetic demo (source synthetic/phantom/demo): "synthetic";
- CBIS-DDSM and mini-MIAS: "digitised film" (both are scanned screen films);
- any other DICOM: ``ConversionType`` (DF digitised film, SD/SI scanned) says film; ``PresentationIntentType``
  (only digital mammography IODs carry it), a digital-mammography SOP class, or Modality MG with a
  manufacturer and no conversion type say "ffdm"; anything else (plain PNG/JPEG, no header) is "unknown".

A score or an explanation of an image from another domain than the card's carries ``domain_warning``'s
text wherever it is shown (Worklist, Read, Report, HTML/JSON/DICOM SR exports); ``suggest_card`` names a
card trained on the image's domain, when one exists.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

SYNTHETIC = "synthetic"
FFDM = "ffdm"
FILM = "digitised film"
UNKNOWN = "unknown"

#: How the domains read in a sentence ("this image is ...").
DOMAIN_TEXT = {
    SYNTHETIC: "a synthetic phantom",
    FFDM: "a full-field digital mammogram (FFDM)",
    FILM: "a digitised film",
    UNKNOWN: "of an unknown kind (no header says whether it is FFDM or a digitised film)",
}
#: Case sources whose domain is known whatever the files say.
SOURCE_DOMAINS = {"synthetic": SYNTHETIC, "phantom": SYNTHETIC, "demo": SYNTHETIC,
                  "cbis-ddsm": FILM, "mini-mias": FILM}
_DIGITAL_MG_SOP = ("1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1")
_FILM_CONVERSIONS = {"DF", "SD", "SI"}


@dataclass(frozen=True)
class ImageDomain:
    """An image's domain and what it was decided from (for the warning's tooltip and exports)."""

    modality: str          # SYNTHETIC | FFDM | FILM | UNKNOWN
    reason: str
    vendor: str = ""

    @property
    def text(self) -> str:
        return DOMAIN_TEXT.get(self.modality, self.modality)


def _meta(row: dict) -> dict:
    meta = row.get("meta")
    return json.loads(meta) if isinstance(meta, str) else dict(meta or {})


def image_domain(source: str, meta: dict | str | None = None, modality: str = "") -> ImageDomain:
    """The domain of an image from its case's ``source``, its header summary and its Modality."""
    meta = _meta({"meta": meta})
    vendor = str(meta.get("Manufacturer") or meta.get("SecondaryCaptureDeviceManufacturer") or "")
    known = SOURCE_DOMAINS.get((source or "").lower())
    if known:
        return ImageDomain(known, f"the data set ({source})", vendor)
    modality = str(modality or meta.get("Modality") or "").upper()
    conversion = str(meta.get("ConversionType") or "").upper()
    if conversion in _FILM_CONVERSIONS:
        return ImageDomain(FILM, f"ConversionType {conversion}", vendor)
    if meta.get("PresentationIntentType"):
        return ImageDomain(FFDM, f"PresentationIntentType {meta['PresentationIntentType']}", vendor)
    if str(meta.get("SOPClassUID") or "") in _DIGITAL_MG_SOP:
        return ImageDomain(FFDM, "a digital mammography SOP class", vendor)
    if modality == "MG" and vendor and not conversion:
        return ImageDomain(FFDM, f"Modality MG from {vendor}", vendor)
    if modality == "MG" and conversion:
        return ImageDomain(FILM, f"ConversionType {conversion}", vendor)
    return ImageDomain(UNKNOWN, "no header says how it was acquired" if modality else "a plain image file",
                       vendor)


def row_domain(image_row: dict, source: str) -> ImageDomain:
    """``image_domain`` of a store image row (``images.*``) in a case of ``source``."""
    return image_domain(source, _meta(image_row), str(image_row.get("modality") or ""))


def card_modality(card) -> str:
    """The card's training modality ("" when its card has no ``[domain]`` table)."""
    return str((getattr(card, "domain", None) or {}).get("modality", "")).lower()


def card_domain_text(card) -> str:
    domain = getattr(card, "domain", None) or {}
    return str(domain.get("described_as") or domain.get("modality") or "an unrecorded domain")


def domain_warning(card, domain: ImageDomain) -> str:
    """The warning to show beside a score or explanation of an image from another domain than the
    card's ('' when they match, or when the card does not record its domain)."""
    trained = card_modality(card)
    if not trained or trained == domain.modality:
        return ""
    name = getattr(card, "name", "this model")
    return (f"Domain mismatch: {name} was trained on {card_domain_text(card)}; this image is {domain.text} "
            f"(from {domain.reason}). Its scores are not calibrated here.")


def suggest_card(cards: Iterable, domains: Iterable[ImageDomain], current: str = "") -> str:
    """A card that gives a lesion score and was trained on the domain of every image in ``domains``
    (``current`` when it is one), else ''."""
    wanted = {d.modality for d in domains}
    if len(wanted) != 1 or UNKNOWN in wanted:
        return ""
    (modality,) = wanted
    fits = [c for c in cards if card_modality(c) == modality and getattr(c, "positive_class", None)]
    if any(c.name == current for c in fits):
        return current
    return fits[0].name if fits else ""


def case_domains(store, case_id: str) -> list[ImageDomain]:
    """The domain of each image of a case, in the store's image order."""
    case = store.get_case(case_id)
    return [row_domain(r, case["source"]) for r in store.list_images(case_id=case_id)]


def image_row_domain(store, image_id: str) -> ImageDomain:
    """The domain of one stored image."""
    row = store.get_image(image_id)
    return row_domain(row, store.get_case(row["case_id"])["source"])

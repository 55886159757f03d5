"""Scientific names of the species classifiers' classes, for exports that need taxa (Camtrap DP).

The Snapshot Serengeti classes are common names; their taxa are those of the Snapshot Serengeti
species list the model was trained on (plains zebra, blue wildebeest, ...). A class too broad for a
species names its family. The Amazon Rainforest classifier's classes are already genera. ``other``
and anything unknown have no scientific name (the observation is then "unclassified"), and a
class that is a human is an observation of a human, not a taxon.
"""
from __future__ import annotations

SERENGETI = {
    "wildebeest": "Connochaetes taurinus",
    "guineafowl": "Numididae",
    "zebra": "Equus quagga",
    "buffalo": "Syncerus caffer",
    "gazellethomsons": "Eudorcas thomsonii",
    "gazellegrants": "Nanger granti",
    "warthog": "Phacochoerus africanus",
    "impala": "Aepyceros melampus",
    "hyenaspotted": "Crocuta crocuta",
}
HUMAN = {"human", "person"}
NOT_A_TAXON = {"other", "empty", "blank", "unknown"}


def scientific_name(label: str | None) -> str | None:
    """The scientific name of a classifier label, or None (no taxon can be said)."""
    if not label:
        return None
    key = label.strip()
    if key.lower() in HUMAN or key.lower() in NOT_A_TAXON:
        return None
    if key.lower() in SERENGETI:
        return SERENGETI[key.lower()]
    if key[:1].isupper() and key.replace(" ", "").isalpha():     # a Latin genus or binomial already
        return key
    return None


def is_human(label: str | None) -> bool:
    return bool(label) and label.strip().lower() in HUMAN

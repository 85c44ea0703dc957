"""What kind of manipulation a fake is (index column ``method_type``), where its dataset says so.

One home for the method -> kind tables the sources share. The vocabulary is ``dfd.store.schema.METHOD_TYPES``;
reals, and fakes whose dataset does not say what made them (DFDC's per-video method, WildDeepfake's internet
videos, Deepfake-Eval-2024's social-media posts), get "" (unknown): never guessed from a name that only looks
like one. The tables follow the datasets' own papers and folder names (evidence in /work/shared/datasets*.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from dfd.store.schema import METHOD_TYPES

# FaceForensics++ (Rössler et al. 2019): Deepfakes and FaceSwap swap identities, Face2Face and NeuralTextures
# re-enact expressions; FaceShifter (added later) and Google's DeepFakeDetection are face swaps.
FFPP = {"Deepfakes": "face_swap", "FaceSwap": "face_swap", "Face2Face": "reenactment",
        "NeuralTextures": "reenactment", "FaceShifter": "face_swap", "DeepFakeDetection": "face_swap"}
# DF40's four types (its README and paper).
DF40 = {"FS": "face_swap", "FR": "reenactment", "EFS": "entire_face_synthesis", "FE": "face_editing"}
# Celeb-DF++'s three scenario folders.
CELEBDF_PP = {"FaceSwap": "face_swap", "FaceReenact": "reenactment", "TalkingFace": "talking_face"}
# DiFF's four subsets: text- and image-conditioned diffusion images, diffusion face swaps and face edits.
DIFF = {"T2I": "diffusion", "I2I": "diffusion", "FS": "face_swap", "FE": "face_editing"}

# Words in a folder name that name a kind (RedFace's manipulation-type level; its README names four types).
_WORDS = (
    (r"swap", "face_swap"),
    (r"reenact", "reenactment"),
    (r"lip[ _-]?sync", "lip_sync"),
    (r"talking", "talking_face"),
    (r"(entire|whole)[ _-]?face|face[ _-]?synthesis|synthesi[sz]", "entire_face_synthesis"),
    (r"attribute|edit", "face_editing"),
    (r"diffusion", "diffusion"),
)


def kind_from_words(name: str) -> str:
    """The kind a folder name spells out ("Face Swapping" -> face_swap, "Face_Attribute_Manipulation" ->
    face_editing), or "" when it names none or several."""
    low = name.lower()
    hits = {kind for pattern, kind in _WORDS if re.search(pattern, low)}
    return hits.pop() if len(hits) == 1 else ""


def fill(rows: Iterable[dict], kind: str | Callable[[dict], str]) -> None:
    """Set each row's ``method_type``: ``kind`` (a kind, or a function of the row) for fakes, "" for reals."""
    for r in rows:
        r["method_type"] = "" if not r["label"] else kind(r) if callable(kind) else kind


def checked(kinds: Iterable[str]) -> None:
    """Fail early (a programming error, not a user's) if a table above leaves the vocabulary."""
    bad = sorted(set(kinds) - {"", *METHOD_TYPES})
    if bad:
        raise ValueError(f"method_type values {bad} are not in dfd.store.schema.METHOD_TYPES")


checked([*FFPP.values(), *DF40.values(), *CELEBDF_PP.values(), *DIFF.values(), *(k for _, k in _WORDS)])

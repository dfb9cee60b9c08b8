"""The in-memory table that the CelebA reader returns and the pipelines consume."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from lnet_anet_tf import attributes


@dataclasses.dataclass
class CelebATable:
    """One row per image, as parallel NumPy arrays.

    Optional columns are `None` when the dataset lacks the file behind them; the
    reader records why in `missing_parts`.
    """

    # File names as listed in the annotation files, e.g. "000001.jpg".
    image_names: np.ndarray  # str, [N]
    # [N, 40] uint8, 1 where the attribute is present, in `ATTRIBUTE_NAMES` order.
    attributes: np.ndarray
    # Absolute paths of the in-the-wild and aligned images, or None.
    wild_paths: Optional[np.ndarray] = None  # str, [N]
    aligned_paths: Optional[np.ndarray] = None  # str, [N]
    # [N, 4] int32 face boxes (x_1, y_1, width, height) in in-the-wild pixels.
    boxes: Optional[np.ndarray] = None
    # [N, 10] int32 landmarks (x, y pairs in `LANDMARK_COLUMNS` order).
    wild_landmarks: Optional[np.ndarray] = None
    aligned_landmarks: Optional[np.ndarray] = None
    # [N] int32 identity ids as in `identity_CelebA.txt`.
    identities: Optional[np.ndarray] = None
    # [N] int8 partition codes: 0 train, 1 validation, 2 test.
    partitions: Optional[np.ndarray] = None
    # Part name ("boxes", "identities", ...) -> a sentence saying why it is absent.
    missing_parts: dict = dataclasses.field(default_factory=dict)
    # Problems that the reader found and did not raise (on_bad_example="skip"):
    # messages naming file, line and value, at most a few per reason.
    problems: list = dataclasses.field(default_factory=list)
    # Rows dropped under on_bad_example="skip": reason -> number of rows.
    skipped_rows: dict = dataclasses.field(default_factory=dict)
    # Accepted departures from the release format, e.g. 0 written for -1.
    warnings: list = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_names)

    def has(self, part: str) -> bool:
        return getattr(self, part) is not None

    def require(self, part: str, purpose: str) -> np.ndarray:
        """Return column `part`, or raise ValueError saying why `purpose` needs it."""
        value = getattr(self, part)
        if value is None:
            reason = self.missing_parts.get(part, f"the dataset has no {part}")
            raise ValueError(f"{purpose} needs {part}, but {reason}.")
        return value

    def select(self, mask_or_indices) -> "CelebATable":
        """Return the rows chosen by a boolean mask or an index array."""
        fields = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value = value[mask_or_indices]
            fields[field.name] = value
        return CelebATable(**fields)

    def partition(self, name: str) -> "CelebATable":
        """Return the rows of partition `name` ("train", "validation" or "test")."""
        if name not in attributes.PARTITIONS:
            raise ValueError(
                f"Unknown partition {name!r}; expected one of {sorted(attributes.PARTITIONS)}."
            )
        codes = self.require("partitions", f"Selecting the {name} partition")
        return self.select(codes == attributes.PARTITIONS[name])

"""The benchmark's own measurements (``bench/__main__.py``), on small written series: a broken import or a
renamed function here would otherwise surface only when someone runs ``make bench`` on a full-size study."""
from __future__ import annotations

from pathlib import Path

import pytest
from dicom_factory import write_ct_series

from bench.__main__ import decoded_files

pytestmark = pytest.mark.unit


def test_decoded_files_counts_only_the_selected_series(tmp_path: Path) -> None:
    """Two CT series in one folder: the thin noncontrast one is selected; no pixel data is decoded while the
    headers are scanned, and only the selected series' files are decoded when its volume is loaded."""
    chosen = write_ct_series(tmp_path / "in" / "a", n=50, series_number=3, description="Pelvis 2.5 mm")
    other = write_ct_series(tmp_path / "in" / "b", n=30, slice_step=5.0, thickness=5.0, series_number=4,
                            contrast=True, description="Pelvis 5 mm contrast")
    got = decoded_files(tmp_path / "in")
    assert got["files_in_folder"] == len(chosen.files) + len(other.files) == 80
    assert got["series_in_folder"] == 2 and got["selected_series_files"] == 50
    assert got["decoded_during_scan"] == 0 and got["decoded_total"] == 50
    assert got["only_selected_series_decoded"] is True
    assert got["volume_shape"] == [50, 32, 32]

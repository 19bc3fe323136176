"""CLI: ``python -m training.phantom --out DIR --n N --seed S``."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Sequence

from training.phantom import NO_TUMOUR, TUMOUR_CLASSES, generate_cohort
from training.phantom.acquisition import COVERAGE, EXTERNAL_SITES, FORCED_COVERAGE


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.phantom",
                                 description="Synthetic noncontrast pelvic CT studies (DICOM) with label maps.")
    ap.add_argument("--out", type=Path, required=True, help="output folder (manifest.csv + one folder per case)")
    ap.add_argument("--n", type=int, default=10, help="number of cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-size", action="store_true", help="512x512 at 0.6-1.0 mm, slices of 0.625-5 mm")
    ap.add_argument("--protocol", choices=["standard", "varied"], default="standard",
                    help="standard: routine pelvic CT; varied: coverage, kernels and position as hospitals scan")
    ap.add_argument("--no-tumour-fraction", type=float, default=0.15)
    ap.add_argument("--classes", nargs="+", choices=list(TUMOUR_CLASSES) + [NO_TUMOUR], default=None)
    ap.add_argument("--matrix", type=int, default=None, help="rows = cols (same FOV)")
    ap.add_argument("--transfer-syntax", default=None, help="explicit | implicit | jpeg2000 | rle | UID")
    ap.add_argument("--pixel-representation", type=int, choices=[0, 1], default=None)
    ap.add_argument("--localizer", action="store_true", help="add a localizer image to each study")
    ap.add_argument("--contrast-series", action="store_true", help="add a contrast-enhanced series")
    ap.add_argument("--patient-name", default=None, help="format string, e.g. 'TEST^{case_id}'")
    ap.add_argument("--patient-id", default=None)
    ap.add_argument("--accession-number", default=None)
    ap.add_argument("--birth-date", default=None)
    ap.add_argument("--workers", type=int, default=1, help="render cases in this many processes")
    ap.add_argument("--tumour-world", choices=["v1", "v2"], default="v1",
                    help="v1: the original tumours (default); v2: sourced probabilities, no tells (tumour_v2.py)")
    ap.add_argument("--site", default=None, choices=sorted(EXTERNAL_SITES),
                    help="scan every case at this external site (never drawn otherwise: the external-style cohort)")
    ap.add_argument("--coverage", default=None, choices=[*COVERAGE, *FORCED_COVERAGE],
                    help="scan every case over this range (default: drawn; upper_abdomen: no pelvis at all)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(message)s")
    t0 = time.perf_counter()
    man = generate_cohort(a.out, a.n, a.seed, full_size=a.full_size, no_tumour_fraction=a.no_tumour_fraction,
                          classes=a.classes, matrix=a.matrix, transfer_syntax=a.transfer_syntax,
                          pixel_representation=a.pixel_representation, localizer=a.localizer,
                          contrast_series=a.contrast_series, patient_name=a.patient_name, patient_id=a.patient_id,
                          accession_number=a.accession_number, birth_date=a.birth_date, protocol=a.protocol, workers=a.workers,
                          tumour_world=a.tumour_world, site=a.site, coverage=a.coverage)
    print(f"wrote {a.n} cases, manifest {man} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

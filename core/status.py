"""The outcome of one run: the ``status`` of result.json, the SR and the key images (one enum, one place).

=================  =========  ===========================================================================
status             exit code  meaning
=================  =========  ===========================================================================
``tumour_found``   0          a sacral tumour was segmented and classified
``no_tumour``      0          hip bones found, no tumour segmented
``not_applicable`` 0          the series cannot be analysed (e.g. no hip bone in the field of view);
                              the reason is in ``warnings``
``error``          2, 3, 4, 1 unusable input, a missing or corrupted model, unwritable outputs, an internal
                              failure (:mod:`core.run_state` names the exit codes)
=================  =========  ===========================================================================

:class:`Status` is a ``StrEnum``: a member compares equal to, and serialises to JSON as, its value, so
result.json keeps the strings above.
"""
from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """The four outcomes of a run."""

    TUMOUR_FOUND = "tumour_found"
    NO_TUMOUR = "no_tumour"
    NOT_APPLICABLE = "not_applicable"
    ERROR = "error"

    @property
    def final(self) -> bool:
        """True once no further analysis step applies (``error`` or ``not_applicable``)."""
        return self in (Status.ERROR, Status.NOT_APPLICABLE)


#: the statuses of a run that wrote its outputs (an SR exists for each)
REPORTED = (Status.TUMOUR_FOUND, Status.NO_TUMOUR, Status.NOT_APPLICABLE)
#: the statuses of an analysed series (the segmentation metrics use these runs)
ANALYSED = (Status.TUMOUR_FOUND, Status.NO_TUMOUR)

"""Regulatory validation runs of the sacral-tumour application over a cohort (see docs/validation.md)."""

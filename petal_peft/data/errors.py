"""The one error type for bad training or evaluation data."""

from __future__ import annotations


class DataValidationError(ValueError):
    """Raised when data on disk (or in a dataset) cannot be used; the message names the path and the problem.

    A subclass of ValueError so callers that already catch bad-input errors keep working.
    """

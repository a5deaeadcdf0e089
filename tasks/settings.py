"""What the flows and their runtime read from the configuration: the pipeline's
environment (:func:`load_settings`, ``OTAUDIT_*``) and the runtime's constants. Flows import
only tasks (tests/test_layout.py); this module is their one door to :mod:`otaudit.config`."""

from __future__ import annotations

from otaudit.config import PREFECT_SERVER_START_TIMEOUT_S, load_settings

__all__ = ["load_settings", "PREFECT_SERVER_START_TIMEOUT_S"]

"""Thin entry points, one module per ``dfd-*`` command (``dfd-embed`` included): parse, call the stage that does
the work, print.

May import: every package of dfd
"""

from __future__ import annotations

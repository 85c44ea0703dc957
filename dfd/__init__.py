"""dfd: a research framework for detecting deepfaked faces.

Labels everywhere: 0 = real, 1 = fake.
"""

import os as _os

# albumentations phones home on import to check for updates; these machines (and many clusters) are offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

REAL, FAKE = 0, 1

"""An application whose module takes seconds to import (as a large model library may)."""

from __future__ import annotations

import time

from tests.integration import apps

time.sleep(3)

app = apps.text_app

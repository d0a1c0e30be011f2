"""An application whose module prints (a lot, on both streams) while it is imported."""

from __future__ import annotations

import sys

from tests.integration import apps

for line in range(2000):
    print(f"noisy import, line {line}: \x80\x00 not a pickle")
    print(f"noisy import, stderr line {line}", file=sys.stderr)

app = apps.whoami_app

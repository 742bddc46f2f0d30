"""Test isolation: a user's own trained models and training store never leak into the tests."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_isolated = tempfile.mkdtemp(prefix="expertmix-test-home-")
atexit.register(shutil.rmtree, _isolated, ignore_errors=True)
os.environ["EXPERTMIX_MODELS"] = os.path.join(_isolated, "models")  # empty: the bundled models are used
os.environ.setdefault("EXPERTMIX_STORE", os.path.join(_isolated, "store.sqlite"))

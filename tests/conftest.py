"""Test isolation: a user's own trained models and training store never leak into the tests."""
from __future__ import annotations

import os
import tempfile

_isolated = tempfile.mkdtemp(prefix="expertmix-test-home-")
os.environ["EXPERTMIX_MODELS"] = os.path.join(_isolated, "models")  # empty: the bundled models are used
os.environ.setdefault("EXPERTMIX_STORE", os.path.join(_isolated, "store.sqlite"))

"""`examples/verify_v1a.py`, the verifier of `v1a` signatures that the README gives
receivers, loaded for the tests that check what the service signs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verify_v1a.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_verify_v1a", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


verifier = _load()
verify = verifier.verify
VerificationError: type[Exception] = verifier.VerificationError

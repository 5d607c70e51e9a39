"""The completion marker of a generated dataset (DR/.complete), shared by the generator (synthetic.py)
and the loader (dataloader.py), so the loader does not import the generator."""
import json
from pathlib import Path

FORMAT_VERSION = 1
MARKER = ".complete"  # written last by synthetic.py: every file is there


def read_marker(root):
    """The marker's contents (a dict: format, seed, preset, config), or None when absent, unreadable or
    of another format version."""
    try:
        info = json.loads((Path(root) / MARKER).read_text())
        return info if info.get("format") == FORMAT_VERSION else None
    except (OSError, ValueError, AttributeError):
        return None

"""Progress reporting for the long stages (simulation, labelling, training)."""

from __future__ import annotations

import contextlib

from tqdm.auto import tqdm


@contextlib.contextmanager
def progress(total: int, desc: str, enabled: bool):
    """Yield a callable ``update(n)`` advancing a tqdm bar (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    with tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True) as bar:
        yield bar.update

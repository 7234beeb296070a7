"""ipce: AIGC image quality assessment by image-prompt correspondence (Peng et al., CVPRW 2024).

ipce reports through the `ipce` logger tree (`logging.getLogger("ipce")`) and shows nothing on its own
from Python: configure logging to see it (the `ipce` command prints its INFO messages). Progress bars:
`ipce.utils.progress.set_progress(False)` hides them all."""
import logging

__version__ = "0.1.0"

logging.getLogger("ipce").addHandler(logging.NullHandler())


def load_scorer(*args, **kwargs):
    """See `ipce.api.load_scorer`: a scorer from checkpoint(s); `.score(images, prompts)` -> floats."""
    from ipce.api import load_scorer as _load_scorer

    return _load_scorer(*args, **kwargs)


__all__ = ["load_scorer", "__version__"]

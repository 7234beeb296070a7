"""ipce: AIGC image quality assessment by image-prompt correspondence (Peng et al., CVPRW 2024)."""
__version__ = "0.1.0"


def load_scorer(*args, **kwargs):
    """See `ipce.api.load_scorer`: a scorer from checkpoint(s); `.score(images, prompts)` -> floats."""
    from ipce.api import load_scorer as _load_scorer

    return _load_scorer(*args, **kwargs)


__all__ = ["load_scorer", "__version__"]

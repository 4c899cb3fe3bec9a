"""mediafm-jax: a MediaFM-style shot-level foundation model for long-form video."""

__version__ = "0.1.0"


def load(run_dir, step=None, layers="last"):
    """Restores a run's encoder for notebooks (see ``mediafm_jax.embed.load``)."""
    from mediafm_jax.embed import load as _load

    return _load(run_dir, step=step, layers=layers)

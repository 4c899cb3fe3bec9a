"""Readouts: which states make a shot's frozen embedding. Names only, importable without
JAX (the command line lists them); ``embed.Embedder`` computes them.

- ``last``: the last layer's output;
- ``mean``: the mean of every layer's output;
- ``last+input``: the last layer beside the shot's fused input vector (the shot itself
  and its context);
- ``+title`` (``last+title``, ``last+input+title``): every shot's row beside its whole
  title's summary, the mean of that readout over every shot of the title after stitching
  (a film longer than one window is summarized whole); for an isolated clip the encoder
  saw only the clip, so the summary is the clip's own mean.

The run's readout is chosen on validation titles (``probe.choose_readout``: ``mediafm
probe --choose-readout``, the demo, ``experiments/ablations.py``) and recorded in
``RUN/readout.json``; embed, probe and search use it by default, else ``last``.
"""

READOUTS = ("last", "mean", "last+input", "last+title", "last+input+title")
INPUT_PART = "+input"
TITLE_PART = "+title"

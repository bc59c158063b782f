"""amygdala-tl: concept readout vectors for a language model's residual stream."""

__version__ = "0.1.0"

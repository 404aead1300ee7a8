"""see-bench: compress the token-embedding table of causal LMs and measure the cost."""

__version__ = "0.1.0"

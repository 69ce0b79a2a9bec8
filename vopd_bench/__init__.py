"""vopd-bench: measure and close the regional-to-global perception gap of multimodal LLMs."""

__version__ = "0.1.0"

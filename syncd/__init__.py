"""syncd: sync secrets from external stores into Swarm, Kubernetes or files with versioned swaps."""

__version__ = "0.1.0"

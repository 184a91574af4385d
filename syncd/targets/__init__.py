"""Targets: where secrets land. One module per target, each implementing ``targets.base.Target``."""

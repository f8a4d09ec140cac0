"""Extra model kinds. Each module registers itself with :func:`grokking_llc.model.register_model`;
``build_model(kind, ...)`` imports ``grokking_llc.architectures.<kind>`` on first use."""

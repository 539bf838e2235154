"""National format adapters, one package per country."""

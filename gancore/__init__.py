"""Torch-free core of ganforge: bundle format and loader, sampling rules, filters, image encoding."""

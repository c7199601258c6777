"""Torch-free, NiceGUI-free core: the types, errors and the contract every backend implements."""

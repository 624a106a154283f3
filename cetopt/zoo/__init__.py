"""The model zoo: architectures and data that run offline."""

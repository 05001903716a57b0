"""Command-line interface: thin wrappers over each package's api."""

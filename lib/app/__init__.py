"""The application layer: the command line and the demo. Nothing imports it."""

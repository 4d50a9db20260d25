"""Generative / reconstruction pretexts: restore a masked or corrupted input."""

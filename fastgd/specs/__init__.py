"""Plain-Python descriptions of what to train, turned into integer codes and arrays."""

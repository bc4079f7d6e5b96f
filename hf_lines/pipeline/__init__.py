"""A run from inputs to an output folder: recipe, statistics passes, the streaming executor and the merger."""

"""What describes and ships an output: the model card, its metadata and plot, provenance, the Hub push."""

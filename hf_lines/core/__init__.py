"""What is true of any model, with no I/O: the schedule, layer maps, merge methods and the fused kernels."""

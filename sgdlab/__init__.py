"""sgdlab: the noise of SGD and the geometry of deep networks' loss landscapes."""
__version__ = "0.1.0"

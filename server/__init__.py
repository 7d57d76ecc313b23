"""dmlscope's application layer: HTTP API, command line, store and jobs over `models`."""
__version__ = "0.1.0"

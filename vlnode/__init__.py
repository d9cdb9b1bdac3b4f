"""vlnode: the application shell (settings and command line) around the node's packages."""

__version__ = "0.1.0"

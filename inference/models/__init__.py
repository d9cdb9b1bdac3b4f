"""Network definitions shared by the node (inference) and the training program."""

"""DICOM networking: the listener (C-ECHO, C-STORE), its policy, the spool, stable studies."""

"""DICOM networking: the listener (C-ECHO, C-STORE), its policy, the spool, study-stable detection."""

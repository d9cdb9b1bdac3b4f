"""The impression generator: image features conditioning a text decoder (issue 14)."""

"""One module per pipeline stage: read artifacts -> load weights -> compute -> write one artifact."""

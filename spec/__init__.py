"""Facts about the LTX-2 model family that every layer reads, with no MLX and no I/O beyond headers.

Model versions, latent geometry, official schedules and defaults, the checkpoint layout and the
exception taxonomy live here once; everything else imports them.
"""

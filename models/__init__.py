"""The MLX networks of LTX-2 and their weight loading."""

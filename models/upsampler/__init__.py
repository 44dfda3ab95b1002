"""upsampler"""

"""audio_vae"""

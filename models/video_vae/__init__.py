"""video_vae"""

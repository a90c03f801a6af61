"""modeltrust.chain"""

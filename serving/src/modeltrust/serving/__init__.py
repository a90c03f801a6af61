"""modeltrust.serving"""

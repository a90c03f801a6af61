"""modeltrust.cli"""

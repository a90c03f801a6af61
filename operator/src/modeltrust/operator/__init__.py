"""modeltrust.operator"""

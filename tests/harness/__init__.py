"""Helpers shared by the test suites: the cluster harness, model builders."""

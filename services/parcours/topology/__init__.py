"""Topology: the topic catalogue, the structure registry and kind policy, and applying them to a cluster."""

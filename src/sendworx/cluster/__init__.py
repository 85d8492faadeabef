"""Clustering: the nodes a manager has registered, and calls to them through their own API."""

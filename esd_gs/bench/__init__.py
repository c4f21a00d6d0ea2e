"""Benchmarks run by ``esd-gs bench``: ``janus``, SDS vs VSD vs ESD against mode collapse on a known answer."""

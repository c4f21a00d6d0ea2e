"""The offline synthetic prior: exact scores of a known image distribution, for runs and benchmarks without
Stable Diffusion (``esd-gs generate --prior synthetic`` and ``esd-gs bench janus``)."""

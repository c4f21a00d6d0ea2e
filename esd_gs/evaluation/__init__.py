"""Measuring results: ``janus`` scores turntable views against the synthetic prior's known answer."""

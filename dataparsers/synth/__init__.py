"""Generators of paired scenes whose truth is known exactly (`insideout-synth`)."""

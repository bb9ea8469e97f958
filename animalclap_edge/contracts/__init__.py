"""Contracts shared by the runtime, `training` and `export`.

Everything here is numpy/stdlib only, so the recorder can import it, and the
server packages import it instead of re-defining front-end constants, the
species catalogue, prompts, the trait schema or the bundle layout.
"""

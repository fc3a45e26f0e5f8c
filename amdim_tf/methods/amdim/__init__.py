"""AMDIM (Bachman, Hjelm & Buchwalter 2019): the encoder and the multiscale InfoNCE objective."""

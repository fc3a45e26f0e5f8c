"""CPC (van den Oord et al. 2018): the patch encoder with its context network and the InfoNCE over offsets."""

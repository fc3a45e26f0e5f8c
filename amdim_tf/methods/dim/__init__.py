"""Deep InfoMax (Hjelm et al. 2019): the DCGAN-like encoder and the local/global MI objective."""

"""The Clean-CC-CCII benchmark: loader, cache, k-fold study of DST and 3-D CNNs, tables."""

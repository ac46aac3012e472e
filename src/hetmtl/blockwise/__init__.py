"""MTL-HMB family: block-wise missing multi-source data (seed 002)."""

"""The fault matrix (``make faults``): faults under steady load, then a comparison with the
source tables (``mis verify``) until the pipeline has converged. See tests/faults/matrix.py."""

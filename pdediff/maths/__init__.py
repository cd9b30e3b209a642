"""The maths layer: noise schedules, SDEs, preconditioned denoisers, samplers, the likelihood
ODE, multigrid, regridding, guidance and the Gaussian/kriging/Gauss-Newton posteriors.

Plain functions of arrays and tensors; nothing here knows a problem, a file or a model.
"""

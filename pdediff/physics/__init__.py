"""The physics layer: the problems (:mod:`pdediff.physics.problems`, public as
``pdediff.problems``), the source and boundary laws (``pdediff.sources``), coefficient laws and
the error metrics. It imports only :mod:`pdediff.maths`.
"""

"""The tools layer: the long jobs and command lines built on the user API: training
(``train.py``), the demo (``make demo``), CLI plumbing and plotting.
"""

"""MNIST denoising experiments of the paper (Section 5.1, Appendix B.1-B.3).

``zero_gap``, ``pattern_ablation``, ``noise_robustness``, ``reconstructions``, ``interpret``
(Section 4.2) and ``deeper_nets`` (Section 4.3) are registered in :data:`convexdual.experiments.EXPERIMENTS`; :mod:`.common` holds the
shared data, training, solving and output helpers. See docs/mnist.md.
"""

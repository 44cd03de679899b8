"""lit_emergence: watch computational structure emerge in a learned particle simulator.

Reproduces and generalises *Emergence of Computational Structure in a Neural Network
Physics Simulator* (arXiv:2504.11830): a soft-sphere particle simulator, a transformer whose
attention passes information between particles, and Lightning callbacks that measure the
structure as it emerges.
"""

__version__ = "0.1.0"

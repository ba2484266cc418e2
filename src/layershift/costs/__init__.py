"""The cost model: each rule's time, memory and disk predicted from the config, the coefficients fitted on
measured runs, and a short CPU probe that scales them to the machine at hand. Imports ``core``, ``study``, ``data``
and ``models``."""

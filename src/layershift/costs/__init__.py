"""The cost model: each rule's time, memory and disk predicted from the config, and the coefficients fitted on
measured runs. Imports ``core``, ``study`` and ``models``."""

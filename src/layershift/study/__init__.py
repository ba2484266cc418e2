"""What a study is: its config schema (the one home of defaults) and every artifact path the workflow declares.
Imports only ``core``."""

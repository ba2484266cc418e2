"""What a study is: its config schema (the one home of defaults), the workflow's rules table, every artifact path
the workflow declares, and the bars its SAEs are held to. Imports only ``core``."""

"""What a study is: its config schema (the one home of defaults), the workflow's rules table and every artifact
path the workflow declares. Imports only ``core``."""

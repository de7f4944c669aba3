"""The CLI verbs, grouped by area; `tunesmith.cli` maps each verb name to its function here."""

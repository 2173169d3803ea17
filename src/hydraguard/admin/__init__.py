"""The admin surface: services shared by the admin API and the CLI, admin tokens and roles, the audit log."""
